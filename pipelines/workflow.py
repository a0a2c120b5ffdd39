"""The compression chain as functions on models: what each DVC stage does, minus file I/O and
tracking. The stages and every Optuna trial call exactly these (no second implementation)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from pipelines.compression import distill as kd
from pipelines.compression import prune as pr
from pipelines.compression.quantize import REPORT_KEY, fp32_layers, quantize, resolve_engine
from pipelines.data import DataBundle
from pipelines.measurement.size import size_metrics
from pipelines.training.context import Context, train
from pipelines.training.loop import History, cross_entropy, predict

__all__ = ["Context", "DistillOutcome", "PruneOutcome", "data_record", "distill_student", "model_metrics",
           "prune_student", "quantize_model", "train_teacher"]


def model_metrics(ctx: Context, model: nn.Module) -> dict[str, float]:
    return {"accuracy": ctx.accuracy(model), **size_metrics(model)}


# --- train_baseline ---------------------------------------------------------------------------

def train_teacher(ctx: Context) -> tuple[nn.Module, History]:
    """The teacher trained for ``train.epochs``; with 0 epochs, ``teacher.weights`` as given and a
    history of one row (epoch 0: their loss on the train split, their val accuracy)."""
    model = ctx.new_model("teacher")
    if ctx.params.train.epochs == 0:
        model.to(ctx.device).eval()
        loss = cross_entropy(predict(model, ctx.loader("train"), ctx.device), ctx.data.train.tensors[1]).item()
        val = ctx.accuracy(model, "val")
        return model.cpu().eval(), History([{"epoch": 0, "train_loss": loss, "val_accuracy": val}], val, 0)
    history = train(ctx, model, ctx.params.train.epochs, ctx.params.train.lr, "teacher")
    return model.cpu().eval(), history


def data_record(data: DataBundle) -> dict[str, Any]:
    """How the images were prepared, for the metrics file: enough to feed the model the same
    inputs in plain PyTorch (``transforms.Normalize(mean, std)`` on 0..1 pixels)."""
    out: dict[str, Any] = {"data_mean": list(data.mean), "data_std": list(data.std),
                           "image_size": data.image_size, "in_channels": data.in_channels,
                           "num_classes": data.num_classes}
    if data.classes:
        out["classes"] = list(data.classes)
    return out


# --- distill ----------------------------------------------------------------------------------

@dataclass
class DistillOutcome:
    student: nn.Module
    history: History
    metrics: dict[str, float] = field(default_factory=dict)


def distill_student(ctx: Context, teacher: nn.Module, epochs: int | None = None,
                    compare_without_kd: bool | None = None, cached_logits: Any = None) -> DistillOutcome:
    """Train the student against the frozen teacher; optionally also without KD for comparison.
    ``cached_logits`` may pass a precomputed :func:`distill.with_teacher_logits` dataset."""
    cfg = ctx.params.distill
    epochs = epochs or cfg.epochs
    teacher = teacher.to(ctx.device).eval()
    loss = kd.DistillationLoss(teacher, cfg.alpha, cfg.temperature)
    train_set = None
    if cfg.cache_teacher_logits:
        train_set = cached_logits if cached_logits is not None else kd.with_teacher_logits(
            teacher, ctx.data.train, ctx.device)
    student = ctx.new_model("student")
    history = train(ctx, student, epochs, cfg.lr, "distill", loss_fn=loss, train_set=train_set)
    student = student.cpu().eval()
    metrics = {"accuracy": ctx.accuracy(student), "val_accuracy": history.best_val_accuracy,
               "epoch_time_s": history.epoch_time_s, **size_metrics(student)}
    if compare_without_kd if compare_without_kd is not None else cfg.compare_without_kd:
        plain = ctx.new_model("student")
        plain_history = train(ctx, plain, epochs, cfg.lr, "student (no KD)")
        metrics["accuracy_no_kd"] = ctx.accuracy(plain.cpu().eval())
        metrics["kd_gain_pp"] = 100 * (metrics["accuracy"] - metrics["accuracy_no_kd"])
        metrics["epoch_time_no_kd_s"] = plain_history.epoch_time_s
        metrics["epoch_time_ratio_kd_vs_plain"] = history.epoch_time_s / plain_history.epoch_time_s
    return DistillOutcome(student, history, metrics)


# --- prune ------------------------------------------------------------------------------------

@dataclass
class PruneOutcome:
    model: nn.Module
    steps: list[dict[str, float]]
    table: list[dict[str, Any]]
    metrics: dict[str, float]


def prune_student(ctx: Context, model: nn.Module, finetune_epochs: int | None = None) -> PruneOutcome:
    cfg = ctx.params.prune
    epochs = cfg.finetune_epochs if finetune_epochs is None else finetune_epochs
    before = size_metrics(model)

    def finetune(m: nn.Module, step: int) -> None:
        if epochs > 0:
            train(ctx, m, epochs, cfg.lr, f"prune step {step}/{cfg.steps} fine-tune")
        m.cpu().eval()

    result = pr.prune_model(model, cfg, ctx.example(2), finetune, ctx.accuracy)
    metrics = model_metrics(ctx, result.model)
    metrics["accuracy_before_finetune"] = result.steps[-1]["accuracy_after_prune"]
    metrics["params_ratio_vs_student"] = metrics["num_params"] / before["num_params"]
    return PruneOutcome(result.model.cpu().eval(), result.steps, pr.sparsity_table(result.model), metrics)


# --- quantize ---------------------------------------------------------------------------------

EngineChooser = Callable[[Context, nn.Module], dict[str, Any]]


def quantize_model(ctx: Context, model: nn.Module, choose: EngineChooser | None = None
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """int8 copy of ``model`` per ``params.quantize`` (``method: none`` returns it unchanged).
    ``choose`` (the quantize stage passes :func:`pipelines.engines.measure_engines`): decides
    ``engine: auto`` for static/QAT on a model both engines take, instead of the rule of
    :func:`~pipelines.compression.quantize.resolve_engine`; its answer (``engine``, ``why``, ...)
    is kept in the metrics as ``engine_choice``."""
    cfg = ctx.params.quantize
    model = model.cpu().eval()
    engine = resolve_engine(cfg, model)  # what `auto` means for this model
    choice = None
    if choose is not None and cfg.engine == "auto" and cfg.method in ("static", "qat") and engine == "eager":
        choice = choose(ctx, model)
        engine = choice["engine"]
    out = quantize(model, cfg, ctx, engine=engine)
    fp32 = size_metrics(model)
    metrics = model_metrics(ctx, out)
    metrics["engine"] = engine
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
    return out, metrics
