"""Stage distill as a function: the student trained against the frozen teacher."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from pipelines.compression import distill as kd
from pipelines.measurement.size import size_metrics
from pipelines.training.context import Context, train
from pipelines.training.loop import History


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
    cached = kd.caches_teacher_logits(cfg.cache_teacher_logits, ctx.params.data.augment, ctx.data.train)
    if cached:
        train_set = cached_logits if cached_logits is not None else kd.with_teacher_logits(
            teacher, ctx.data.train, ctx.device, workers=ctx.data.workers)
    student = ctx.new_model("student")
    history = train(ctx, student, epochs, cfg.lr, "distill", loss_fn=loss, train_set=train_set)
    student = student.cpu().eval()
    metrics = {"accuracy": ctx.accuracy(student), "val_accuracy": history.best_val_accuracy,
               "epoch_time_s": history.epoch_time_s, **size_metrics(student), **history.feeding_metrics(),
               "teacher_logits": "cached" if cached else "per_batch"}
    if compare_without_kd if compare_without_kd is not None else cfg.compare_without_kd:
        plain = ctx.new_model("student")
        plain_history = train(ctx, plain, epochs, cfg.lr, "student (no KD)")
        metrics["accuracy_no_kd"] = ctx.accuracy(plain.cpu().eval())
        metrics["kd_gain_pp"] = 100 * (metrics["accuracy"] - metrics["accuracy_no_kd"])
        metrics["epoch_time_no_kd_s"] = plain_history.epoch_time_s
        metrics["epoch_time_ratio_kd_vs_plain"] = history.epoch_time_s / plain_history.epoch_time_s
    return DistillOutcome(student, history, metrics)
