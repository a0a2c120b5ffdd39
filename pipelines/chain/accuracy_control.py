"""Accuracy-aware static int8 for the quantize stage: the per-layer sensitivity ranking, the
accuracy budget (layers back to fp32/bf16, most sensitive first) with the latency of every revert
timed in one loop beside the all-int8 and the fp32 model, and the collapse warning.

Layers can be kept out of int8 one at a time only in the PT2E graph (eager torch.ao quantizes each
layer's output inside the layer), so a revert on a model the stage quantized with the eager engine
switches it to PT2E (``engine`` and ``engine_why`` in the metrics say so).
"""

from __future__ import annotations

import functools

from typing import Any

import torch
from torch import nn

from pipelines.compression.quantize import pt2e, quantize
from pipelines.compression.quantize.budget import BudgetResult, Candidate, candidate, fit_budget
from pipelines.compression.quantize.range_fixes import equalize
from pipelines.compression.quantize.bias_correction import corrected
from pipelines.compression.quantize.sensitivity import deltas, sensitivity
from pipelines.compression.quantize.simulate import Simulated
from pipelines.core.collapse import DEFAULT_MAX_DROP_PP, collapse_warnings
from pipelines.core.cpu import bf16_missing
from pipelines.core.errors import QuantizeError
from pipelines.core.stats import Accuracy
from pipelines.measurement.compile import CompileSettings, compile_for, warm_compiler
from pipelines.measurement.timing import NoiseLimits, measure, set_threads
from pipelines.training.context import Context


def check_fallback(ctx: Context) -> None:
    """``quantize.fallback: bf16`` on a CPU without native bf16: one line, before any compute."""
    cfg = ctx.params.quantize
    if cfg.fallback == "bf16" and cfg.max_accuracy_drop is not None and (why := bf16_missing()):
        raise QuantizeError(f"quantize.fallback: bf16 refused: {why}; use quantize.fallback: fp32")


def range_fix(ctx: Context, model: nn.Module, engine: str) -> tuple[nn.Module, nn.Module | None, dict[str, Any]]:
    """The range fixes tried before any revert (static int8): ``quantize.equalize`` (cross-layer
    equalization, SmoothQuant-style migration, or ``auto``: both), then
    ``quantize.bias_correction`` on the model equalization chose. For each, the model before and
    after the fix are quantized and validated against ``model`` (fp32), so the metrics say what it
    bought (``equalize_val_drop``, ``bias_correction_val_drop``); ``cle`` / ``smoothquant`` / ``on``
    keep the fixed one, ``auto`` the one with the lowest val drop, the model as it was unless a fix
    lowers it. Returns the float model to go on with, its int8 model (None: not quantized here)
    and the metrics."""
    cfg = ctx.params.quantize
    current, int8, info = model, None, {}
    if cfg.method != "static":
        return current, int8, info
    fp32_val = functools.cache(lambda: ctx.correct(model, "val"))
    batches = functools.cache(ctx.calibration_batches)
    if cfg.equalize != "none":
        methods = ("cle", "smoothquant") if cfg.equalize == "auto" else (cfg.equalize,)
        fixes, found = [], []
        for method in methods:
            fixed, found = equalize(method, model, cfg, batches())
            if found:
                fixes.append((method, fixed))
        info.update(equalize=cfg.equalize, equalize_pairs=[" -> ".join(p) for p in found])
        if not fixes:
            info.update(equalize_applied=False, equalize_why="no equalizable layer pair (or no fuse_model to fold with)")
        else:
            current, int8, chosen, drops = _keep_best(ctx, engine, fp32_val(), (current, int8), fixes,
                                                      cfg.equalize != "auto")
            info.update(equalize_applied=chosen is not None, equalize_method=chosen or "none",
                        equalize_val_drop=drops)
    if cfg.bias_correction != "none":
        fixed, sizes = corrected(current, batches(), cfg.per_channel)
        info.update(bias_correction=cfg.bias_correction, bias_correction_layers=sizes)
        if not sizes:
            info.update(bias_correction_applied=False,
                        bias_correction_why="no layer to correct (or no fuse_model to fold with)")
        else:
            current, int8, chosen, drops = _keep_best(ctx, engine, fp32_val(), (current, int8), [("on", fixed)],
                                                      cfg.bias_correction == "on")
            info.update(bias_correction_applied=chosen is not None, bias_correction_val_drop=drops)
    return current, int8, info


