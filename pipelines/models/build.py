"""``arch`` -> model: the built-in family (:mod:`.zoo`), any torchvision classifier or the user's
factory (:mod:`.builders`), and the spec a checkpoint stores to rebuild it."""

from __future__ import annotations

from typing import Any

from torch import nn

from pipelines.core.config import ModelConfig
from pipelines.core.errors import ModelError
from pipelines.models.builders import build_external
from pipelines.models.zoo import CNN, MLP, quantizable_torchvision


def build_model(cfg: ModelConfig, in_channels: int, num_classes: int, image_size: int | None = None,
                key: str = "model") -> nn.Module:
    """The model ``cfg.arch`` names, with random weights (``key`` names the params section in errors)."""
    if cfg.arch == "cnn":
        return CNN(in_channels, num_classes, list(cfg.channels), cfg.depth, cfg.dropout)
    if cfg.arch == "mlp":
        if image_size is None:
            raise ModelError(f"{key}.arch: mlp needs the image size to size its first layer")
        return MLP(in_channels * image_size * image_size, num_classes, list(cfg.hidden), cfg.dropout)
    if cfg.arch in ("resnet18", "mobilenet_v2"):
        return quantizable_torchvision(cfg.arch, in_channels, num_classes)
    return build_external(cfg, in_channels, num_classes, image_size, key)


def model_spec(cfg: ModelConfig, in_channels: int, num_classes: int, image_size: int | None = None) -> dict[str, Any]:
    """The constructor arguments, stored beside the weights so a checkpoint rebuilds itself."""
    return {"model": cfg.model_dump(), "in_channels": in_channels, "num_classes": num_classes,
            "image_size": image_size}


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    return build_model(ModelConfig(**spec["model"]), spec["in_channels"], spec["num_classes"],
                       spec.get("image_size"))
