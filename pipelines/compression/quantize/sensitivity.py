"""Per-layer sensitivity of static int8: which layers int8 hurts, ranked.

For each quantizable layer (conv/linear, named as in the float model):

- ``sqnr_db``: signal-to-quantization-noise ratio of the layer's output, fp32 model against the
  int8 model the stage made, on one validation batch (errors propagate, as in deployment). PT2E:
  torchao's numeric debugger (``prepare_for_propagation_comparison`` / ``compare_results``) on
  the float graph the int8 graph was converted from; eager torch.ao: the numeric suite's
  ``compare_model_outputs`` on the folded float model. Low = much noise.
- ``val_accuracy_delta``: validation accuracy (pp) with only this layer kept in fp32, minus the
  all-int8 accuracy, both in the fake-quant simulation of :mod:`.simulate` (one forward pass per
  layer instead of one quantization per layer; ``tests/test_sensitivity.py`` checks it ranks a
  planted culprit first, as quantizing for real with that layer kept fp32 does). High = sensitive.

Ranked by ``val_accuracy_delta`` (descending), ties (the usual case on a model int8 does not hurt)
by ``sqnr_db`` (ascending).
"""

from __future__ import annotations

import copy
import math
import operator
from typing import Any

import torch
from torch import fx, nn

from pipelines.compression.quantize.pt2e import FLOAT_GRAPH_KEY
from pipelines.compression.quantize.simulate import Simulated, folded
from pipelines.core.kinds import is_pt2e
from pipelines.core.pt2e_graph import CONV_LINEAR


def sqnr(ref: torch.Tensor, actual: torch.Tensor) -> float:
    from torch.ao.ns.fx.utils import compute_sqnr

    value = float(compute_sqnr(ref.detach().float(), actual.detach().float()))
    return value if math.isfinite(value) else 99.0  # identical outputs: no noise at all


def _dequant(t: Any) -> torch.Tensor:
    t = t[0] if isinstance(t, (list, tuple)) else t
    return t.dequantize() if t.is_quantized else t


def eager_sqnr(model: nn.Module, int8: nn.Module, x: torch.Tensor, layers: list[str]) -> dict[str, float]:
    """SQNR per layer of an eager torch.ao int8 model (torch.ao numeric suite's output loggers)."""
    from torch.ao.ns import _numeric_suite as ns

    out = ns.compare_model_outputs(folded(model), int8, x)
    found = {}
    for key, pair in out.items():
        name = key.removesuffix(".stats")
        if name in layers and pair.get("float") and pair.get("quantized"):
            found[name] = sqnr(_dequant(pair["float"][0]), _dequant(pair["quantized"][0]))
    return found


def _layer_output(node: fx.Node) -> fx.Node:
    """A conv's batch norm (folded into it in the int8 graph) is part of the layer's output."""
    users = list(node.users)
    while len(users) == 1 and ("batch_norm" in str(users[0].target) or users[0].target is operator.getitem):
        node = users[0]
        users = list(node.users)
    return node


def pt2e_sqnr(int8: fx.GraphModule, x: torch.Tensor, layers: list[str]) -> dict[str, float]:
    """SQNR per layer of a converted PT2E graph: torchao's numeric debugger (loggers on every node
    of the int8 graph and of the float graph it was converted from, kept in its meta), the int8
    conv/linear against the float layer's output (after its batch norm, which int8 folded)."""
    from torchao.quantization.pt2e import extract_results_from_loggers, prepare_for_propagation_comparison
    from torchao.quantization.pt2e._numeric_debugger import QuantizationComparisonResult

    ref = int8.meta.get(FLOAT_GRAPH_KEY)
    if ref is None:
        return {}
    a, r = prepare_for_propagation_comparison(int8), prepare_for_propagation_comparison(ref)
    with torch.no_grad():
        a(x)
        r(x)
    # keyed by the node's origin in the exported graph (the same in both) / by its name in the float graph
    actual = {info.name: stats for info, (_, _, stats) in extract_results_from_loggers(a).items()}
    floats = {node: (info.name, stats) for info, (node, _, stats) in extract_results_from_loggers(r).items()}
    found: dict[str, float] = {}
    for node in ref.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        name = list(stack.values())[-1][0] if stack else None
        if node.op != "call_function" or node.target not in CONV_LINEAR or name not in layers or name in found:
            continue
        out = _layer_output(node)
        origin = floats.get(node.name, ("", None))[0]
        if origin in actual and out.name in floats:
            result = QuantizationComparisonResult(actual=actual[origin][0], ref=floats[out.name][1][0])
            found[name] = sqnr(result.ref, result.actual)
    return found


def simulated_sqnr(sim: Simulated, x: torch.Tensor) -> dict[str, float]:
    ref = sim.layer_outputs(x, sim.layers)
    actual = sim.layer_outputs(x, ())
    return {name: sqnr(ref[name], actual[name]) for name in ref}


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(row: dict[str, Any]) -> tuple[float, float]:
        s = row.get("sqnr_db")
        return -row["val_accuracy_delta"], s if s is not None and math.isfinite(s) else math.inf
    ranked = sorted(rows, key=key)
    return [{**row, "rank": i + 1} for i, row in enumerate(ranked)]


def deltas(sim: Simulated, correct: Any, base: torch.Tensor, candidates: list[str],
           kept: frozenset[str] = frozenset()) -> dict[str, float]:
    """Per candidate: pp of validation accuracy gained by also keeping it fp32 (on top of ``kept``),
    in the simulation; ``correct(model)`` is the per-image outcome on the validation split."""
    n = len(base)
    out = {}
    for layer in candidates:
        with sim.keeping(kept | {layer}) as model:
            out[layer] = 100.0 * (int(correct(model).sum()) - int(base.sum())) / n
    return out


def sensitivity(model: nn.Module, int8: nn.Module, sim: Simulated, correct: Any,
                val_batch: torch.Tensor) -> list[dict[str, Any]]:
    """The ranked table (layer, sqnr_db, val_accuracy_delta, sqnr_source, rank) of ``model`` and the
    ``int8`` model the stage made from it; ``correct(model)``: per-image validation outcomes."""
    layers = list(sim.layers)
    with sim.keeping(()) as all_int8:
        base = correct(all_int8)
    gained = deltas(sim, correct, base, layers)
    source = "simulation"
    measured: dict[str, float] = {}
    try:
        if is_pt2e(int8):
            measured, source = pt2e_sqnr(int8, val_batch, layers), "torchao numeric debugger"
        elif any(m.__class__.__module__.startswith("torch.ao.nn.quantized") for m in int8.modules()):
            measured, source = eager_sqnr(model, copy.deepcopy(int8), val_batch, layers), "torch.ao numeric suite"
    except Exception:  # noqa: BLE001 - the debuggers are private APIs: fall back to the simulation's outputs
        measured = {}
    if not measured:
        measured, source = simulated_sqnr(sim, val_batch), "simulation"
    rows = [{"layer": name, "sqnr_db": measured.get(name), "val_accuracy_delta": gained[name],
             "sqnr_source": source if name in measured else "none"} for name in layers]
    return rank(rows)
