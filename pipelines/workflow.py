"""The compression chain as functions on models: what each DVC stage does, minus file I/O and
tracking. The stages and every Optuna trial call exactly these (no second implementation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from pipelines import distill as kd
from pipelines import prune as pr
from pipelines import quantize as qz
from pipelines.config import Params
from pipelines.data import DataBundle, load_data, make_loader
from pipelines.metrics import size_metrics
from pipelines.builders import check_output
from pipelines.models import build_model, is_eager_int8, model_spec
from pipelines.training import History, cross_entropy, evaluate, fit, predict, resolve_device, seed_everything
from pipelines.weights import load_weights


@dataclass
class Context:
    """Params plus the lazily loaded data and chosen device, shared by one process's steps."""

    params: Params

    @cached_property
    def data(self) -> DataBundle:
        return load_data(self.params.data, self.params.seed)

    @cached_property
    def device(self) -> torch.device:
        return resolve_device(self.params.train.device)

    def loader(self, split: str, shuffle: bool = False, dataset=None):
        ds = dataset if dataset is not None else getattr(self.data, split)
        return make_loader(ds, self.params.data.batch_size, shuffle, seed=self.params.seed)

    def example(self, batch_size: int = 2) -> torch.Tensor:
        images = self.data.test.tensors[0]
        reps = -(-batch_size // len(images))
        return images.repeat(reps, 1, 1, 1)[:batch_size].contiguous()

    def accuracy(self, model: nn.Module, split: str = "test") -> float:
        # int8 models (torch.ao kernels, PT2E graphs with x86 int8 ops) run on the CPU only.
        cpu_only = is_eager_int8(model) or isinstance(model, torch.fx.GraphModule)
        return evaluate(model, self.loader(split), "cpu" if cpu_only else self.device)

    def spec(self, which: str) -> dict[str, Any]:
        return model_spec(getattr(self.params, which), self.data.in_channels, self.data.num_classes,
                          self.data.image_size)

    def new_model(self, which: str) -> nn.Module:
        """``which`` (teacher | student) as params say: built, checked on a batch of the data, and
        started from ``<which>.weights`` when given."""
        cfg = getattr(self.params, which)
        seed_everything(self.params.seed)
        model = build_model(cfg, self.data.in_channels, self.data.num_classes, self.data.image_size, key=which)
        check_output(model, self.example(2), self.data.num_classes, which, cfg.arch)
        if cfg.weights is not None:
            load_weights(model, cfg.weights, which, cfg.arch)
        return model


def model_metrics(ctx: Context, model: nn.Module) -> dict[str, float]:
    return {"accuracy": ctx.accuracy(model), **size_metrics(model)}


def _train(ctx: Context, model: nn.Module, epochs: int, lr: float, desc: str, loss_fn=None,
           train_set=None) -> History:
    t = ctx.params.train
    kwargs = {"loss_fn": loss_fn} if loss_fn is not None else {}
    seed_everything(ctx.params.seed)
    return fit(model, ctx.loader("train", shuffle=True, dataset=train_set), ctx.loader("val"), epochs=epochs,
               lr=lr, weight_decay=t.weight_decay, optimizer=t.optimizer, device=ctx.device, desc=desc, **kwargs)


# --- train_baseline ---------------------------------------------------------------------------

def train_teacher(ctx: Context) -> tuple[nn.Module, History]:
    """The teacher trained for ``train.epochs``; with 0 epochs, ``teacher.weights`` as given and a
    history of one row (epoch 0: their loss on the train split, their val accuracy)."""
    model = ctx.new_model("teacher")
    if ctx.params.train.epochs == 0:
        model.to(ctx.device).eval()
        with torch.no_grad():
            loss = cross_entropy(predict(model, ctx.loader("train"), ctx.device),
                                 ctx.data.train.tensors[1]).item()
        val = ctx.accuracy(model, "val")
        return model.cpu().eval(), History([{"epoch": 0, "train_loss": loss, "val_accuracy": val}], val, 0)
    history = _train(ctx, model, ctx.params.train.epochs, ctx.params.train.lr, "teacher")
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
    history = _train(ctx, student, epochs, cfg.lr, "distill", loss_fn=loss, train_set=train_set)
    student = student.cpu().eval()
    metrics = {"accuracy": ctx.accuracy(student), "val_accuracy": history.best_val_accuracy,
               "epoch_time_s": history.epoch_time_s, **size_metrics(student)}
    if compare_without_kd if compare_without_kd is not None else cfg.compare_without_kd:
        plain = ctx.new_model("student")
        plain_history = _train(ctx, plain, epochs, cfg.lr, "student (no KD)")
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
            _train(ctx, m, epochs, cfg.lr, f"prune step {step}/{cfg.steps} fine-tune")
        m.cpu().eval()

    result = pr.prune_model(model, cfg, ctx.example(2), finetune, ctx.accuracy)
    metrics = model_metrics(ctx, result.model)
    metrics["accuracy_before_finetune"] = result.steps[-1]["accuracy_after_prune"]
    metrics["params_ratio_vs_student"] = metrics["num_params"] / before["num_params"]
    return PruneOutcome(result.model.cpu().eval(), result.steps, pr.sparsity_table(result.model), metrics)


# --- quantize ---------------------------------------------------------------------------------

def quantize_model(ctx: Context, model: nn.Module) -> tuple[nn.Module, dict[str, float]]:
    """int8 copy of ``model`` per ``params.quantize`` (``method: none`` returns it unchanged)."""
    cfg = ctx.params.quantize
    model = model.cpu().eval()
    engine = qz.resolve_engine(cfg, model)
    if cfg.method == "none":
        out = model
    elif engine == "pt2e":
        from pipelines import quantize_pt2e

        out = quantize_pt2e.quantize(model, cfg, ctx)
    elif cfg.method == "dynamic":
        out = qz.quantize_dynamic(model)
    elif cfg.method == "static":
        out = qz.quantize_static(model, (b[0] for b in ctx.loader("train", shuffle=True)), cfg)
    else:
        def finetune(prepared: nn.Module) -> None:
            _train(ctx, prepared, cfg.qat_epochs, cfg.qat_lr, "qat")

        out = qz.quantize_qat(model, cfg, finetune)
    fp32 = size_metrics(model)
    metrics = model_metrics(ctx, out)
    metrics["engine"] = engine
    metrics["accuracy_fp32"] = ctx.accuracy(model)
    metrics["size_ratio_vs_fp32"] = metrics["size_mb"] / fp32["size_mb"]
    if cfg.method != "none":
        from pipelines.quantize_pt2e import REPORT_KEY, fp32_layers

        metrics["fp32_layers"] = fp32_layers(out)  # conv/linear/add that stayed fp32 (empty: all int8)
        metrics["num_fp32_layers"] = len(metrics["fp32_layers"])
        report = getattr(out, "meta", {}).get(REPORT_KEY) if engine == "pt2e" else None
        if report:
            metrics["pt2e_export"] = report["export"]
            metrics["pt2e_skipped_patterns"] = report["skipped_patterns"]
    return out, metrics
