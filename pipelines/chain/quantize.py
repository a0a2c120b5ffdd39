"""Stage quantize as a function: the int8 copy of the pruned model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from pipelines.chain.accuracy_control import check_fallback, control, quantize_warnings, range_fix
from pipelines.chain.metrics import model_metrics
from pipelines.compression.quantize import REPORT_KEY, fp32_layers, quantize, resolve_engine
from pipelines.compression.quantize.eager import activation_bits
from pipelines.compression.quantize.pt2e import FLOAT_GRAPH_KEY
from pipelines.measurement.size import size_metrics
from pipelines.training.context import Context

EngineChooser = Callable[[Context, nn.Module], dict[str, Any]]
# an EngineChooser's answer may carry, under this key, the static int8 models it measured
# ({engine: model}, quantized from this model with this config): the chosen one is taken as is
INT8_MODELS = "int8_models"


def quantize_model(ctx: Context, model: nn.Module, choose: EngineChooser | None = None,
                   stage: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """int8 copy of ``model`` per ``params.quantize`` (``method: none`` returns it unchanged).
    ``choose`` (the quantize stage and the search pass :func:`pipelines.engines.decided_engine`): decides
    ``engine: auto`` for static/QAT on a model both engines take, instead of the rule of
    :func:`~pipelines.compression.quantize.resolve_engine`; its answer (``engine``, ``why``, ...)
    is kept in the metrics as ``engine_choice``. ``stage`` (the quantize stage): rank the layers by
    sensitivity (``quantize.sensitivity``) and time the accuracy budget's reverts; a search trial
    skips both (its budget, if any, still reverts layers in sensitivity order)."""
    cfg = ctx.params.quantize
    check_fallback(ctx)
    model = model.cpu().eval()
    engine = resolve_engine(cfg, model)  # what `auto` means for this model
    choice = None
    timed: dict[str, nn.Module] = {}
    if choose is not None and cfg.engine == "auto" and cfg.method in ("static", "qat") and engine == "eager":
        choice = dict(choose(ctx, model))
        timed = choice.pop(INT8_MODELS, None) or {}  # a fresh measurement's static int8 models
        engine = choice["engine"]
    source, out, equalize = range_fix(ctx, model, engine)  # quantize.equalize / bias_correction
    if out is None and source is model and cfg.method == "static" and engine in timed:
        out = timed[engine]  # the engine decision quantized exactly this (same config, same calibration batches)
    out = out if out is not None else quantize(model, cfg, ctx, engine=engine)
    out, engine, accuracy = control(ctx, source, out, engine, timed=stage, rank=stage,
                                    reference=model)  # sensitivity, budget: drops against the model as given
    accuracy.update(equalize)
    getattr(out, "meta", {}).pop(FLOAT_GRAPH_KEY, None)  # the numeric debugger's float copy: not kept
    fp32 = size_metrics(model)
    metrics = model_metrics(ctx, out)
    metrics["engine"] = engine
    if engine == "eager" and cfg.method == "static":
        metrics["eager_activation_bits"] = activation_bits(cfg.eager_activation_bits)
    if choice:
        metrics["engine_choice"] = choice
    metrics["accuracy_fp32"] = ctx.accuracy(model)
    metrics["size_ratio_vs_fp32"] = metrics["size_mb"] / fp32["size_mb"]
    if cfg.method != "none":
        metrics["fp32_layers"] = fp32_layers(out)  # conv/linear/add that stayed fp32 (empty: all int8)
        metrics["num_fp32_layers"] = len(metrics["fp32_layers"])
        report = getattr(out, "meta", {}).get(REPORT_KEY) if engine == "pt2e" else None
        if report:
            metrics["pt2e_export"] = report["export"]
            metrics["pt2e_skipped_patterns"] = report["skipped_patterns"]
            metrics["pt2e_convs_as_linear"] = report.get("convs_as_linear", [])
    metrics.update(accuracy)
    if cfg.method != "none":
        warnings = quantize_warnings(ctx, out, accuracy.get("val_drop", {}).get("val_drop_pp"))
        for line in warnings:
            print(f"quantize: {line}")
        if warnings:
            metrics["warning"] = "; ".join(warnings)
    return out, metrics
