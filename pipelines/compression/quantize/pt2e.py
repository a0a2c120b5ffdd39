"""Engine ``pt2e``: int8 through torch.export + torchao's ``X86InductorQuantizer``.

- ``static``: ``torch.export`` the float model (strict, batch dimension dynamic), annotate it
  with the x86 Inductor quantizer (uint8 activations from a min/max or histogram observer, int8
  weights per channel or per tensor, conv+bn folded, conv/linear fused with their relu/add),
  calibrate on ``calibration_batches`` training batches, ``convert_pt2e``. The result is an
  ``fx.GraphModule`` of quantize/dequantize + fp32 ops: the *reference* int8 graph. It is fast
  only once ``torch.compile`` runs under ``inference_mode`` with Inductor freezing, which
  pattern-matches dq -> conv/linear -> q into oneDNN int8 kernels (per-channel weights only:
  with ``per_channel: false`` the weights are stored int8 per tensor but Inductor runs them as
  dequantize + fp32 conv).
- ``qat``: the same graph exported in train mode, ``prepare_qat_pt2e`` (fake-quant, conv+bn
  simulated), fine-tuned by the project's one training loop (:func:`pipelines.training.loop.fit`),
  then converted. Exported graphs refuse ``.train()``/``.eval()``; :func:`allow_train_eval` maps
  them onto the dropout/batch-norm rewrites of torchao's ``move_exported_model_to_train/eval``,
  so ``fit`` works unchanged.
- ``dynamic``: torchao ``Int8DynamicActivationInt8WeightConfig`` on ``nn.Linear`` (weights int8
  per row, activations quantized per token at run time); the model stays an ``nn.Module``.

Why strict export: non-strict export leaves no ``source_fn_stack`` on nodes, so partitions are
grouped by module; a block that calls one ``nn.ReLU`` twice (torchvision's plain BasicBlock)
then gives one partition with two outputs and the conv+add+relu annotator raises "Input
partition has more than one output node". If the quantizer still refuses a pattern, we retry
with the refusing fusion annotators skipped and :func:`fp32_layers` reports what stayed fp32.

Persistence of the converted graph (torch.export's archive, no pickle) is
:mod:`pipelines.compression.quantize.program`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import os
import re
import sys
import types
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import fx, nn

from pipelines.compression.quantize.small_spatial import convs_as_linear
from pipelines.core.config import QuantizeConfig
from pipelines.core.errors import QuantizeError, first_line
from pipelines.core.kinds import is_pt2e
from pipelines.core.pt2e_graph import ADD, CONV_LINEAR, dequant_ops, weight_quantized

EPS = 2**-12  # torchao's default observer eps for the x86 config
MAX_BATCH = 1 << 16
EXAMPLE_KEY = "pt2e_example"
REPORT_KEY = "pt2e_report"
FLOAT_GRAPH_KEY = "pt2e_float_graph"  # the float graph a converted one came from (numeric debugger)


# --- export and quantizer -------------------------------------------------------------------------

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')


def export_failure(exc: BaseException) -> str:
    """One line for a model ``torch.export`` cannot capture: the graph break or unsupported op
    (the error's first line) and where it is in the model's code (the last frame outside torch)."""
    text = str(exc)
    what = f"{type(exc).__name__}: {first_line(exc, 160)}"
    torch_dir = os.path.dirname(torch.__file__)
    frames = [m for m in _FRAME.finditer(text) if not m.group(1).startswith(torch_dir)]
    where = ""
    if frames:
        path, line, func, code = frames[-1].groups()
        where = f" at {path}:{line} in {func}" + (f" (`{code.strip()[:80]}`)" if code.strip() else "")
    return (f"quantize.engine: pt2e needs torch.export, which cannot capture this model ({what}{where}); "
            "make that code exportable, or use quantize.method: dynamic or none")


def allow_train_eval(model: fx.GraphModule) -> fx.GraphModule:
    """Let ``model.train()``/``model.eval()`` work on an exported graph (torchao's
    ``move_exported_model_to_train/eval``: dropout and batch-norm rewrites) and return the model,
    as ``nn.Module`` does, so ``Loaded(model.eval())`` and the training loop behave as usual."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    def train(self, mode: bool = True):
        (move_exported_model_to_train if mode else move_exported_model_to_eval)(self)
        return self

    def eval(self):
        move_exported_model_to_eval(self)
        return self

    model.train = types.MethodType(train, model)  # type: ignore[method-assign]
    model.eval = types.MethodType(eval, model)  # type: ignore[method-assign]
    return model


def dynamic_batch() -> tuple[dict[int, Any], ...]:
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


def export(model: nn.Module, example: torch.Tensor, strict: bool = True) -> fx.GraphModule:
    """``torch.export`` with a dynamic batch dimension (calibration, evaluation and benchmark
    batches differ in size), as an ``fx.GraphModule``.

    On a data-dependent branch torch.export prints the partial graph to stderr before raising;
    that dump is dropped (the error itself, which :func:`export_failure` turns into one line,
    names the code). Whatever it writes to stderr on success is passed through."""
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        program = torch.export.export(model, (example,), dynamic_shapes=dynamic_batch(), strict=strict)
    sys.stderr.write(captured.getvalue())
    return program.module()


def _as_linear(model: nn.Module, graph: fx.GraphModule, example: torch.Tensor) -> tuple[fx.GraphModule, list[str]]:
    """:func:`small_spatial.convs_as_linear` on ``model``'s strictly exported ``graph``,
    re-exported strictly (which records the source functions the quantizer finds the new linear
    layers by); if that fails, ``model`` exported afresh, unrewritten."""
    rewritten = convs_as_linear(graph)
    if not rewritten:
        return graph, []
    try:
        return export(graph, example, strict=True), rewritten
    except Exception as exc:  # noqa: BLE001 - the rewrite is an optimisation: without it the model still quantizes
        warnings.warn(f"pt2e: convs_as_linear left out, the rewritten graph did not re-export "
                      f"({type(exc).__name__}: {first_line(exc, 120)})", RuntimeWarning, stacklevel=3)
        return export(model, example, strict=True), []


def quantization_config(observer: str, per_channel: bool, qat: bool):
    """torchao's x86 default config with our observer and weight granularity.

    QAT uses moving-average min/max fake-quant for activations whatever ``observer`` says (as
    the eager engine does); ``per_channel: false`` gives per-tensor symmetric int8 weights."""
    from torchao.quantization.pt2e import FusedMovingAvgObsFakeQuantize, MinMaxObserver, MovingAverageMinMaxObserver
    from torchao.quantization.pt2e.quantizer import QuantizationConfig
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import get_default_x86_inductor_quantization_config

    base = get_default_x86_inductor_quantization_config(is_qat=qat)
    act, weight = base.input_activation, base.weight
    if not qat and observer == "minmax":
        act = dataclasses.replace(act, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=EPS))
    if not per_channel:
        ctr = (FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, eps=EPS) if qat
               else MinMaxObserver.with_args(eps=EPS))
        weight = dataclasses.replace(weight, qscheme=torch.per_tensor_symmetric, ch_axis=None,
                                     observer_or_fake_quant_ctr=ctr)
    return QuantizationConfig(act, act, weight, base.bias, base.is_qat)


