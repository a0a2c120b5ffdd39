"""Accuracy-aware static int8 for the quantize stage: the per-layer sensitivity ranking, the
accuracy budget (layers back to fp32/bf16, most sensitive first) with the latency of every revert
timed in one loop beside the all-int8 and the fp32 model, and the collapse warning.

Layers can be kept out of int8 one at a time only in the PT2E graph (eager torch.ao quantizes each
layer's output inside the layer), so a revert on a model the stage quantized with the eager engine
switches it to PT2E (``engine`` and ``engine_why`` in the metrics say so).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipelines.compression.quantize import pt2e, quantize
from pipelines.compression.quantize.budget import BudgetResult, Candidate, candidate, fit_budget
from pipelines.compression.quantize.bias_correction import corrected
from pipelines.compression.quantize.equalize import equalized
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
    """``quantize.equalize`` (static int8): cross-layer equalization tried before any revert.
    Both the plain and the equalized model are quantized and validated, so the metrics say what
    it bought (``equalize_val_drop``); ``cle`` keeps the equalized one, ``auto`` only when its val
    drop is lower. Returns the float model to go on with, its int8 model (None: not quantized
    here) and the metrics."""
    float_model, int8, info = _equalize(ctx, model, engine)
    if ctx.params.quantize.method == "static" and ctx.params.quantize.bias_correction != "none":
        float_model, int8, bc = _bias_correct(ctx, model, float_model, int8, engine)
        info.update(bc)
    return float_model, int8, info


def _bias_correct(ctx: Context, original: nn.Module, model: nn.Module, int8: nn.Module | None,
                  engine: str) -> tuple[nn.Module, nn.Module | None, dict[str, Any]]:
    """``quantize.bias_correction`` on the model :func:`_equalize` chose: both quantized and
    validated against the ``original`` fp32 model (``bias_correction_val_drop``); ``on`` keeps the
    corrected one, ``auto`` only when its drop is lower."""
    cfg = ctx.params.quantize
    fixed, sizes = corrected(model, ctx.calibration_batches(), cfg.per_channel)
    info: dict[str, Any] = {"bias_correction": cfg.bias_correction, "bias_correction_layers": sizes}
    if not sizes:
        info.update(bias_correction_applied=False, bias_correction_why="no layer to correct (or no fuse_model to fold with)")
        return model, int8, info
    fp32_val = ctx.correct(original, "val")
    tried = {}
    for name, float_model, q in (("none", model, int8), ("on", fixed, None)):
        q = q if q is not None else quantize(float_model, cfg, ctx, engine=engine)
        tried[name] = (float_model, candidate(q, ctx.correct(q, "val"), fp32_val))
    apply = cfg.bias_correction == "on" or tried["on"][1].drop_pp < tried["none"][1].drop_pp
    info.update(bias_correction_applied=apply,
                bias_correction_val_drop={k: c.summary() for k, (_, c) in tried.items()})
    float_model, chosen = tried["on" if apply else "none"]
    return float_model, chosen.model, info


def _equalize(ctx: Context, model: nn.Module, engine: str) -> tuple[nn.Module, nn.Module | None, dict[str, Any]]:
    cfg = ctx.params.quantize
    if cfg.method != "static" or cfg.equalize == "none":
        return model, None, {}
    eq, found = equalized(model)
    info: dict[str, Any] = {"equalize": cfg.equalize, "equalize_pairs": [" -> ".join(p) for p in found]}
    if not found:
        info.update(equalize_applied=False, equalize_why="no equalizable layer pair (or no fuse_model to fold with)")
        return model, None, info
    fp32_val = ctx.correct(model, "val")
    tried = {}
    for name, float_model in (("none", model), ("cle", eq)):
        int8 = quantize(float_model, cfg, ctx, engine=engine)
        tried[name] = (float_model, candidate(int8, ctx.correct(int8, "val"), fp32_val))
    apply = cfg.equalize == "cle" or tried["cle"][1].drop_pp < tried["none"][1].drop_pp
    info.update(equalize_applied=apply, equalize_val_drop={k: c.summary() for k, (_, c) in tried.items()})
    float_model, chosen = tried["cle" if apply else "none"]
    return float_model, chosen.model, info


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
