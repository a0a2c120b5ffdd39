"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization"): rescale the output
channels of one layer and the input channels of the next so their weight ranges match, exact in
fp32 through ReLU and max/avg pooling, so one channel no longer dominates the tensor between them.
torch.ao's ``_equalize.equalize`` does the rescaling; this module finds the pairs and writes the
result back into the unfused model (same structure, so both engines and checkpoints take it).

Pairs: consecutive quantizable layers of the batch-norm-folded model (``simulate.folded``) joined
only by ops that commute with a positive per-channel scale (ReLU, pooling, flatten, dropout), the
first's output channels being the second's input features.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import fx, nn
from torch.ao.nn.intrinsic import _FusedModule

from pipelines.compression.quantize.simulate import compute_layers, folded

_COMMUTE_MODULES = (nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten,
                    nn.Dropout, nn.Identity)
_COMMUTE_FUNCTIONS = {torch.relu, torch.flatten, torch.nn.functional.relu, torch.nn.functional.max_pool2d,
                      torch.nn.functional.adaptive_avg_pool2d, "relu", "flatten", "view", "reshape"}


def _leaf_tracer(layers: dict[str, nn.Module]) -> fx.Tracer:
    fused = {id(m) for m in layers.values()}

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, _FusedModule) or id(m) in fused or super().is_leaf_module(m, qualname)

    return Tracer()


def pairs(model: nn.Module) -> list[list[str]]:
    """The equalizable pairs of ``model`` (batch norms already folded), by layer name."""
    layers = compute_layers(model)
    try:
        graph = _leaf_tracer(layers).trace(model)
    except Exception:  # noqa: BLE001 - a model fx cannot trace has no pairs we can prove safe
        return []
    names = set(layers)
    out = []
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in names:
            continue
        cur = node
        while len(cur.users) == 1:
            (cur,) = cur.users
            if cur.op == "call_module" and cur.target in names:
                first, second = layers[node.target], layers[cur.target]
                channels = getattr(second, "in_channels", getattr(second, "in_features", None))
                if getattr(first, "out_channels", getattr(first, "out_features", None)) == channels \
                        and getattr(second, "groups", 1) == 1:
                    out.append([node.target, cur.target])
                break
            module = model.get_submodule(cur.target) if cur.op == "call_module" else None
            if not (isinstance(module, _COMMUTE_MODULES) or cur.target in _COMMUTE_FUNCTIONS):
                break
    return out


def write_back(model: nn.Module, name: str, layer: nn.Module) -> None:
    """``model``'s layer ``name`` (and the batch norm right after it) computing ``layer`` (folded)."""
    target = model.get_submodule(name)
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    siblings = list(parent.named_children())
    index = [n for n, _ in siblings].index(child)
    bn = siblings[index + 1][1] if index + 1 < len(siblings) else None
    with torch.no_grad():
        target.weight.copy_(layer.weight)
        bias = layer.bias if layer.bias is not None else torch.zeros(layer.weight.shape[0])
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            bn.weight.fill_(1.0)
            bn.bias.copy_(bias)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # (x - 0) / sqrt(var + eps) = x
        elif target.bias is not None:
            target.bias.copy_(bias)
        elif layer.bias is not None and bias.abs().max() > 0:
            raise ValueError(f"{name}: no bias to hold the equalized one")


def rescaled(model: nn.Module, rescale: Callable[[nn.Module, list[list[str]]], None]
             ) -> tuple[nn.Module, list[list[str]]]:
    """A copy of ``model`` whose equalizable pairs ``rescale(folded_model, pairs)`` rescaled in its
    batch-norm-folded copy (in place), written back (:func:`write_back`), and the pairs; ``model``
    itself (and ``[]``) when there is no pair or no ``fuse_model`` to fold with."""
    if not callable(getattr(model, "fuse_model", None)):
        return model, []
    fused = folded(model)
    found = pairs(fused)
    if not found:
        return model, []
    rescale(fused, found)
    out = copy.deepcopy(model).cpu().eval()
    layers = compute_layers(fused)
    for name in sorted({n for pair in found for n in pair}):
        write_back(out, name, layers[name])
    return out, found


def equalized(model: nn.Module) -> tuple[nn.Module, list[list[str]]]:
    """A copy of ``model`` with cross-layer equalization applied (torch.ao), and the pairs it
    rescaled (:func:`rescaled`)."""
    from torch.ao.quantization._equalize import equalize

    return rescaled(model, lambda fused, found: equalize(fused, copy.deepcopy(found), threshold=1e-4, inplace=True))
