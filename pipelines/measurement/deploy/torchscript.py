"""``ts-int8``: torch.ao static int8 on fbgemm's kernels, traced and frozen with TorchScript: the
PyTorch-native path for small batches.

Why it exists (measured on a 2-vCPU AMD EPYC with AVX-512 VNNI/BF16, no AMX, torch 2.14.1, the default run's pruned
[64, 128, 256] CNN on 8x8 digits, batch 1, 1 thread, blocks of calls in one process):

==========================================================  ========
path                                                        p50
==========================================================  ========
PT2E int8, ``torch.compile`` (C++ wrapper, direct call)     0.156 ms
PT2E int8, AOTInductor static package                       0.121 ms
torch.ao eager int8 (x86 backend), Python modules           0.192 ms
the same, TorchScript traced + frozen                       0.066 ms
torch.ao eager int8 on **fbgemm**, TorchScript frozen       0.043 ms
ONNX Runtime int8 (QDQ), for reference                      0.036 ms
==========================================================  ========

A batch-1 call of these tiny layers is per-op overhead, not arithmetic: PT2E's int8 path goes
through oneDNN and builds its primitive descriptor and tensor wrappers on every call (the x86
backend picks oneDNN for these convolutions too); fbgemm's packed weights carry everything a call
needs, and TorchScript's interpreter calls the ops from C++ with no Python between them. At large
batches the x86 backend's oneDNN kernels win instead (batch 64 here: 0.88 vs 1.18 ms), which is
why this is a runtime row beside the others and not the chain's engine.

The model is quantized from the chain's fp32 source on the pipeline's calibration batches (as
``ort-int8`` and ``ov-int8`` are), with the ``quantize`` stage's observer defaults; under an accuracy
budget, torch.ao's own accuracy control (:mod:`.eager_budget`) picks the layers left in fp32
(:func:`pipelines.compression.quantize.eager.keep_float`).
The artifact (``<model>.int8.ts``) is a TorchScript archive a C++ server loads with
``torch::jit::load``; its packed weights are re-packed for the quantized engine current at load
time, so it is loaded with fbgemm selected (:func:`load`). TorchScript is deprecated upstream in
favour of ``torch.export`` (``torch.jit.save``/``load`` warn); it is what runs this fastest on torch
2.14, and the row's note says so.

Needs a model torch.ao eager mode can quantize: a ``QuantStub`` at the input and ``fuse_model()``
(every built-in arch); any other model gets a skipped row with :data:`NOT_EAGER_REASON`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from pipelines.compression.quantize import eager
from pipelines.core.config import QuantizeConfig
from pipelines.core.io import atomic_write

ENGINE = "fbgemm"
NOT_EAGER_REASON = ("ts-int8 quantizes with torch.ao eager mode, which needs a QuantStub at the input and "
                    "fuse_model() (the built-in archs have both)")
NOTE = ("TorchScript (torch.jit trace + freeze; deprecated upstream, see pipelines/measurement/deploy/torchscript.py) "
        f"of torch.ao static int8 on {ENGINE} kernels")


@contextlib.contextmanager
def quantized_engine(name: str) -> Iterator[None]:
    """``torch.backends.quantized.engine`` set to ``name`` for the block, then restored."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


@contextlib.contextmanager
def _quiet_deprecation() -> Iterator[None]:
    """torch.jit's own FutureWarnings (the module docstring says why it is used anyway), and the
    tracer's note that a quantized module's scale and zero point become constants: they are."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"torch\.ao\.nn\.quantized")
        yield


def applies(model: nn.Module) -> bool:
    return eager.eager_quantizable(model)


def int8_module(model: nn.Module, calibration: Sequence[torch.Tensor], keep: Sequence[str] = (),
                engine: str = ENGINE) -> nn.Module:
    """Static int8 of the float ``model`` on ``calibration`` with ``engine``'s kernels (``keep``:
    module paths left in fp32), as torch.ao modules: what :func:`script` traces, and what the
    accuracy control (:mod:`.eager_budget`) validates."""
    with quantized_engine(engine):
        cfg = QuantizeConfig(calibration_batches=max(1, len(calibration)))
        return eager.quantize_static(model.eval(), calibration, cfg, engine=engine, keep=keep)


def traced(int8: nn.Module, example: torch.Tensor, engine: str = ENGINE) -> torch.jit.ScriptModule:
    """An :func:`int8_module` traced at ``example`` and frozen."""
    with quantized_engine(engine), torch.no_grad(), _quiet_deprecation():
        return torch.jit.freeze(torch.jit.trace(int8, example.cpu()).eval())


def script(model: nn.Module, calibration: Sequence[torch.Tensor], example: torch.Tensor, keep: Sequence[str] = (),
           engine: str = ENGINE) -> torch.jit.ScriptModule:
    """:func:`int8_module` of the float ``model``, :func:`traced`."""
    return traced(int8_module(model, calibration, keep, engine), example, engine)


def save(frozen: torch.jit.ScriptModule, path: str | Path) -> Path:
    """A :func:`traced` archive saved to ``path`` (written whole or not at all)."""
    with _quiet_deprecation():
        return atomic_write(path, lambda tmp: torch.jit.save(frozen, str(tmp)))


def load(path: str | Path) -> torch.jit.ScriptModule:
    """The archive at ``path``, its weights packed for fbgemm (whatever engine is current)."""
    with quantized_engine(ENGINE), _quiet_deprecation():
        return torch.jit.load(str(path), map_location="cpu").eval()
