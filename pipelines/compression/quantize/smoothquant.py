"""SmoothQuant-style migration (Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training
Quantization for Large Language Models"): move an activation channel's range into the weights
that read it, using the ranges the activations really have on the calibration batches.

For each equalizable pair (:func:`.equalize.pairs`: a layer, ops that commute with a positive
per-channel scale such as ReLU and pooling, the next layer) and each channel ``j`` of the tensor
between them, with ``X_j`` = max |activation| on the calibration batches and ``W_j`` = max |weight|
of the next layer's input channel ``j``::

    s_j = X_j ** alpha / W_j ** (1 - alpha)

the first layer's output channel ``j`` (weights and bias) is divided by ``s_j`` and the next
layer's input channel ``j`` multiplied by it: the same function in fp32, and a tensor whose
channels have ranges ``X_j / s_j = (X_j W_j) ** (1 - alpha)``, flattened toward each other
(``alpha`` = ``quantize.smoothquant_alpha``, 0.5 as in the paper: the range split evenly between
activation and weight).

The difference from cross-layer equalization (:mod:`.equalize`): CLE balances the two layers'
*weight* ranges and never looks at data, so it cannot see an activation range made by a bias, by
the input distribution or by a pooling; SmoothQuant scales by the measured activation range. The
paper's case (a LayerNorm feeding a linear layer, the scale folded into the LayerNorm) does not
occur in the built-in archs, where a layer is always fed by a conv/linear layer through ReLU, so
the scale folds into that producer exactly as CLE's does. Written back into the unfused model
like :mod:`.equalize` (batch norms folded first).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from pipelines.compression.quantize.equalize import rescaled
from pipelines.compression.quantize.simulate import compute_layers

FLOOR = 1e-8  # a channel that never fires (or a zero weight column) keeps scale 1


def input_ranges(model: nn.Module, layers: dict[str, nn.Module], names: Iterable[str],
                 batches: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per layer in ``names``, the max |input| per input channel (dim 1) over ``batches``."""
    ranges: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple) -> None:
            x = inputs[0].detach().abs()
            per_channel = x.amax(dim=[d for d in range(x.dim()) if d != 1]) if x.dim() > 2 else x.amax(0)
            ranges[name] = torch.maximum(ranges[name], per_channel) if name in ranges else per_channel
        return record

    handles = [layers[name].register_forward_pre_hook(hook(name)) for name in names]
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return ranges


def scales(activation: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s_j`` for the next layer's ``weight`` (out, in, ...) and its input's per-channel range."""
    w = weight.detach().abs().transpose(0, 1).reshape(weight.shape[1], -1).amax(1)
    a = activation.clamp(min=FLOOR)
    s = a.pow(alpha) / w.clamp(min=FLOOR).pow(1 - alpha)
    return torch.where((activation > FLOOR) & (w > FLOOR), s, torch.ones_like(s))


def smoothed(model: nn.Module, batches: Iterable[torch.Tensor], alpha: float = 0.5
             ) -> tuple[nn.Module, list[list[str]]]:
    """A copy of ``model`` with every equalizable pair's tensor smoothed on ``batches``, and the
    pairs; ``model`` itself (and ``[]``) when there is no pair or no ``fuse_model`` to fold with."""

    @torch.no_grad()
    def rescale(fused: nn.Module, found: list[list[str]]) -> None:
        layers = compute_layers(fused)
        ranges = input_ranges(fused, layers, {second for _, second in found}, batches)
        for first, second in found:  # a -> b -> c: (b, c) reads b's *output*, which (a, b) left as it was
            a, b = layers[first], layers[second]
            s = scales(ranges[second], b.weight, alpha)
            a.weight.div_(s.view(-1, *[1] * (a.weight.dim() - 1)))
            if a.bias is not None:
                a.bias.div_(s)
            b.weight.mul_(s.view(1, -1, *[1] * (b.weight.dim() - 2)))

    return rescaled(model, rescale)
