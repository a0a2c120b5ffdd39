"""Model size and sparsity, measured the same way for every model (the metric names of docs/results.md)."""

from __future__ import annotations

import gzip
import io

import torch
from torch import nn

from pipelines.core.kinds import is_pt2e
from pipelines.core.pt2e_graph import weight_tensors


def serialized_bytes(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def _weights(model: nn.Module) -> list[torch.Tensor]:
    """Prunable weights: conv and linear, float or int8 (dequantized view)."""
    if is_pt2e(model):  # PT2E int8 graph: weights are graph constants
        return list(weight_tensors(model).values())
    out = []
    for module in model.modules():
        for name in ("weight", "in_proj_weight"):  # in_proj_weight: nn.MultiheadAttention's packed q/k/v
            weight = getattr(module, name, None)
            if callable(weight):  # torch.ao quantized modules expose weight()
                weight = weight()
            if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
                quantized = weight.is_quantized or type(weight) not in (torch.Tensor, nn.Parameter)  # torchao int8
                out.append(weight.dequantize() if quantized else weight.detach())
    return out


def size_metrics(model: nn.Module) -> dict[str, float]:
    blob = serialized_bytes(model)
    weights = _weights(model)
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    num_params = sum(p.numel() for p in model.parameters()) or total
    if is_pt2e(model):  # int8 weights are buffers there, biases parameters
        num_params = total + sum(p.numel() for p in model.parameters())
    return {
        "size_mb": len(blob) / 1e6,
        "size_gzip_mb": len(gzip.compress(blob, compresslevel=6)) / 1e6,
        "num_params": num_params,
        "nonzero_params": num_params - zeros,
        "sparsity": zeros / total if total else 0.0,
    }