# The fusion annotators that can refuse a partition; the tolerant quantizer skips one that does
# and lets the simpler annotators (conv alone, linear alone) take the nodes.
_FUSION_ANNOTATORS = (
    "_annotate_qat_conv2d_bn_binary_unary", "_annotate_qat_conv2d_bn_binary", "_annotate_qat_conv2d_bn_unary",
    "_annotate_conv2d_binary_unary", "_annotate_conv2d_binary", "_annotate_conv2d_unary",
    "_annotate_linear_binary_unary", "_annotate_linear_unary",
)


def _quantizer(config, tolerant: bool, keep: Sequence[str] = ()):
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

    if not tolerant:
        quantizer = X86InductorQuantizer().set_global(config)
        for name in keep:  # layers left out of int8 (input and weight): the accuracy budget's fallbacks
            quantizer.set_module_name_qconfig(name, None)
        return quantizer

    class TolerantX86InductorQuantizer(X86InductorQuantizer):
        skipped: list[str]

    def wrap(name: str):
        original = getattr(X86InductorQuantizer, name)

        def annotate(self, *args, **kwargs):
            try:
                return original(self, *args, **kwargs)
            except ValueError as exc:
                self.skipped.append(f"{name.removeprefix('_annotate_')}: {first_line(exc, 120)}")
                return None

        return annotate

    for name in _FUSION_ANNOTATORS:
        if hasattr(X86InductorQuantizer, name):
            setattr(TolerantX86InductorQuantizer, name, wrap(name))
    quantizer = TolerantX86InductorQuantizer().set_global(config)
    for name in keep:
        quantizer.set_module_name_qconfig(name, None)
    quantizer.skipped = []
    return quantizer


