"""A small CNN trained on digits, then made sensitive to int8 on purpose (shared by the
sensitivity and accuracy-budget tests).

:func:`plant_range`: one channel of the tensor between ``features.0`` and ``features.1`` is scaled
up by ``factor`` (batch-norm weight and bias of block 0) and the next convolution's input weights
of that channel down by the same factor. Exact in fp32 (ReLU is positively homogeneous); in int8
that channel dominates the tensor's per-tensor range, so every other channel loses its
resolution. The layer that quantizes that tensor at its input is ``features.1.0``: the culprit.
"""

from __future__ import annotations

import copy

import torch
from conftest import fast_params
from torch import nn

from pipelines.training.context import Context, train

CULPRIT = "features.1.0"


def planted_context(**quantize) -> Context:
    return Context(fast_params(tracking={"enabled": False}, student={"channels": [8, 16], "depth": 2},
                               quantize={"calibration_batches": 2, "engine": "pt2e", **quantize}))


def trained(ctx: Context) -> nn.Module:
    model = ctx.new_model("student")
    train(ctx, model, 4, 3e-3, "fp32 for planted int8 tests")
    return model.cpu().eval()


@torch.no_grad()
def plant_range(model: nn.Module, factor: float, channel: int = 0) -> nn.Module:
    model = copy.deepcopy(model).eval()
    bn, conv = model.features[0][1], model.features[1][0]
    bn.weight[channel] *= factor
    bn.bias[channel] *= factor
    conv.weight[:, channel] /= factor
    return model


_CACHE: dict[str, nn.Module] = {}


def trained_once(ctx: Context) -> nn.Module:
    """:func:`trained` once per test process (both test files share it)."""
    if "model" not in _CACHE:
        _CACHE["model"] = trained(ctx)
    return _CACHE["model"]
