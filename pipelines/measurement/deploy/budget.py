"""The quantize stage's accuracy budget (``quantize.max_accuracy_drop``) carried to the deploy
targets, so the final model's int8 rows compare like with like:

- ``ort-int8``: the layers the budget kept out of int8 in PyTorch are excluded from ONNX Runtime's
  quantization (``quantize_static(nodes_to_exclude=...)``), mapped from PyTorch module paths to
  the ONNX nodes that compute them (:func:`layer_nodes`: the dynamo exporter records each node's
  module scopes in ``pkg.torch.onnx.name_scopes``; a convolution with its batch norm folded in
  carries the norm's scope, so a layer whose own scope is gone is found through its parent module
  when that parent computes exactly one such op). A layer that maps to no node, or to an
  ambiguous set, is said in the row's note, never silently quantized as if mapped.
- ``ts-int8``: torch.ao's own accuracy control (:mod:`.eager_budget`): the quantize stage's loop
  run on this target's int8 model, with the same budget on the same validation images.
- ``ov-int8``: NNCF's own accuracy control (``nncf.quantize_with_accuracy_control``) with the same
  budget (``max_drop`` in absolute accuracy) on the same validation images: it quantizes
  everything, ranks quantizer groups by the error they cause and reverts the worst ones until the
  drop is within budget (:func:`pipelines.measurement.deploy.ov.quantize_int8_controlled`).
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
SCOPES_KEY = "pkg.torch.onnx.name_scopes"


@dataclass(frozen=True)
class DeployBudget:
    """``max_drop_pp``: the budget in percentage points (``quantize.max_accuracy_drop``);
    ``val``: the validation (images, labels) NNCF and torch.ao validate on; ``layers``: the PyTorch
    layers the quantize stage kept out of int8, as ``fp32_layers`` names them (:func:`layer_nodes`
    reads them as module paths); ``max_layers``: the most layers torch.ao's control may keep
    (``quantize.max_fallback_layers``)."""

    max_drop_pp: float
    val: tuple[torch.Tensor, torch.Tensor]
    layers: tuple[str, ...] = ()
    max_layers: int = 3


def module_path(layer: str) -> str:
    """``"features.0.0 (conv2d_1)"`` (a PT2E graph's fp32 layer) -> ``"features.0.0"``."""
    return layer.split(" (", 1)[0].strip()


def _scopes(node) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == SCOPES_KEY:
            try:
                return [str(s) for s in ast.literal_eval(prop.value)]
            except (ValueError, SyntaxError):
                return []
    return []


def layer_nodes(onnx_path: str | Path, layers: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """The ONNX node names of the quantizable ops (:data:`QUANTIZABLE_OPS`) that compute each
    PyTorch layer of ``layers``, and the layers that could not be mapped (no node, or a parent
    module with several such ops) with why."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    nodes = [(n.name, _scopes(n)) for n in graph.node if n.op_type in QUANTIZABLE_OPS]
    mapped: dict[str, list[str]] = {}
    unmapped: list[str] = []
    for layer in layers:
        path = module_path(layer)
        own = [name for name, scopes in nodes if path in scopes]
        if not own and "." in path:
            parent = path.rsplit(".", 1)[0]
            under = [name for name, scopes in nodes if parent in scopes]
            own = under if len(under) == 1 else []
            if len(under) > 1:
                unmapped.append(f"{path} (its parent {parent} computes {len(under)} ops)")
                continue
        if own:
            mapped[path] = own
        else:
            unmapped.append(f"{path} (no ONNX node)")
    return mapped, unmapped
