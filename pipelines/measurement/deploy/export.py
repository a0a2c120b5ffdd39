"""A float PyTorch model as an ONNX file: ``torch.onnx.export`` with the dynamo exporter
(``torch.export`` underneath), the batch dimension dynamic, graph optimised by onnxscript
(eval-mode batch norm folded into the convolutions), then run in ONNX Runtime and checked
against the PyTorch output on the same input."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipelines.core.io import atomic_write
from pipelines.measurement.deploy import ort

MAX_BATCH = 1 << 16
FP32_RTOL = 1e-4  # ONNX Runtime's fp32 kernels reassociate sums: agreement to ~1e-6 of the output scale


@dataclass(frozen=True)
class Exported:
    path: Path
    seconds: float           # export + check
    max_abs_diff: float      # ONNX Runtime vs PyTorch on the check input


class ExportMismatch(RuntimeError):
    """The exported graph computes something else than the PyTorch model."""


def tolerance(reference: torch.Tensor, rtol: float = FP32_RTOL) -> float:
    return rtol * (1.0 + float(reference.abs().max()))


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> Exported:
    """Export ``model`` (eval mode, float) to ``path``; raises :class:`ExportMismatch` when ONNX
    Runtime's output on ``example`` differs from PyTorch's by more than :func:`tolerance`."""
    start = time.perf_counter()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=({0: batch},),
                                    optimize=True, verbose=False)
    path = atomic_write(path, lambda tmp: program.save(str(tmp)))
    with torch.inference_mode():
        reference = model(example)
    out = ort.Session(path, num_threads=torch.get_num_threads())(example)
    diff = float((out - reference).abs().max())
    if not diff <= tolerance(reference):
        raise ExportMismatch(f"ONNX export differs from PyTorch: max abs diff {diff:.3g} > {tolerance(reference):.3g}")
    return Exported(path, time.perf_counter() - start, diff)
