"""Stage prune as a function: iterative prune + fine-tune of the student."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from pipelines.chain.metrics import model_metrics
from pipelines.compression import prune as pr
from pipelines.measurement.size import size_metrics
from pipelines.training.context import Context, train


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
