"""Convolutions on tiny feature maps, rewritten as the matrix multiply they are (PT2E).

Why: oneDNN's int8 convolution (``brg_conv_fwd`` on AMX) blocks its GEMM over the *output width*
of one image: on a 1x1 output its AMX tiles hold 1 row of 16, whatever the batch. ResNet-18 on
32x32 images ends at 1x1 (``layer4``) and its three 3x3 convolutions there took 9.8 of the 17.8 ms
of int8 kernel time in one batch-64 call, ~90 GOPS; a 1x1 convolution of the same channels, which
oneDNN runs as one GEMM over batch x pixels, took 0.2 ms. So int8 was only 1.4x faster than
compiled fp32.

What: a convolution is linear in its input. With the input's channels and spatial size fixed (they
are in an exported graph: only the batch is dynamic), ``conv(x) = unflatten(W @ flatten(x) + b)``
where ``W`` is the conv applied to the identity basis. When the output is small, ``W`` holds only
the kernel taps that touch real input (a padded 3x3 on a 1x1 map keeps its centre tap: 1/9 of
the weights), and the matmul runs as one ``linear`` over the batch, which int8 (and fp32) GEMMs
run at full tile use. A conv is rewritten only where ``W`` has at most ``max_growth`` times the
conv's weights (default 1: never a bigger model), after conv+batch-norm folding; the result is
exact up to fp32 rounding and then quantized like any ``linear`` (per-channel int8 weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx

MAX_FEATURES = 1 << 15  # flattened input size above which the basis (features^2 floats) is not built


def _int_list(value, default: int) -> list[int]:
    if value is None:
        return [default, default]
    return list(value) if isinstance(value, (list, tuple)) else [value, value]


def _conv_args(node: fx.Node) -> tuple:
    """(input, weight, bias, stride, padding, dilation, groups) of an ``aten.conv2d.default`` node."""
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    defaults = (None, None, None, 1, 0, 1, 1)
    values = dict(zip(names, defaults))
    values.update(zip(names, node.args))
    values.update(node.kwargs)
    return (values["input"], values["weight"], values["bias"], _int_list(values["stride"], 1),
            _int_list(values["padding"], 0), _int_list(values["dilation"], 1), values["groups"])


def _static_shape(node: fx.Node) -> tuple[int, int, int] | None:
    val = node.meta.get("val")
    if val is None or val.dim() != 4:
        return None
    shape = tuple(val.shape[1:])
    return shape if all(isinstance(d, int) for d in shape) else None


def _attr(gm: fx.GraphModule, node: fx.Node | None) -> torch.Tensor | None:
    if node is None:
        return None
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        raise LookupError
    owner = gm
    *path, leaf = str(node.target).split(".")
    for part in path:
        owner = getattr(owner, part)
    return getattr(owner, leaf)


def _out_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def _candidate(gm: fx.GraphModule, node: fx.Node, max_growth: float) -> bool:
    if node.op != "call_function" or node.target is not torch.ops.aten.conv2d.default:
        return False
    x, weight_node, bias_node, stride, padding, dilation, _ = _conv_args(node)
    shape = _static_shape(x) if isinstance(x, fx.Node) else None
    try:
        weight = _attr(gm, weight_node)
        _attr(gm, bias_node)
    except (LookupError, AttributeError):
        return False  # weights computed in the graph: not a constant matrix
    if shape is None or weight is None:
        return False
    c, h, w = shape
    oh, ow = (_out_size(s, k, st, p, d) for s, k, st, p, d in zip((h, w), weight.shape[2:], stride, padding, dilation))
    features = c * h * w
    return features <= MAX_FEATURES and features * weight.shape[0] * oh * ow <= max_growth * weight.numel()


def _matrix(weight, bias, shape, stride, padding, dilation, groups) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    c, h, w = shape
    features = c * h * w
    with torch.no_grad():
        basis = torch.eye(features, dtype=weight.dtype).reshape(features, c, h, w)
        out = F.conv2d(basis, weight.detach(), None, stride, padding, dilation, groups)
        out_shape = list(out.shape[1:])
        matrix = out.reshape(features, -1).T.contiguous()
        b = bias.detach() if bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
        b = b[:, None].expand(-1, out_shape[1] * out_shape[2]).reshape(-1).contiguous()
    return matrix, b, out_shape


def convs_as_linear(gm: fx.GraphModule, max_growth: float = 1.0) -> list[str]:
    """Rewrite, in place, the 2-d convolutions of an exported float graph whose matrix form is no
    bigger than ``max_growth`` x their weights into ``flatten -> linear -> unflatten`` (batch norms
    folded first). Returns the rewritten layers' names (empty: ``gm`` untouched). The new nodes
    call ``torch.flatten`` / ``F.linear`` / ``torch.unflatten``: re-export the graph before
    quantizing it, so the quantizer sees them as linear layers with shapes."""
    if not any(_candidate(gm, n, max_growth) for n in gm.graph.nodes):
        return []
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    _fuse_conv_bn_(gm)
    done = []
    for node in list(gm.graph.nodes):
        if not _candidate(gm, node, max_growth):
            continue
        x, weight_node, bias_node, stride, padding, dilation, groups = _conv_args(node)
        matrix, bias, out_shape = _matrix(_attr(gm, weight_node), _attr(gm, bias_node), _static_shape(x),
                                          stride, padding, dilation, groups)
        prefix = f"{node.name}_as_linear"
        gm.register_buffer(f"{prefix}_weight", matrix)
        gm.register_buffer(f"{prefix}_bias", bias)
        with gm.graph.inserting_before(node):
            flat = gm.graph.call_function(torch.flatten, (x, 1))
            linear = gm.graph.call_function(F.linear, (flat, gm.graph.get_attr(f"{prefix}_weight"),
                                                       gm.graph.get_attr(f"{prefix}_bias")))
            out = gm.graph.call_function(torch.unflatten, (linear, 1, out_shape))
        out.meta["val"] = node.meta.get("val")  # the shape later convs are judged by
        node.replace_all_uses_with(out)
        gm.graph.erase_node(node)
        stack = node.meta.get("nn_module_stack") or {}
        done.append(next(reversed(stack.values()))[0] if stack else node.name)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return done