def _keep_best(ctx: Context, engine: str, fp32_val: torch.Tensor, plain: tuple[nn.Module, nn.Module | None],
               fixes: list[tuple[str, nn.Module]], always: bool
               ) -> tuple[nn.Module, nn.Module, str | None, dict[str, dict[str, Any]]]:
    """Range fixes side by side: the ``plain`` float model (with its int8 model, quantized here
    when None) and each fixed one (``(name, float model)``), each quantized and its val drop
    measured against ``fp32_val``. Kept: the fix with the lowest drop, when ``always`` or when it
    is lower than the plain model's. Returns the kept float model, its int8 model, the fix kept
    (None: none) and every drop by name."""
    tried = {}
    for name, float_model, int8 in (("none", *plain), *((n, m, None) for n, m in fixes)):
        int8 = int8 if int8 is not None else quantize(float_model, ctx.params.quantize, ctx, engine=engine)
        tried[name] = (float_model, candidate(int8, ctx.correct(int8, "val"), fp32_val))
    best = min((n for n, _ in fixes), key=lambda n: tried[n][1].drop_pp)
    chosen = best if always or tried[best][1].drop_pp < tried["none"][1].drop_pp else None
    float_model, kept = tried[chosen or "none"]
    return float_model, kept.model, chosen, {k: c.summary() for k, (_, c) in tried.items()}


def time_reverts(ctx: Context, fp32: nn.Module, start: Candidate, accepted: list[Candidate]) -> dict[str, Any]:
    """fp32, the all-int8 model and every accepted revert, compiled as compile_benchmark compiles
    them and timed in one side-by-side measurement (:func:`pipelines.measurement.timing.measure`):
    each revert's p50 and its ratio to the all-int8 model, and every speedup over fp32."""
    bench = ctx.params.benchmark
    set_threads(bench.num_threads)
    x = ctx.example(bench.batch_size)
    settings = CompileSettings.of(bench)
    warm_compiler(settings=settings)
    fns: dict[str, Any] = {}
    for name, model in (("fp32", fp32), ("int8", start.model), *((f"revert{i + 1}", c.model)
                                                                  for i, c in enumerate(accepted))):
        compiled = compile_for(model, "compile-default", x, settings=settings)
        fn = compiled.fn if not compiled.error else model
        fns[name] = (lambda f: lambda: f(x))(fn)
    timed = measure(fns, bench.warmup, bench.iters, NoiseLimits.of(bench))
    out: dict[str, Any] = {"noisy": timed.noisy, "p50_ms": {k: v.p50_ms for k, v in timed.timings.items()}}
    base = timed.timings["int8"]
    for name, lat in timed.timings.items():
        speed = timed.timings["fp32"].ratio(lat)
        out.setdefault("speedup_vs_fp32", {})[name] = {"ratio": speed.ratio, "ci_low": speed.low, "ci_high": speed.high}
        if name.startswith("revert"):
            r = lat.ratio(base)
            out.setdefault("p50_over_all_int8", {})[name] = {"ratio": r.ratio, "ci_low": r.low, "ci_high": r.high}
    torch._dynamo.reset()
    return out


