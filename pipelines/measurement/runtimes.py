"""Runtimes (``benchmark.runtimes``): how a model is run when it is timed.

- ``eager``: the module as it is.
- ``compile-<mode>`` (``default``, ``reduce-overhead``, ``max-autotune``): ``torch.compile``, see
  :mod:`pipelines.measurement.compile`.
- ``compile-<mode>-fp16`` / ``-bf16``: added automatically when CUDA is present, for float models
  only: the model on the GPU, compiled the same way, run under ``torch.autocast`` (Tensor Cores).
- ``eager-cpu-bf16`` / ``compile-<mode>-cpu-bf16``: float models on the CPU under
  ``torch.autocast("cpu", bfloat16)`` (oneDNN bf16 kernels, AMX where present); skipped with the
  reason on a CPU without native bf16 (:mod:`pipelines.core.cpu`).
- deploy targets ``ort-fp32``, ``ort-int8``, ``ov-fp32``, ``ov-bf16``, ``ov-int8``, ``aoti``
  (ONNX Runtime, OpenVINO, AOTInductor): built by :mod:`pipelines.measurement.deploy` and timed in
  the same measurement, in blocks (:mod:`pipelines.measurement.timing`), every runtime on
  ``benchmark.num_threads`` threads in its serving configuration (:func:`serving_note`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipelines.core.kinds import is_quantized
from pipelines.measurement.deploy import DEPLOY_RUNTIMES, applies

RUNTIME_MODES = {
    "compile-default": "default",
    "compile-reduce-overhead": "reduce-overhead",
    "compile-max-autotune": "max-autotune",
}
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
CPU_BF16 = "-cpu-bf16"  # eager-cpu-bf16, compile-<mode>-cpu-bf16


@dataclass(frozen=True)
class Runtime:
    name: str
    mode: str | None = None            # torch.compile mode; None = eager
    amp: torch.dtype | None = None     # autocast dtype
    amp_device: str = "cuda"           # where autocast rows run: CUDA, or the CPU's bf16 rows
    deploy: bool = False               # a deploy target (pipelines.measurement.deploy), not PyTorch

    @property
    def device(self) -> str:
        return self.amp_device if self.amp is not None else "cpu"


def parse_runtime(name: str) -> Runtime:
    """``eager``, ``compile-<mode>``, ``compile-<mode>-fp16|bf16`` (CUDA), ``eager-cpu-bf16``,
    ``compile-<mode>-cpu-bf16`` or a deploy target (``ort-int8``, ...)."""
    if name == "eager":
        return Runtime(name)
    if name in DEPLOY_RUNTIMES:
        return Runtime(name, deploy=True)
    if name.endswith(CPU_BF16) and (base := name.removesuffix(CPU_BF16)) in ("eager", *RUNTIME_MODES):
        return Runtime(name, RUNTIME_MODES.get(base), torch.bfloat16, "cpu")
    base, _, suffix = name.rpartition("-")
    if suffix in AMP_DTYPES and base in RUNTIME_MODES:
        return Runtime(name, RUNTIME_MODES[base], AMP_DTYPES[suffix])
    if name in RUNTIME_MODES:
        return Runtime(name, RUNTIME_MODES[name])
    allowed = ["eager", *RUNTIME_MODES, *(f"{m}-{s}" for m in RUNTIME_MODES for s in AMP_DTYPES),
               *(f"{m}{CPU_BF16}" for m in ("eager", *RUNTIME_MODES)), *DEPLOY_RUNTIMES]
    raise ValueError(f"unknown runtime {name!r}; allowed: {', '.join(allowed)}")


def cuda_amp_dtypes() -> list[str]:
    """Autocast dtypes this machine's GPU runs on Tensor Cores ([] without CUDA)."""
    if not torch.cuda.is_available():
        return []
    return ["fp16", "bf16"] if torch.cuda.is_bf16_supported() else ["fp16"]


def expand_runtimes(runtimes: list[str], amp: list[str] | None = None) -> list[str]:
    """The configured runtimes plus, for each ``compile-*`` one, its autocast variants
    (``amp`` defaults to :func:`cuda_amp_dtypes`, i.e. none on a CPU-only machine)."""
    amp = cuda_amp_dtypes() if amp is None else amp
    out = list(dict.fromkeys(runtimes))
    for runtime in list(out):
        if runtime in RUNTIME_MODES:
            out += [f"{runtime}-{suffix}" for suffix in amp if f"{runtime}-{suffix}" not in out]
    return out


def runtimes_for(model: nn.Module, runtimes: list[str]) -> list[str]:
    """Autocast and fp32/bf16 deploy rows make sense for float models only; int8 models keep the rest."""
    if not is_quantized(model):
        return list(runtimes)
    return [r for r in runtimes if parse_runtime(r).amp is None and applies(r, int8_model=True)]


def openmp_library() -> str:
    """The OpenMP runtime PyTorch loaded (GNU ``libgomp`` in the pip wheels, Intel ``libiomp5``
    in some builds), from the process's memory map; ``"OpenMP"`` where that cannot be read."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "OpenMP"
    return next((lib for lib in ("libiomp5", "libgomp") if lib in maps), "OpenMP")


def pytorch_serving() -> str:
    """PyTorch's threading as it runs now, for a row's ``note``: intra-op threads and the OpenMP
    runtime's wait policy (``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` / ``KMP_BLOCKTIME`` when set,
    else the runtime's default: spin a while after a parallel region, then sleep)."""
    env = [f"{key}={os.environ[key]}" for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
           if key in os.environ]
    return (f"PyTorch: {torch.get_num_threads()} intra-op threads, {openmp_library()} "
            f"{', '.join(env) if env else 'default wait policy (spins, then sleeps)'}")


def serving_note(rt: Runtime, fn: Callable | None, batch_size: int) -> str:
    """How the row's runtime is configured to serve: a deploy session's own description
    (ONNX Runtime, OpenVINO), PyTorch's threading for the rest (AOTInductor included)."""
    describe = getattr(fn, "serving", None) if rt.deploy else None
    return describe(batch_size) if callable(describe) else pytorch_serving()