class Bf16(nn.Module):
    """A layer the accuracy budget keeps in bf16 (``quantize.fallback: bf16``): bf16 weights and
    compute, fp32 in and out, so the int8 graph around it is unchanged."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer.to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.to(torch.bfloat16)).float()


def _in_bf16(model: nn.Module, names: Sequence[str]) -> nn.Module:
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, Bf16(getattr(owner, child)))
    return model


def prepare(model: nn.Module, example: torch.Tensor, cfg: QuantizeConfig, qat: bool = False,
            strict: bool = True, keep: Sequence[str] = (), keep_dtype: str = "fp32"
            ) -> tuple[fx.GraphModule, dict[str, Any]]:
    """Export + annotate + insert observers (or fake-quant), with the fallbacks described above.
    ``keep``: layers (module names) left out of int8, in fp32 or (``keep_dtype: bf16``) bf16."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    model = copy.deepcopy(model).cpu()
    if keep_dtype == "bf16":
        model = _in_bf16(model, keep)
    model.train() if qat else model.eval()
    example = example.cpu()
    report: dict[str, Any] = {"export": "strict" if strict else "non-strict", "skipped_patterns": []}
    try:
        graph = export(model, example, strict)
    except Exception as exc:  # noqa: BLE001 - dynamo could not trace it: non-strict export instead
        if not strict:
            raise QuantizeError(export_failure(exc)) from None
        try:
            graph = export(model, example, strict=False)
        except Exception:  # noqa: BLE001 - neither way: the strict error names the graph break best
            raise QuantizeError(export_failure(exc)) from None
        warnings.warn(f"pt2e: strict torch.export failed ({type(exc).__name__}: {first_line(exc, 160)}); "
                      "exported non-strict", RuntimeWarning, stacklevel=2)
        strict = False
        report["export"] = "non-strict"
    # QAT trains its batch norms (nothing to fold yet); a non-strict graph re-exported strictly
    # loses the module-level source functions its annotation depends on
    rewrite = cfg.convs_as_linear and not qat and strict
    graph, report["convs_as_linear"] = _as_linear(model, graph, example) if rewrite else (graph, [])
    report["float_graph"] = None if qat else copy.deepcopy(graph)
    config = quantization_config(cfg.observer, cfg.per_channel, qat)
    insert_observers = prepare_qat_pt2e if qat else prepare_pt2e
    try:
        prepared = insert_observers(graph, _quantizer(config, tolerant=False, keep=keep))
    except ValueError as exc:  # a fusion pattern the quantizer refuses: annotate without it
        warnings.warn(f"pt2e: quantizer refused a pattern ({first_line(exc, 160)}); retrying with the "
                      "refusing fusion annotators skipped, see fp32_layers", RuntimeWarning, stacklevel=2)
        quantizer = _quantizer(config, tolerant=True, keep=keep)
        graph = export(model, example, strict)  # fresh graph: no stale annotations
        graph = _as_linear(model, graph, example)[0] if rewrite else graph
        prepared = insert_observers(graph, quantizer)
        report["skipped_patterns"] = list(quantizer.skipped)
    (move_exported_model_to_train if qat else move_exported_model_to_eval)(prepared)
    allow_train_eval(prepared)
    return prepared, report


def _converted(prepared: fx.GraphModule, example: torch.Tensor, report: dict[str, Any]) -> fx.GraphModule:
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    prepared = prepared.cpu()
    move_exported_model_to_eval(prepared)
    model = convert_pt2e(prepared)
    move_exported_model_to_eval(model)
    strip_unused(model)
    allow_train_eval(model)
    model.meta[EXAMPLE_KEY] = example[:2].detach().cpu().clone()
    if report.get("float_graph") is not None:
        model.meta[FLOAT_GRAPH_KEY] = report["float_graph"]
    model.meta[REPORT_KEY] = {k: v for k, v in report.items() if k != "float_graph"}
    return model


