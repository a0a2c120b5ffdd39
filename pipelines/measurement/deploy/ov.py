"""OpenVINO on the CPU: an ONNX file read into OpenVINO's IR, compiled with an explicit precision.

- precision ``f32`` / ``bf16``: ``INFERENCE_PRECISION_HINT``. OpenVINO's own default on a CPU
  with bf16 (AMX) is bf16, so the fp32 row asks for f32 explicitly; the bf16 row exists only where
  the CPU has native bf16 (OpenVINO's ``OPTIMIZATION_CAPABILITIES`` lists ``BF16``).
- int8 (:func:`quantize_int8`): NNCF post-training quantization (``nncf.quantize``, its default
  mixed preset: int8 weights per output channel, activations per tensor, fast bias correction) on
  the batches it is given (the pipeline gives it the PTQ calibration batches). What NNCF leaves
  in float runs in f32.

Serving configuration: ``INFERENCE_NUM_THREADS = num_threads`` (``benchmark.num_threads``),
``PERFORMANCE_HINT`` ``LATENCY`` for batch 1 and ``THROUGHPUT`` for larger batches (one compiled
model per hint; a call picks by its batch), one stream either way (the caller runs one request at
a time, so a second stream would only take threads from the first), ``ENABLE_CPU_PINNING`` off
(pinning would tie its threads, and the caller's, to cores other runtimes in the process use).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from pipelines.core.cpu import bf16_missing as native_missing


@functools.cache
def core():
    import openvino as ov

    return ov.Core()


def capabilities() -> list[str]:
    return list(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def bf16_missing() -> str:
    """Why an OpenVINO bf16 row is skipped here, or ``""``."""
    return native_missing() or ("" if "BF16" in capabilities() else "OpenVINO's CPU plugin lists no BF16 capability")


HINTS = ("LATENCY", "THROUGHPUT")


def hint_for(batch_size: int) -> str:
    """``PERFORMANCE_HINT`` a server uses for requests of ``batch_size``."""
    return "LATENCY" if batch_size == 1 else "THROUGHPUT"


def config(precision: str, num_threads: int, hint: str = "LATENCY") -> dict:
    return {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": num_threads,
            "ENABLE_CPU_PINNING": False, "NUM_STREAMS": 1, "PERFORMANCE_HINT": hint}


class Compiled:
    """A compiled OpenVINO model called like a PyTorch one (tensor in, tensor out): one compiled
    model per ``PERFORMANCE_HINT``, the one for the input's batch size (:func:`hint_for`) runs."""

    def __init__(self, model, precision: str, num_threads: int) -> None:
        self.num_threads = num_threads
        self.compiled = {hint: core().compile_model(model, "CPU", config(precision, num_threads, hint))
                         for hint in HINTS}
        self.requests = {hint: c.create_infer_request() for hint, c in self.compiled.items()}

    def property(self, name: str, hint: str = "LATENCY"):
        return self.compiled[hint].get_property(name)

    def serving(self, batch_size: int) -> str:
        """The serving configuration at ``batch_size``, for a row's ``note``."""
        hint = hint_for(batch_size)
        return (f"OpenVINO: {self.num_threads} threads, PERFORMANCE_HINT={hint}, "
                f"{self.property('NUM_STREAMS', hint)} stream, pinning off")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.requests[hint_for(len(x))].infer({0: x.numpy()}, share_inputs=True, share_outputs=True)
        return torch.from_numpy(out[0].copy())


def read_onnx(path: str | Path):
    import openvino as ov

    return ov.convert_model(str(path))


def read_ir(xml: str | Path):
    return core().read_model(str(xml))


def save_ir(model, xml: str | Path) -> list[Path]:
    """``model`` as OpenVINO IR (``.xml`` + ``.bin``, weights as they are: no fp16 compression)."""
    import os
    import tempfile

    import openvino as ov

    xml = Path(xml)
    xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=xml.parent, prefix=f".{xml.stem}.") as tmp:
        ov.save_model(model, str(Path(tmp) / xml.name), compress_to_fp16=False)
        os.replace(Path(tmp) / xml.with_suffix(".bin").name, xml.with_suffix(".bin"))
        os.replace(Path(tmp) / xml.name, xml)  # the .xml last: it names the .bin
    return [xml, xml.with_suffix(".bin")]


@contextlib.contextmanager
def _nncf():
    """NNCF, errors only in its log; it draws progress bars on stdout (rich) with no switch to turn
    them off: they go nowhere."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        yield nncf


def _calibration(nncf, calibration: Sequence[torch.Tensor]):
    return nncf.Dataset(list(calibration), lambda batch: batch.numpy())


def quantize_int8(model, calibration: Sequence[torch.Tensor]):
    """NNCF PTQ of an OpenVINO model on ``calibration`` (every batch used)."""
    with _nncf() as nncf:
        return nncf.quantize(model, _calibration(nncf, calibration), subset_size=len(calibration))


def quantize_int8_controlled(model, calibration: Sequence[torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                             max_drop_pp: float, batch_size: int = 64):
    """NNCF's accuracy-controlled PTQ (``nncf.quantize_with_accuracy_control``): quantize as
    :func:`quantize_int8` does, validate on ``val`` (images, labels; top-1 accuracy per batch of
    ``batch_size``), and return quantizer groups to float, worst first, until the absolute drop
    is within ``max_drop_pp`` percentage points (or NNCF gives up and says so in its log)."""
    images, labels = val
    batches = list(zip(images.split(batch_size), labels.split(batch_size)))

    def accuracy(compiled, items) -> float:
        right = total = 0
        output = compiled.output(0)
        for x, y in items:
            logits = compiled(x.numpy())[output]
            right += int((torch.from_numpy(logits).argmax(1) == y).sum())
            total += len(y)
        return right / max(total, 1)

    with _nncf() as nncf:
        return nncf.quantize_with_accuracy_control(
            model, _calibration(nncf, calibration),
            nncf.Dataset(batches, lambda item: item[0].numpy()), validation_fn=accuracy,
            max_drop=max_drop_pp / 100, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration))


def float_compute_ops(model) -> list[str]:
    """Convolution / MatMul ops of an OpenVINO model whose weights are a plain f32 constant (NNCF
    gives a quantized one an int8 constant with its decompression, or a FakeQuantize): what
    NNCF's accuracy control kept out of int8."""
    kinds = ("Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData")
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() in kinds and op.get_input_size() > 1:
            weight = op.input_value(1).get_node()
            if weight.get_type_name() == "Constant" and weight.get_element_type().is_real():
                out.append(op.get_friendly_name())
    return out
