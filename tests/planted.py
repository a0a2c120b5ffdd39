"""Small models trained on digits, then made sensitive to int8 on purpose (shared by the
sensitivity and accuracy-budget tests).

:func:`plant_range`: one channel of the tensor between ``features.0`` and ``features.1`` is scaled
up by ``factor`` (batch-norm weight and bias of block 0) and the next convolution's input weights
of that channel down by the same factor. Exact in fp32 (ReLU is positively homogeneous); in int8
that channel dominates the tensor's per-tensor range, so every other channel loses its
resolution. The layer that quantizes that tensor at its input is ``features.1.0``: the culprit.
Cross-layer equalization can undo it (it is a rescaling between two layers).

:func:`plant_across_add`: the same kind of channel, planted where equalization cannot reach it:
in the tensor a residual add reads (:class:`Residual`).
"""

from __future__ import annotations

import copy

import torch
from conftest import fast_params
from torch import nn
from torch.ao.quantization import DeQuantStub, QuantStub, fuse_modules, fuse_modules_qat

from pipelines.models.zoo import ConvBNReLU
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


class Residual(nn.Module):
    """A stem, one residual block and a classifier: the stem's output feeds both the block and the
    add, so no layer pair around it can be equalized (a rescaled channel would have to be rescaled
    on both paths and after the add alike)."""

    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.quant, self.dequant = QuantStub(), DeQuantStub()
        self.stem = ConvBNReLU(1, width)
        self.branch_a = ConvBNReLU(width, width)
        self.branch_b = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.pool, self.flatten = nn.AdaptiveAvgPool2d(1), nn.Flatten()
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(self.quant(x))
        y = torch.relu(self.branch_b(self.branch_a(s)) + s)
        return self.dequant(self.classifier(self.flatten(self.pool(y))))

    def fuse_model(self, is_qat: bool = False) -> None:
        fuse = fuse_modules_qat if is_qat else fuse_modules
        fuse(self.stem, ["0", "1", "2"], inplace=True)
        fuse(self.branch_a, ["0", "1", "2"], inplace=True)
        fuse(self.branch_b, ["0", "1"], inplace=True)


def trained_residual(ctx: Context) -> nn.Module:
    """:class:`Residual` trained on digits (once per test process)."""
    if "residual" not in _CACHE:
        torch.manual_seed(0)
        model = Residual(num_classes=ctx.data.num_classes)
        train(ctx, model, 30, 1e-2, "fp32 residual for planted int8 tests")
        _CACHE["residual"] = model.cpu().eval()
    return _CACHE["residual"]


@torch.no_grad()
def plant_across_add(model: Residual, factor: float, channel: int = 0) -> Residual:
    """Channel ``channel`` of the stem's output scaled up by ``factor``, and with it the same channel
    of the block's output (so the add stays consistent) and of the sum; the layers that read those
    tensors (``branch_a``'s conv, the classifier) get that channel's weights scaled down. Exact in
    fp32; in int8 the stem's output, the block's output and the sum all have one channel that sets
    their range, and the stem's output has two consumers: cross-layer equalization cannot touch it."""
    model = copy.deepcopy(model).eval()
    for bn in (model.stem[1], model.branch_b[1]):
        bn.weight[channel] *= factor
        bn.bias[channel] *= factor
    model.branch_a[0].weight[:, channel] /= factor
    model.classifier.weight[:, channel] /= factor
    return model


def trained_mlp(ctx: Context) -> nn.Module:
    """The built-in MLP (``hidden`` [32, 32]) trained on digits (once per test process)."""
    if "mlp" not in _CACHE:
        from pipelines.models import build_model

        torch.manual_seed(0)
        cfg = ctx.params.student.model_copy(update={"arch": "mlp", "hidden": [32, 32]})
        model = build_model(cfg, ctx.data.in_channels, ctx.data.num_classes, ctx.data.image_size, key="student")
        train(ctx, model, 6, 3e-3, "fp32 MLP for planted int8 tests")
        _CACHE["mlp"] = model.cpu().eval()
    return _CACHE["mlp"]


@torch.no_grad()
def plant_offset(model: nn.Module, offset: float, channel: int = 0) -> nn.Module:
    """An activation range made by a *bias*, which cross-layer equalization (weights only) does not
    see: hidden unit ``channel`` of the MLP's first layer gets ``offset`` added to its bias, and the
    next layer's bias takes ``offset`` times that unit's weights back off. For inputs where the unit
    was active this is exact; where it was not, the unit now passes its negative pre-activation on
    (ReLU no longer cuts it): a slightly different fp32 model, which the tests compare int8 against.
    In int8 that unit's value (about ``offset``) sets the per-tensor range of the next layer's input."""
    model = copy.deepcopy(model).eval()
    first, second = model.features[0][0], model.features[1][0]
    first.bias[channel] += offset
    second.bias -= offset * second.weight[:, channel]
    return model
