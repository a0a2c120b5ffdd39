"""Reading a PT2E int8 graph: which ops quantize, which conv/linear weights it holds.

Shared by the quantizer (what stayed fp32) and the size metrics (int8 weights are graph
constants there, not parameters)."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import fx

CONV_LINEAR = frozenset({torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default,
                         torch.ops.aten.conv3d.default, torch.ops.aten.linear.default})
ADD = frozenset({torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor})


@functools.cache
def register_int8_ops() -> None:
    """Register the ``quantized_decomposed`` ops (needed to deserialize a saved graph) and the
    torchao Inductor passes that lower them to oneDNN int8 kernels (needed before compiling one)."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401


@functools.cache
def dequant_ops() -> frozenset:
    register_int8_ops()
    q = torch.ops.quantized_decomposed
    return frozenset({q.dequantize_per_tensor.default, q.dequantize_per_tensor.tensor,
                      q.dequantize_per_channel.default})


def weight_arg(node: fx.Node) -> Any:
    return node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")


def weight_quantized(node: fx.Node) -> bool:
    weight = weight_arg(node)
    return isinstance(weight, fx.Node) and weight.op == "call_function" and weight.target in dequant_ops()


def fetch(model: fx.GraphModule, target: str) -> Any:
    obj: Any = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def eval_constant(model: fx.GraphModule, node: fx.Node) -> torch.Tensor:
    def value(arg: Any) -> Any:
        if isinstance(arg, fx.Node):
            return fetch(model, arg.target) if arg.op == "get_attr" else eval_constant(model, arg)
        return arg

    args = [value(a) for a in node.args]
    kwargs = {k: value(v) for k, v in node.kwargs.items()}
    with torch.no_grad():
        return node.target(*args, **kwargs)


def weight_tensors(model: fx.GraphModule) -> dict[str, torch.Tensor]:
    """The (dequantized) weights of a PT2E graph's conv/linear layers, for size and sparsity metrics."""
    out: dict[str, torch.Tensor] = {}
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in CONV_LINEAR:
            continue
        weight = weight_arg(node)
        if not isinstance(weight, fx.Node):
            continue
        if weight.op == "call_function" and weight.target in dequant_ops():
            out[node.name] = eval_constant(model, weight)
        elif weight.op == "get_attr":
            out[node.name] = fetch(model, weight.target).detach()
    return out
