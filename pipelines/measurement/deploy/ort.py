"""ONNX Runtime on the CPU: sessions that share the machine politely, and static int8.

Politeness: ONNX Runtime's worker threads spin-wait after each run by default (to answer the next
one sooner), which burns the cores another runtime in the same process is about to be timed on.
Every session here has ``intra_op_num_threads = num_threads`` (``benchmark.num_threads``), one
inter-op thread, and spinning off (``session.intra_op.allow_spinning = 0``, the same for inter-op).

int8 (:func:`quantize_int8`): ``onnxruntime.quantization.quantize_static`` in QDQ format
(QuantizeLinear/DequantizeLinear pairs that ORT fuses into int8 kernels), weights int8 per output
channel, activations uint8 per tensor from min/max calibration on the batches it is given (the
pipeline gives it the PTQ calibration batches). ``quant_pre_process`` first runs shape inference
and ORT's graph optimisations, as its docs recommend.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

NO_SPIN = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def session_options(num_threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    for key in NO_SPIN:
        options.add_session_config_entry(key, "0")
    return options


class Session:
    """A CPU ``InferenceSession`` called like a model: tensor in, tensor out (no copies)."""

    def __init__(self, path: str | Path, num_threads: int) -> None:
        import onnxruntime as ort

        self.options = session_options(num_threads)
        self.session = ort.InferenceSession(str(path), self.options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input: x.numpy()})[0])


def quantize_int8(fp32: str | Path, out: str | Path, calibration: Iterable[torch.Tensor]) -> Path:
    """Static QDQ int8, per-channel weights, calibrated on ``calibration``; written to ``out``."""
    import onnx
    from onnxruntime import quantization as oq

    from pipelines.core.io import atomic_write

    class Batches(oq.CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self.batches = iter([{name: np.ascontiguousarray(b.numpy())} for b in calibration])

        def get_next(self):
            return next(self.batches, None)

    out = Path(out)
    pre = out.with_name(f".{out.name}.pre.onnx")
    try:
        oq.quant_pre_process(str(fp32), str(pre))
        name = onnx.load(str(pre), load_external_data=False).graph.input[0].name

        def write(tmp: Path) -> None:
            oq.quantize_static(str(pre), str(tmp), Batches(name), quant_format=oq.QuantFormat.QDQ,
                               per_channel=True, activation_type=oq.QuantType.QUInt8,
                               weight_type=oq.QuantType.QInt8, calibrate_method=oq.CalibrationMethod.MinMax)

        return atomic_write(out, write)
    finally:
        pre.unlink(missing_ok=True)
        for leftover in out.parent.glob(f".{out.name}.pre*"):
            os.unlink(leftover)
