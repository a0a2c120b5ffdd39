"""Deploy targets: the runtimes a user ships a model on, built from the chain's PyTorch models.

=============  ======================================================================  =================
runtime        what runs                                                              deploy artifact
=============  ======================================================================  =================
``ort-fp32``   ONNX Runtime (CPU provider) on the fp32 ONNX export                      ``<model>.onnx``
``ort-int8``   ONNX Runtime on a static QDQ int8 model (``quantize_static``, per-channel) ``<model>.int8.onnx``
``ov-fp32``    OpenVINO CPU on the ONNX export, ``INFERENCE_PRECISION_HINT=f32``         ``<model>.onnx``
``ov-bf16``    the same with ``INFERENCE_PRECISION_HINT=bf16`` (CPUs with native bf16)   ``<model>.onnx``
``ov-int8``    OpenVINO CPU on NNCF's PTQ int8 model                                     ``<model>.int8.xml/.bin``
``aoti``       AOTInductor package: ahead-of-time compiled, C++ runner, no Python        ``<model>.pt2``
               (PT2E int8: one static package per batch size)                          ``<model>.bs<N>.pt2``
``ts-int8``    TorchScript of torch.ao static int8 on fbgemm (:mod:`.torchscript`):     ``<model>.int8.ts``
               the PyTorch-native path with the least per-call overhead at batch 1
=============  ======================================================================  =================

Every float model is exported once (:mod:`.export`: dynamo exporter, dynamic batch, checked
against PyTorch in ONNX Runtime); the fp32/bf16 runtimes run that file. The int8 runtimes
quantize a *float* model with the runtime's own PTQ (``ts-int8``: torch.ao's) on the calibration batches the pipeline's PTQ
used; for an int8 model of the chain (the ``quantized`` stage's output) they start from its fp32
source (the model the quantize stage started from), so the final model's int8 rows compare int8
engines on the same weights and the same calibration data. fp32/bf16 runtimes are for float
models only (an int8 model's float form is its source's row).

``convert_s`` (reported as ``compile_time_s``) is what a user pays to get from the PyTorch model to
a running session: ONNX export (shared by a model's runtimes, counted in each), quantization,
conversion and compilation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pipelines.compression.quantize.eager import activation_bits
from pipelines.core.cpu import bf16_missing
from pipelines.core.errors import error_line
from pipelines.core.kinds import is_pt2e, is_quantized
from pipelines.core.params_base import usable_threads
from pipelines.measurement.accuracy import runtime_accuracy
from pipelines.measurement.deploy import aoti, eager_budget, ort, ov, torchscript
from pipelines.measurement.deploy.budget import DeployBudget, layer_nodes
from pipelines.measurement.deploy.export import export_onnx

__all__ = ["DEPLOY_RUNTIMES", "DeployBudget", "Deployed", "Deployer", "DeploySettings", "aoti", "applies", "bf16_missing", "exact",
           "export_chain", "import_libraries", "ort", "ov", "per_batch", "skip_reason", "torchscript"]

DEPLOY_RUNTIMES = ("ort-fp32", "ort-int8", "ov-fp32", "ov-bf16", "ov-int8", "aoti", "ts-int8")
INT8_RUNTIMES = ("ort-int8", "ov-int8", "ts-int8")
FLOAT_RUNTIMES = ("ort-fp32", "ov-fp32", "ov-bf16")


def applies(runtime: str, int8_model: bool) -> bool:
    """Whether ``runtime`` has a row for a model (fp32/bf16 runtimes: float models only)."""
    return not (int8_model and runtime in FLOAT_RUNTIMES)


def per_batch(runtime: str, int8_model: bool) -> bool:
    """Whether the runtime builds one artifact per batch size (AOTInductor of a PT2E int8 graph:
    static shapes, see :mod:`.aoti`) rather than one for every batch size."""
    return runtime == "aoti" and int8_model


def exact(runtime: str, int8_model: bool) -> bool:
    """Whether the runtime computes what the PyTorch model does up to fp32 rounding (checked with
    a tight tolerance); bf16 and int8 rows are judged by their measured accuracy instead."""
    return runtime in ("ort-fp32", "ov-fp32") or (runtime == "aoti" and not int8_model)


@dataclass
class Deployed:
    fn: Callable[[torch.Tensor], torch.Tensor] | None
    convert_s: float = float("nan")
    artifacts: list[Path] = field(default_factory=list)
    note: str = ""
    error: str = ""
    skipped: str = ""

    @property
    def artifact(self) -> str:
        return str(self.artifacts[0]) if self.artifacts else ""

    @property
    def artifact_mb(self) -> float | str:
        return sum(p.stat().st_size for p in self.artifacts) / 1e6 if self.artifacts else ""


@dataclass(frozen=True)
class DeploySettings:
    """``num_threads``: every runtime's thread count (``benchmark.num_threads``); ``calibration``:
    the PTQ calibration batches; ``directory``: where the artifacts go; ``budget``: the quantize
    stage's accuracy budget, applied to the int8 runtimes of an int8 model (:mod:`.budget`)."""

    num_threads: int
    calibration: Sequence[torch.Tensor]
    directory: Path
    budget: DeployBudget | None = None


