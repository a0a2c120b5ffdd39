"""Two models measured together, so that a decision between them does not compare numbers from
runs made minutes or days apart on a drifting machine: both evaluated on the same images (per-image
outcomes, for a paired comparison) and timed in one measurement of rotating blocks (a per-round ratio)."""

from __future__ import annotations

import torch
from torch import nn

from pipelines.core.decision import SideBySide
from pipelines.core.errors import error_line
from pipelines.measurement.compile import CompileSettings, compile_for
from pipelines.measurement.runtimes import parse_runtime
from pipelines.measurement.timing import NoiseLimits, measure, set_threads
from pipelines.training.context import Context


def side_by_side(ctx: Context, new: nn.Module, old: nn.Module, runtime: str = "eager") -> SideBySide:
    """``new`` and ``old`` on the test split (per-image outcomes) and timed in one loop at
    ``benchmark.batch_size`` on ``runtime`` (a PyTorch runtime; a deploy target is timed on eager
    instead, said in ``note``). When either cannot be built or run, ``ratio`` is None and
    ``note`` says why."""
    cfg = ctx.params.benchmark
    new_correct = tuple(ctx.correct(new, "test").tolist())
    old_correct = tuple(ctx.correct(old, "test").tolist())
    note = ""
    if parse_runtime(runtime).deploy:
        note, runtime = f"{runtime} is a deploy target: both timed on PyTorch eager", "eager"
    set_threads(cfg.num_threads)
    x = ctx.example(cfg.batch_size)
    settings = CompileSettings.of(cfg)
    try:
        built = {name: compile_for(model, runtime, x, settings=settings) for name, model in
                 (("new", new), ("old", old))}
        failed = {name: b.error or b.skipped for name, b in built.items() if b.error or b.skipped}
        if failed:
            return SideBySide(new_correct, old_correct, None, f"not timed on {runtime}: {failed}")
        with torch.inference_mode():
            timed = measure({name: (lambda b=b: b.fn(x)) for name, b in built.items()}, cfg.warmup, cfg.iters,
                            NoiseLimits.of(cfg))
    except Exception as exc:  # noqa: BLE001 - an old model that no longer runs is a note, not a crash
        return SideBySide(new_correct, old_correct, None, f"not timed: {error_line(exc)}")
    if timed.noisy:
        note = "; ".join(n for n in (note, f"timing disturbed ({timed.disturbance.describe()})") if n)
    return SideBySide(new_correct, old_correct, timed.timings["new"].ratio(timed.timings["old"]), note)
