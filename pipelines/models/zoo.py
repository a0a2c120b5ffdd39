"""Model family: a configurable CNN and MLP that fuse, prune and quantize cleanly, plus torchvision's
quantizable ResNet-18 and MobileNetV2 for larger datasets.

Every model built here carries ``QuantStub``/``DeQuantStub`` (identity in float) and a
``fuse_model(is_qat)`` method, so the same object serves eager int8 quantization. Any other
torchvision classifier (``torchvision:<builder>``) or the user's own factory
(``<module>:<callable>``) comes from :mod:`pipelines.models.builders`; :mod:`pipelines.models.build`
picks by ``arch``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.quantization import DeQuantStub, QuantStub, fuse_modules, fuse_modules_qat



class ConvBNReLU(nn.Sequential):
    """conv3x3 (no bias) -> BatchNorm -> ReLU; children named 0/1/2 so torch.ao can fuse them."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=False),
        )


class CNN(nn.Module):
    """``len(channels)`` stages of ``depth`` ConvBNReLU blocks, 2x2 max-pool between stages,
    global average pool and one linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, channels: list[int], depth: int = 1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for stage, width in enumerate(channels):
            if stage > 0:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            for _ in range(depth):
                layers.append(ConvBNReLU(prev, width))
                prev = width
        self.quant = QuantStub()
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(prev, num_classes)
        self.dequant = DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x)
        x = self.features(x)
        x = self.flatten(self.pool(x))
        x = self.classifier(self.dropout(x))
        return self.dequant(x)

    def fuse_model(self, is_qat: bool = False) -> None:
        fuse = fuse_modules_qat if is_qat else fuse_modules
        for module in self.features:
            if isinstance(module, ConvBNReLU):
                fuse(module, ["0", "1", "2"], inplace=True)


class LinearReLU(nn.Sequential):
    """linear -> ReLU; children named 0/1 so torch.ao can fuse them."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(nn.Linear(in_features, out_features), nn.ReLU(inplace=False))


class MLP(nn.Module):
    """Flattened image -> ``hidden`` LinearReLU layers -> one linear classifier."""

    def __init__(self, in_features: int, num_classes: int, hidden: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_features
        for width in hidden:
            layers.append(LinearReLU(prev, width))
            prev = width
        self.quant = QuantStub()
        self.flatten = nn.Flatten()
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(prev, num_classes)
        self.dequant = DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.quant(x))
        x = self.classifier(self.dropout(self.features(x)))
        return self.dequant(x)

    def fuse_model(self, is_qat: bool = False) -> None:
        fuse = fuse_modules_qat if is_qat else fuse_modules
        for module in self.features:
            fuse(module, ["0", "1"], inplace=True)


def adapt_input(model: nn.Module, in_channels: int) -> nn.Module:
    """Give the first convolution ``in_channels`` inputs (a fresh layer, same geometry) when the
    builder made it for another count (torchvision's are RGB)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first.in_channels == in_channels:
        return model
    name = next(n for n, m in model.named_modules() if m is first)
    new = nn.Conv2d(in_channels, first.out_channels, first.kernel_size, first.stride, first.padding,
                    first.dilation, 1, first.bias is not None, first.padding_mode)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)
    return model


def quantizable_torchvision(arch: str, in_channels: int, num_classes: int) -> nn.Module:
    from torchvision.models import quantization as qmodels

    builder = qmodels.resnet18 if arch == "resnet18" else qmodels.mobilenet_v2
    return adapt_input(builder(weights=None, quantize=False, num_classes=num_classes), in_channels)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
