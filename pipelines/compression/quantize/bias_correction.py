"""Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction", section 4.2; the empirical variant AIMET ships).

Rounding a layer's weights to int8 shifts the mean of each output channel by
``E[(W - Q(W)) x]``, an error that does not average out: every input pays it in the same
direction, and the next layers inherit it. On the calibration batches, with the fp32 model's own
inputs to each layer, this module measures that shift per output channel (``Q``: the engine's
weight quantization, int8 symmetric, per channel or per tensor as ``quantize.per_channel`` says,
torch.ao's observer and fake-quant) and adds it to the layer's bias, so the int8 layer's
expected output is the fp32 layer's again. Batch norms are folded first (the bias the int8 kernel
adds is the folded one) and the result is written back into the unfused model like
:mod:`.equalize` does.

It changes the float model's function by exactly the measured shift of each layer: a layer the
budget later keeps in fp32 keeps its corrected bias (the report's drop is always against the
model before the correction).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.compression.quantize.equalize import write_back
from pipelines.compression.quantize.simulate import fake_weight, compute_layers, folded


def _weight_error_output(layer: nn.Module, x: torch.Tensor, per_channel: bool) -> tuple[torch.Tensor, int]:
    """``(W - Q(W)) x`` of one layer, summed per output channel, and how many values each sum holds."""
    err = layer.weight - fake_weight(layer.weight.detach(), per_channel)
    if isinstance(layer, nn.Linear):
        y = F.linear(x, err)
        return y.reshape(-1, y.shape[-1]).sum(0), y.numel() // y.shape[-1]
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[err.dim() - 2]
    y = conv(x, err, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    dims = [d for d in range(y.dim()) if d != 1]
    return y.sum(dims), y.numel() // y.shape[1]


@torch.no_grad()
def corrected(model: nn.Module, batches: Iterable[torch.Tensor], per_channel: bool = True
              ) -> tuple[nn.Module, dict[str, float]]:
    """A copy of ``model`` whose layers' biases absorb their int8 weights' mean output error on
    ``batches``, and per layer the largest correction (absolute, in output units); ``model``
    itself and ``{}`` when there is no ``fuse_model`` to fold with (like :func:`.equalize.equalized`)."""
    if not callable(getattr(model, "fuse_model", None)):
        return model, {}
    fused = folded(model)
    layers = compute_layers(fused)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            total, n = _weight_error_output(module, inputs[0], per_channel)
            sums[name] = sums.get(name, 0) + total
            counts[name] = counts.get(name, 0) + n
        return record

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    try:
        for batch in batches:
            fused(batch)
    finally:
        for handle in handles:
            handle.remove()
    out = copy.deepcopy(model).cpu().eval()
    sizes: dict[str, float] = {}
    for name, layer in layers.items():
        if name not in sums:
            continue
        shift = sums[name] / counts[name]
        fixed = copy.deepcopy(layer)
        bias = fixed.bias if fixed.bias is not None else torch.zeros(fixed.weight.shape[0])
        fixed.bias = nn.Parameter(bias + shift)
        try:
            write_back(out, name, fixed)
        except ValueError:  # no bias and no batch norm after it to hold one: left as it is
            continue
        sizes[name] = float(shift.abs().max())
    return out, sizes