class Deployer:
    """Builds the deploy runtimes of a set of models, exporting each float model once."""

    def __init__(self, settings: DeploySettings) -> None:
        self.settings = settings
        self._exports: dict[str, tuple[Path, float, float]] = {}   # name -> (onnx, export_s, diff)
        self._int8_onnx: dict[tuple[str, bool], tuple[Path, float]] = {}    # (name, budgeted) -> ...
        self._ov_int8: dict[tuple[str, bool], tuple[list[Path], float]] = {}
        self.budget_notes: dict[tuple[str, str], str] = {}  # (runtime, source name) -> what the budget did

    def path(self, name: str, suffix: str) -> Path:
        return Path(self.settings.directory) / f"{name}{suffix}"

    # --- artifacts, each built once -------------------------------------------------------------

    def onnx(self, name: str, model: nn.Module, example: torch.Tensor) -> tuple[Path, float, float]:
        """The fp32 ONNX export of a float model: (path, seconds, max abs diff vs PyTorch)."""
        if name not in self._exports:
            done = export_onnx(model, example, self.path(name, ".onnx"))
            self._exports[name] = (done.path, done.seconds, done.max_abs_diff)
        return self._exports[name]

    def ort_int8(self, name: str, model: nn.Module, example: torch.Tensor,
                 budgeted: bool = False) -> tuple[Path, float]:
        """``budgeted``: leave the budget's layers (:attr:`DeploySettings.budget`) in fp32."""
        budget = self.settings.budget if budgeted else None
        key = (name, budget is not None)
        if key not in self._int8_onnx:
            fp32, export_s, _ = self.onnx(name, model, example)
            start = time.perf_counter()
            exclude: list[str] = []
            if budget is not None:
                mapped, unmapped = layer_nodes(fp32, budget.layers)
                exclude = [node for nodes in mapped.values() for node in nodes]
                self.budget_notes[("ort-int8", name)] = (
                    f"accuracy budget {budget.max_drop_pp:g} pp: {len(budget.layers)} layer(s) kept in fp32 by the "
                    f"quantize stage, excluded here as ONNX nodes {exclude or 'none'}"
                    + (f"; NOT mapped: {', '.join(unmapped)}" if unmapped else ""))
            out = ort.quantize_int8(fp32, self.path(name, ".budget.int8.onnx" if budget else ".int8.onnx"),
                                    self.settings.calibration, exclude)
            self._int8_onnx[key] = (out, export_s + time.perf_counter() - start)
        return self._int8_onnx[key]

    def ov_int8(self, name: str, model: nn.Module, example: torch.Tensor,
                budgeted: bool = False) -> tuple[list[Path], float]:
        """``budgeted``: NNCF's accuracy control with the same budget on the same validation images."""
        budget = self.settings.budget if budgeted else None
        key = (name, budget is not None)
        if key not in self._ov_int8:
            fp32, export_s, _ = self.onnx(name, model, example)
            start = time.perf_counter()
            if budget is None:
                int8 = ov.quantize_int8(ov.read_onnx(fp32), self.settings.calibration)
            else:
                int8 = ov.quantize_int8_controlled(ov.read_onnx(fp32), self.settings.calibration, budget.val,
                                                   budget.max_drop_pp)
                kept = ov.float_compute_ops(int8)
                self.budget_notes[("ov-int8", name)] = (
                    f"NNCF accuracy control, max drop {budget.max_drop_pp:g} pp on {len(budget.val[1])} validation "
                    f"images: {len(kept)} conv/matmul op(s) kept in float{f' ({kept})' if kept else ''}")
            files = ov.save_ir(int8, self.path(name, ".budget.int8.xml" if budget else ".int8.xml"))
            self._ov_int8[key] = (files, export_s + time.perf_counter() - start)
        return self._ov_int8[key]

    # --- runtimes -------------------------------------------------------------------------------

    def build(self, runtime: str, name: str, model: nn.Module, example: torch.Tensor, int8_model: bool = False,
              source: tuple[str, nn.Module] | None = None) -> Deployed:
        """``runtime`` for the chain model ``name``. An int8 model's int8 runtimes start from
        ``source`` = (name, fp32 model). Failures and missing CPU features come back as
        ``error`` / ``skipped``, never as exceptions."""
        if reason := skip_reason(runtime):
            return Deployed(None, skipped=reason)
        if len(example) < 2 and not per_batch(runtime, int8_model):  # export specialises a batch of 1: keep it dynamic
            example = example.expand(2, *example.shape[1:]).contiguous()
        try:
            return self._build(runtime, name, model, example, int8_model, source)
        except Exception as exc:  # noqa: BLE001 - a model a runtime refuses is a row, not a crash
            return Deployed(None, error=error_line(exc))

    def _build(self, runtime, name, model, example, int8_model, source) -> Deployed:
        if runtime == "ts-int8":
            return self._torchscript(name, model, example, int8_model, source)
        if runtime == "aoti":
            if int8_model and not is_pt2e(model):
                return Deployed(None, skipped=aoti.EAGER_INT8_REASON)
            start = time.perf_counter()
            if int8_model:  # one static package per batch size, int8 kernels
                path = aoti.package(model, example, self.path(name, f".bs{len(example)}.pt2"), static=True)
                fn = aoti.Padded(aoti.load(path), len(example))
            else:
                path = aoti.package(model, example, self.path(name, ".pt2"))
                fn = aoti.load(path)
            return Deployed(fn, time.perf_counter() - start, [path], aoti.PT2E_INT8_NOTE if int8_model else "")
        note = ""
        if runtime in INT8_RUNTIMES and int8_model:
            if source is None:
                return Deployed(None, error="an int8 model needs its fp32 source for runtime PTQ")
            note = (f"{'ONNX Runtime' if runtime == 'ort-int8' else 'NNCF'} PTQ of {source[0]} (the fp32 model "
                    "the quantize stage started from) on the same calibration batches")
            name, model = source
        budgeted = runtime in INT8_RUNTIMES and int8_model
        if runtime == "ort-int8":
            path, prior = self.ort_int8(name, model, example, budgeted)
            files = [path]
        elif runtime == "ov-int8":
            files, prior = self.ov_int8(name, model, example, budgeted)
        else:
            path, prior, _ = self.onnx(name, model, example)
            files = [path]
        note = "; ".join(n for n in (note, self.budget_notes.get((runtime, name), "")) if n)
        start = time.perf_counter()
        fn = self._session(runtime, files[0])
        return Deployed(fn, prior + time.perf_counter() - start, files, note)

    def _torchscript(self, name, model, example, int8_model, source) -> Deployed:
        notes = []
        if int8_model:
            if source is None:
                return Deployed(None, error="an int8 model needs its fp32 source for runtime PTQ")
            notes.append(f"torch.ao PTQ of {source[0]} (the fp32 model the quantize stage started from) on the "
                         "same calibration batches")
            name, model = source
        if not torchscript.applies(model):
            return Deployed(None, skipped=torchscript.NOT_EAGER_REASON)
        budget = self.settings.budget if int8_model else None
        start = time.perf_counter()
        path = self.path(name, ".budget.int8.ts" if budget else ".int8.ts")
        if budget is not None:  # torch.ao's own accuracy control (:mod:`.eager_budget`), as NNCF's for ov-int8
            best = eager_budget.fit(model, self.settings.calibration, budget.val, budget.max_drop_pp,
                                    budget.max_layers, torchscript.ENGINE).best
            int8, keep = best.model, list(best.kept)
        else:
            int8, keep = torchscript.int8_module(model, self.settings.calibration), []
        torchscript.save(torchscript.traced(int8, example), path)
        notes.append(f"{activation_bits('auto')}-bit activations (quantize.eager_activation_bits: auto on this CPU)")
        fn = torchscript.load(path)
        if budget is not None:
            notes.append(self._ts_budget(model, fn, keep, budget))
        return Deployed(fn, time.perf_counter() - start, [path], "; ".join([*notes, torchscript.NOTE]))

    @staticmethod
    def _ts_budget(model: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], keep: list[str],
                   budget: DeployBudget) -> str:
        """What the budget did to the written archive, validated on the budget's images."""
        images, labels = budget.val
        batch = min(len(images), 256)
        pp = 100 * (runtime_accuracy(model, images, labels, batch) - runtime_accuracy(fn, images, labels, batch))
        met = "met" if pp <= budget.max_drop_pp else "NOT met"
        return (f"accuracy budget {budget.max_drop_pp:g} pp, torch.ao's own accuracy control: {len(keep)} layer(s) "
                f"kept in fp32{f' ({keep})' if keep else ''}, val drop {pp:+.2f} pp on {len(labels)} images, {met}")

    def _session(self, runtime: str, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        """The runtime's session in its serving configuration (see :mod:`.ort`, :mod:`.ov`)."""
        n = usable_threads(self.settings.num_threads)
        if runtime.startswith("ort-"):
            return ort.Session(path, n, spinning=True)
        model = ov.read_ir(path) if path.suffix == ".xml" else ov.read_onnx(path)
        return ov.Compiled(model, "bf16" if runtime == "ov-bf16" else "f32", n)


def export_chain(deployer: Deployer, models: dict[str, nn.Module], sources: dict[str, str],
                 example: torch.Tensor, only: Sequence[str] | None = None) -> dict[str, dict]:
    """Every model (or those named in ``only``) as ONNX: a float model's fp32 export, an int8
    model's ONNX Runtime int8 (QDQ) model built from its fp32 source (in ``models``). Per model:
    ``file``, ``files`` (to log), ``max_abs_diff`` (fp32 exports vs PyTorch), ``error`` (one line;
    the other models are still exported)."""
    out: dict[str, dict] = {}
    for name, model in models.items():
        if only is not None and name not in only:
            continue
        try:
            if is_quantized(model):
                source = sources[name]
                path, _ = deployer.ort_int8(source, models[source], example, budgeted=True)
                out[name] = {"file": str(path), "files": [path], "from": source}
            else:
                path, seconds, diff = deployer.onnx(name, model, example)
                out[name] = {"file": str(path), "files": [path], "max_abs_diff": diff, "export_s": seconds}
        except Exception as exc:  # noqa: BLE001 - a model the exporter refuses is reported, not a crash
            out[name] = {"error": error_line(exc)}
    return out


_LIBRARIES = {"ort": ("onnx", "onnxscript", "onnxruntime", "onnxruntime.quantization"),
              "ov": ("onnx", "onnxscript", "onnxruntime", "openvino", "nncf"), "aoti": ("torch._inductor",)}


def import_libraries(runtimes: Sequence[str]) -> None:
    """Import what ``runtimes`` use now, so no row's ``convert_s`` pays a library's import."""
    import importlib

    for runtime in runtimes:
        for module in _LIBRARIES.get(runtime.split("-")[0], ()):
            importlib.import_module(module)


def skip_reason(runtime: str) -> str:
    """Why a deploy target cannot run on this machine (``""``: it runs)."""
    if runtime == "ov-bf16":
        return ov.bf16_missing()
    return ""
