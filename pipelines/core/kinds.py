"""What kind of model this is: the one place that answers it.

- float: an ``nn.Module`` with float weights (any device);
- eager int8: torch.ao eager-quantized modules (x86 int8 kernels, CPU only, not exportable);
- torchao int8: an ``nn.Module`` whose Linear weights are torchao int8 tensor subclasses
  (``quantize.engine: pt2e``, ``method: dynamic``);
- PT2E graph: an ``fx.GraphModule`` from torch.export (prepared or converted); a converted one
  holds quantize/dequantize ops (:func:`is_pt2e_int8`) and runs as int8 kernels once compiled.
"""

from __future__ import annotations

from typing import Literal

from torch import fx, nn

Kind = Literal["float", "eager_int8", "torchao_int8", "pt2e_graph", "pt2e_int8"]


def is_pt2e(model: nn.Module) -> bool:
    """True for a PT2E graph (exported, prepared or converted), as opposed to an eager module."""
    return isinstance(model, fx.GraphModule)


def is_eager_int8(model: nn.Module) -> bool:
    """torch.ao eager-quantized models (int8 kernels, CPU only, not torch.export-able)."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


def is_torchao_int8(model: nn.Module) -> bool:
    """An ``nn.Module`` with torchao int8 tensor-subclass weights."""
    return any(type(p).__module__.startswith("torchao") for p in model.parameters())


def is_pt2e_int8(model: nn.Module) -> bool:
    """A converted PT2E graph: runs as reference ops in eager, as int8 kernels once compiled."""
    return is_pt2e(model) and any(n.op == "call_function" and "quantize" in str(n.target)
                                  for n in model.graph.nodes)


def is_quantized(model: nn.Module) -> bool:
    """Integer models whose kernels are CPU int8: torch.ao eager int8 or a converted PT2E graph."""
    return is_eager_int8(model) or is_pt2e_int8(model)


def cpu_only(model: nn.Module) -> bool:
    """Models that run on the CPU only (int8 kernels, exported graphs)."""
    return is_eager_int8(model) or is_pt2e(model)


def kind(model: nn.Module) -> Kind:
    if is_pt2e(model):
        return "pt2e_int8" if is_pt2e_int8(model) else "pt2e_graph"
    if is_eager_int8(model):
        return "eager_int8"
    if is_torchao_int8(model):
        return "torchao_int8"
    return "float"