def _budget(ctx: Context, model: nn.Module, sim: Simulated, ranking: list[dict[str, Any]],
            fp32_val: torch.Tensor, start: Candidate, timed: bool) -> tuple[BudgetResult, dict[str, Any]]:
    cfg = ctx.params.quantize
    batches = ctx.calibration_batches()
    correct = (lambda m: ctx.correct(m, "val"))

    def build(kept: tuple[str, ...]) -> nn.Module:
        return pt2e.quantize_static(model, batches, cfg, ctx.example(2), keep=kept, keep_dtype=cfg.fallback)

    def rerank(kept: frozenset[str], rest: list[str]) -> list[str]:
        with sim.keeping(kept) as current:
            base = correct(current)
        gained = deltas(sim, correct, base, rest, kept)
        return sorted(rest, key=lambda layer: -gained[layer])

    result = fit_budget(start, fp32_val, [r["layer"] for r in ranking], cfg.max_accuracy_drop,
                        cfg.max_fallback_layers, build, correct, rerank)
    timing = time_reverts(ctx, model, start, result.accepted) if result.accepted and timed else {}
    return result, timing


def control(ctx: Context, model: nn.Module, out: nn.Module, engine: str,
            timed: bool = True, rank: bool = True, reference: nn.Module | None = None
            ) -> tuple[nn.Module, str, dict[str, Any]]:
    """Sensitivity (``quantize.sensitivity``) and the budget (``quantize.max_accuracy_drop``) for a
    static int8 ``out`` of ``model``; returns the model to keep, its engine and the metrics.
    ``timed``: time the reverts (:func:`time_reverts`; compiles each, tens of seconds); ``rank``:
    rank the layers even without a budget (the quantize stage; a search trial does not);
    ``reference``: the fp32 model drops are measured against, when ``model`` is not it (bias
    correction changed ``model``'s biases)."""
    cfg = ctx.params.quantize
    metrics: dict[str, Any] = {}
    if cfg.method != "static" or (not (cfg.sensitivity and rank) and cfg.max_accuracy_drop is None):
        return out, engine, metrics
    correct = (lambda m: ctx.correct(m, "val"))
    fp32_val, int8_val = correct(reference if reference is not None else model), correct(out)
    start = candidate(out, int8_val, fp32_val)
    metrics["val_drop"] = start.summary()
    sim = Simulated(model, cfg, engine, ctx.calibration_batches())
    ranking = sensitivity(model, out, sim, correct, ctx.data.val.tensors[0][:ctx.params.data.batch_size])
    getattr(out, "meta", {}).pop(pt2e.FLOAT_GRAPH_KEY, None)  # the debugger's float copy: not kept
    if cfg.sensitivity and rank:
        metrics["sensitivity"] = ranking
    if cfg.max_accuracy_drop is not None and start.drop_pp > cfg.max_accuracy_drop:
        result, timing = _budget(ctx, model, sim, ranking, fp32_val, start, timed)
        metrics.update(result.metrics(cfg.max_accuracy_drop), budget_latency=timing)
        print(result.line(cfg.max_accuracy_drop))
        if result.best.kept:
            out = result.best.model
            if engine != "pt2e":
                metrics["engine_why"] = (f"accuracy budget: {engine} int8 cannot keep single layers in "
                                         f"{cfg.fallback}; the reverted model is PT2E")
            engine = "pt2e"
        metrics["val_drop"] = result.best.summary()
    elif cfg.max_accuracy_drop is not None:
        metrics.update(budget_met=True, max_accuracy_drop=cfg.max_accuracy_drop, fallback_layers=[],
                       num_fallback_layers=0)
    return out, engine, metrics


def quantize_warnings(ctx: Context, out: nn.Module, val_drop_pp: float | None) -> list[str]:
    """The collapse warnings of the quantized model: test accuracy at chance, or a val drop over
    the budget (2 pp without one)."""
    right = ctx.correct(out, "test")
    limit = ctx.params.quantize.max_accuracy_drop
    return collapse_warnings("quantized", Accuracy(int(right.sum()), len(right)), ctx.data.num_classes,
                             val_drop_pp, DEFAULT_MAX_DROP_PP if limit is None else limit)
