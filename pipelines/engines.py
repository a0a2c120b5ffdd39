"""``quantize.engine: auto``, decided by measurement: on a model that both int8 engines can
quantize (the built-in archs), which one is faster *on this machine* depends on its CPU (AMX or
VNNI only; see ``bench/quant_engines.py``) and on the model's shapes, so the quantize stage times
them instead of assuming. The answer is remembered per architecture and machine
(:func:`decided_engine`), and the quantize stage and the search's trials share it: a trial of the
pipeline's configuration ships the engine the pipeline ships."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch._dynamo
from torch import nn

from pipelines.chain.quantize import INT8_MODELS  # a fresh answer's int8 models: never recorded
from pipelines.compression.quantize import quantize
from pipelines.core.config import Params
from pipelines.core.cpu import isa_summary
from pipelines.core.errors import error_line
from pipelines.core.io import cache_dir, read_json, write_json
from pipelines.measurement.compile import CompileSettings, compile_for, warm_compiler
from pipelines.measurement.timing import NoiseLimits, measure, set_threads
from pipelines.training.context import Context

# The tie rule of `auto`: PT2E must be shown faster (the 95% interval of p50(pt2e)/p50(eager), from
# the per-round ratios of the side-by-side measurement, lies below 1); a tie keeps eager, which
# needs no compile.
TIE_RULE = ("pt2e is chosen only when the 95% interval of p50(pt2e)/p50(eager), timed side by side, lies below 1; "
            "otherwise (tied, or eager faster, or a disturbed measurement) eager, which needs no compile")


def architecture_signature(params: Params) -> str:
    """What ``quantize.engine: auto``'s answer depends on besides the machine: the student's
    architecture as declared (arch, widths, depth: a pruned copy keeps its layer types and
    proportions), the int8 granularity and the timing setup (batch size, threads)."""
    s, q, b = params.student, params.quantize, params.benchmark
    parts = [s.arch, s.channels, s.depth, s.hidden, q.per_channel, b.batch_size, b.num_threads]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12]


ENGINE_CACHE = "engine_choice.json"  # under pipelines.core.io.cache_dir()


def _cache_key(signature: str) -> str:
    return f"{signature} {isa_summary()} torch-{torch.__version__}"


def _recorded(path: Path) -> dict[str, Any]:
    """The decisions recorded in ``path``; empty when there is none or it does not parse (a
    truncated file from another tool: measured again and rewritten)."""
    try:
        known = read_json(path) if path.exists() else {}
    except ValueError:
        return {}
    return known if isinstance(known, dict) else {}


def decided_engine(ctx: Context, model: nn.Module, cache: Path | None = None,
                   measure: Callable[[Context, nn.Module], dict[str, Any]] | None = None) -> dict[str, Any]:
    """``quantize.engine: auto``'s answer for this model's :func:`architecture_signature` on this
    machine: the one recorded in ``cache`` (default ``<cache_dir>/engine_choice.json``, keyed by
    signature, CPU ISA and torch version) when the quantize stage or a search trial decided it
    before, else measured (:func:`measure_engines`) and recorded, unless the measurement was
    disturbed (``noisy``: decided again next time). On a close call two measurements can go
    either way (measured: the quantize stage chose pt2e at a ratio of 0.83 [0.67, 0.99], the
    search's trial of the same configuration eager, and the trial's speedup was 1.6x off the
    pipeline's): decided once, both ship the same engine. Delete the file to measure again."""
    path = cache or cache_dir() / ENGINE_CACHE
    key = _cache_key(architecture_signature(ctx.params))
    known = _recorded(path)
    if isinstance(known.get(key), dict) and known[key].get("engine") in ("eager", "pt2e"):
        return {**known[key], "cached": str(path)}
    choice = (measure or measure_engines)(ctx, model)
    record = {k: v for k, v in choice.items() if k != INT8_MODELS}
    if not choice.get("noisy"):
        try:
            write_json(path, {**_recorded(path), key: record})  # another process may have added its own meanwhile
        except OSError as exc:  # a read-only cache: decided, used, measured again next time
            print(f"quantize: engine decision not recorded ({error_line(exc)}); set COMPRESSION_CACHE_DIR")
    return choice


def measure_engines(ctx: Context, model: nn.Module) -> dict[str, Any]:
    """``quantize.engine: auto`` on a model both engines can quantize: static PTQ with each engine
    on the calibration batches, PT2E compiled as ``compile_benchmark`` compiles it, both timed
    side by side at ``benchmark.batch_size``. Returns the p50s, the engine that wins on this
    machine (PT2E only when shown faster, :data:`TIE_RULE`) and why, and both int8 models
    (:data:`INT8_MODELS`). QAT picks its engine from these PTQ stand-ins: latency depends on the
    graph, not on the weights' values. :func:`warm_compiler` first, though this compile's time is
    not reported: it runs Inductor's vector-ISA probe in the user's cache, where it is kept; left to
    the PT2E compile, the probe ran in that compile's cold cache dir and cost 9.5 s every time
    (measured in the quantize stage, cProfile)."""
    bench = ctx.params.benchmark
    set_threads(bench.num_threads)
    proxy = ctx.params.quantize.model_copy(update={"method": "static"})
    x = ctx.example(bench.batch_size)
    settings = CompileSettings.of(bench)
    warm_compiler(settings=settings)
    eager_int8 = quantize(model, proxy, ctx, engine="eager")
    pt2e_int8 = quantize(model, proxy, ctx, engine="pt2e")
    pt2e = compile_for(pt2e_int8, "compile-default", x, settings=settings)
    signature = architecture_signature(ctx.params)
    if pt2e.error:
        return {"engine": "eager", "why": f"pt2e did not compile: {pt2e.error}", "cpu_isa": isa_summary(),
                "signature": signature, INT8_MODELS: {"eager": eager_int8}}
    timed = measure({"eager": lambda: eager_int8(x), "pt2e": lambda: pt2e.fn(x)}, bench.warmup, bench.iters,
                    NoiseLimits.of(bench))
    p50 = {k: v.p50_ms for k, v in timed.timings.items()}
    ratio = timed.timings["pt2e"].ratio(timed.timings["eager"])
    engine = "pt2e" if ratio.a_faster() and not timed.noisy else "eager"
    why = (f"measured at batch {bench.batch_size}: pt2e {p50['pt2e']:.3f} ms vs eager {p50['eager']:.3f} ms, "
           f"{ratio.describe('pt2e', 'eager')} ({TIE_RULE})"
           + ("; the machine was busy (noisy): kept eager" if timed.noisy else ""))
    torch._dynamo.reset()
    return {"engine": engine, "why": why, "p50_ms": p50, "ratio_pt2e_over_eager": ratio.ratio,
            "ratio_ci_low": ratio.low, "ratio_ci_high": ratio.high, "noisy": timed.noisy, "cpu_isa": isa_summary(),
            "signature": signature, INT8_MODELS: {"eager": eager_int8, "pt2e": pt2e_int8}}
