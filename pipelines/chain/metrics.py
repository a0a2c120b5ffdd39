"""What every chain step reports about the model it produced."""

from __future__ import annotations

from torch import nn

from pipelines.measurement.size import size_metrics
from pipelines.training.context import Context


def model_metrics(ctx: Context, model: nn.Module) -> dict[str, float]:
    return {"accuracy": ctx.accuracy(model), **size_metrics(model)}
