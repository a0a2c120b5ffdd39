"""Model family: a configurable CNN that fuses, prunes and quantizes cleanly, plus torchvision's
quantizable ResNet-18 and MobileNetV2 for larger datasets.

Every model built here carries ``QuantStub``/``DeQuantStub`` (identity in float) and a
``fuse_model(is_qat)`` method, so the same object serves eager int8 quantization.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.ao.quantization import DeQuantStub, QuantStub, fuse_modules, fuse_modules_qat

from pipelines.core.config import ModelConfig


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


def _torchvision_model(arch: str, in_channels: int, num_classes: int) -> nn.Module:
    from torchvision.models import quantization as qmodels

    if arch == "resnet18":
        model = qmodels.resnet18(weights=None, quantize=False, num_classes=num_classes)
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    else:
        model = qmodels.mobilenet_v2(weights=None, quantize=False, num_classes=num_classes)
        if in_channels != 3:
            first = model.features[0][0]
            model.features[0][0] = nn.Conv2d(in_channels, first.out_channels, 3, 2, 1, bias=False)
    return model


def build_model(cfg: ModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    if cfg.arch == "cnn":
        return CNN(in_channels, num_classes, list(cfg.channels), cfg.depth, cfg.dropout)
    return _torchvision_model(cfg.arch, in_channels, num_classes)


def model_spec(cfg: ModelConfig, in_channels: int, num_classes: int) -> dict[str, Any]:
    """The constructor arguments, stored beside the weights so a checkpoint rebuilds itself."""
    return {"model": cfg.model_dump(), "in_channels": in_channels, "num_classes": num_classes}


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    return build_model(ModelConfig(**spec["model"]), spec["in_channels"], spec["num_classes"])


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
