"""Models the lab does not define: ``torchvision:<builder>`` and ``<module>:<callable>``.

- ``torchvision:<builder>``: any classification builder of ``torchvision.models`` (``resnet50``,
  ``mobilenet_v3_small``, ``efficientnet_b0``, ``convnext_tiny``, ``vit_b_16`` ...), called with
  ``weights=None`` (nothing downloads), ``num_classes`` = the dataset's classes (so the
  classifier head has that many outputs) and ``<section>.kwargs``; the first convolution is
  rebuilt for ``data.channels`` inputs when the data is not RGB.
- ``<module>:<callable>``: the user's factory, imported from the project (the stages run from
  its root, so ``examples/tiny_factory.py`` is ``examples.tiny_factory:make``). It receives the
  keywords among ``num_classes``, ``in_channels``, ``image_size`` that its signature names (all
  of them when it takes ``**kwargs``) plus ``<section>.kwargs``, and returns an ``nn.Module``.

Whatever comes back must map a ``[N, C, H, W]`` batch to ``[N, num_classes]`` logits:
:func:`check_output` says in one line what it does instead.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pipelines.core.config import ModelConfig
from pipelines.core.errors import ModelError, error_line
from pipelines.models.zoo import adapt_input

TORCHVISION_PREFIX = "torchvision:"


def classification_builders() -> list[str]:
    from torchvision import models

    return models.list_models(module=models)


def _torchvision_builder(name: str, key: str) -> Callable[..., nn.Module]:
    from torchvision import models

    known = classification_builders()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"classification builders: {', '.join(known)}"
        raise ModelError(f"{key}.arch: torchvision has no classification builder {name!r}; {hint}")
    return models.get_model_builder(name)


def _factory(arch: str, key: str) -> Callable[..., nn.Module]:
    module_name, _, attr = arch.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - ImportError, or whatever the module raises at import
        raise ModelError(f"{key}.arch: cannot import {module_name!r} from the project ({error_line(exc)})") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise ModelError(f"{key}.arch: module {module_name!r} ({module.__file__}) has no {attr!r}")
    if not callable(factory):
        raise ModelError(f"{key}.arch: {arch} is a {type(factory).__name__}, not a callable returning an nn.Module")
    return factory


def _accepted(factory: Callable[..., Any], offered: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``offered`` that ``factory``'s signature takes."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature: offer everything
        return offered
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return offered
    return {k: v for k, v in offered.items() if k in params}


def build_external(cfg: ModelConfig, in_channels: int, num_classes: int, image_size: int | None,
                   key: str) -> nn.Module:
    """A torchvision classifier or the user's factory's model, with random weights."""
    if cfg.arch.startswith(TORCHVISION_PREFIX):
        builder = _torchvision_builder(cfg.arch.removeprefix(TORCHVISION_PREFIX), key)
        call, kwargs = builder, {"weights": None, "num_classes": num_classes, **cfg.kwargs}
    else:
        factory = _factory(cfg.arch, key)
        offered = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
        call, kwargs = factory, {**_accepted(factory, offered), **cfg.kwargs}
    try:
        model = call(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a builder's or factory's own error, named
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ModelError(f"{key}.arch: {cfg.arch}({shown}) failed ({error_line(exc)})") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"{key}.arch: {cfg.arch} returned a {type(model).__name__}, not an nn.Module")
    return adapt_input(model, in_channels) if cfg.arch.startswith(TORCHVISION_PREFIX) else model


@torch.no_grad()
def check_output(model: nn.Module, example: torch.Tensor, num_classes: int, key: str, arch: str) -> None:
    """One forward pass in eval mode: ``[N, C, H, W]`` in, ``[N, num_classes]`` logits out."""
    was_training = model.training
    model.eval()
    try:
        out = model(example)
    except Exception as exc:  # noqa: BLE001 - the model's own error, named
        raise ModelError(f"{key}.arch: {arch} fails on a {list(example.shape)} batch of the data "
                         f"({error_line(exc)})") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(example), num_classes):
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"{key}.arch: {arch} maps a {list(example.shape)} batch to {got}, but the data has "
                         f"{num_classes} classes: the model must return [batch, {num_classes}] logits")
