"""Inductor settings every compiled variant is built with. ``benchmark.inductor`` (the schema)
refuses them and :mod:`pipelines.measurement.compile` applies them: one table for both."""

from __future__ import annotations

from typing import Literal

# benchmark.cpp_wrapper, see pipelines.measurement.compile
CppWrapper = Literal["auto", "always", "never"]
# benchmark.compiled_call, see pipelines.measurement.direct_call
CompiledCall = Literal["direct", "dynamo"]

FIXED_INDUCTOR_SETTINGS = {
    # weights become constants: conv/linear weights prepacked, PT2E dq -> conv -> q fused into int8 kernels
    "freezing": True,
    # compile_time_s is the cold cost a user pays: no on-disk graph/autotune cache hits
    "fx_graph_cache": False, "autotune_local_cache": False,
    # max-autotune's per-kernel tables go to stderr; the rows keep what matters
    "autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False,
}