def strip_unused(model: fx.GraphModule) -> fx.GraphModule:
    """Drop parameters and buffers no ``get_attr`` node reads (``convert_pt2e`` keeps the fp32
    originals of the weights it folded into int8 constants)."""
    used = {node.target for node in model.graph.nodes if node.op == "get_attr"}
    for name, _ in [*model.named_parameters(), *model.named_buffers()]:
        if name not in used:
            owner, _, leaf = name.rpartition(".")
            delattr(model.get_submodule(owner) if owner else model, leaf)
    return model


# --- the three methods ----------------------------------------------------------------------------

@torch.no_grad()
def _calibrate(prepared: fx.GraphModule, batches: Iterable[torch.Tensor], limit: int) -> int:
    from pipelines.compression.quantize.eager import calibrate

    return calibrate(prepared, (x.cpu() for x in batches), limit)


def quantize_static(model: nn.Module, batches: Iterable[torch.Tensor], cfg: QuantizeConfig,
                    example: torch.Tensor, strict: bool = True, keep: Sequence[str] = (),
                    keep_dtype: str = "fp32") -> fx.GraphModule:
    prepared, report = prepare(model, example, cfg, qat=False, strict=strict, keep=keep, keep_dtype=keep_dtype)
    report["calibration_batches"] = _calibrate(prepared, batches, cfg.calibration_batches)
    return _converted(prepared, example, report)


def quantize_qat(model: nn.Module, cfg: QuantizeConfig, example: torch.Tensor,
                 finetune: Callable[[nn.Module], None], strict: bool = True) -> fx.GraphModule:
    """Fake-quant fine-tune of the exported graph with ``finetune(prepared)`` (the shared
    training loop: its ``model.train()``/``model.eval()`` calls work on the prepared graph)."""
    prepared, report = prepare(model, example, cfg, qat=True, strict=strict)
    finetune(prepared)
    return _converted(prepared, example, report)


def quantize_dynamic(model: nn.Module) -> nn.Module:
    """torchao int8 dynamic-activation / int8-weight on every ``nn.Linear`` (an ``nn.Module`` whose
    Linear weights become torchao ``Int8Tensor``; its state_dict loads with weights_only)."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    model = copy.deepcopy(model).cpu().eval()
    # set_inductor_config=False: no process-wide Inductor settings changed behind the benchmark's back.
    quantize_(model, Int8DynamicActivationInt8WeightConfig(set_inductor_config=False))
    return model


# --- what stayed fp32 -----------------------------------------------------------------------------

def _layer_name(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path = list(stack.values())[-1][0]
        if path:
            return f"{path} ({node.name})"
    return node.name


def _graph_fp32_layers(model: fx.GraphModule) -> list[str]:
    out = []
    quantized_compute: set[fx.Node] = set()
    for node in model.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target in CONV_LINEAR:
            if weight_quantized(node):
                quantized_compute.add(node)
            else:
                out.append(_layer_name(node))
        elif node.target in ADD:
            inputs = [a for a in node.args if isinstance(a, fx.Node)]
            ok = all(a in quantized_compute or (a.op == "call_function" and a.target in dequant_ops()) for a in inputs)
            if ok:
                quantized_compute.add(node)  # fused conv/linear + add: int8 in, int8 out
            else:
                out.append(_layer_name(node))
    return out


def _module_fp32_layers(model: nn.Module) -> list[str]:
    out = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            weight = module.weight
            if type(weight) in (torch.Tensor, nn.Parameter) and not weight.is_quantized:
                out.append(name)
    return out


def fp32_layers(model: nn.Module) -> list[str]:
    """Conv/linear (and, in PT2E graphs, residual add) layers that still compute in fp32.

    PT2E graph: a conv/linear whose weight is not produced by a dequantize node, or an add whose
    inputs are not all int8 (dequantized or a fused int8 conv/linear). Eager module: float
    ``nn.Conv*``/``nn.Linear`` left by conversion (e.g. the convolutions under dynamic int8)."""
    return _graph_fp32_layers(model) if is_pt2e(model) else _module_fp32_layers(model)


def quantize_ops(model: nn.Module) -> dict[str, int]:
    """How many quantize / dequantize ops the PT2E graph holds, by op name."""
    counts: dict[str, int] = {}
    if is_pt2e(model):
        for node in model.graph.nodes:
            if node.op == "call_function" and getattr(node.target, "namespace", "") == "quantized_decomposed":
                name = node.target.name().split("::")[-1].split(".")[0]
                counts[name] = counts.get(name, 0) + 1
    return counts
