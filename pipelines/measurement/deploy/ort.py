"""ONNX Runtime on the CPU: sessions configured as a server runs them, and static int8.

Serving configuration: ``intra_op_num_threads = num_threads`` (``benchmark.num_threads``), one
inter-op thread, sequential execution, and ONNX Runtime's default spinning *on*: its worker
threads spin-wait after each run to answer the next one sooner, which is how a server calling one
session request after request runs it. The benchmark times every runtime in blocks of its own
calls (:mod:`pipelines.measurement.timing`), so the spinning costs no other runtime its cores
while it is timed. ``spinning=False`` (``session.intra_op.allow_spinning = 0``, same for inter-op)
is for sessions that share the process's cores with other work call by call.

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


def session_options(num_threads: int, spinning: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    for key in NO_SPIN:
        options.add_session_config_entry(key, "1" if spinning else "0")
    return options


class Session:
    """A CPU ``InferenceSession`` called like a model: tensor in, tensor out (no copies)."""

    def __init__(self, path: str | Path, num_threads: int, spinning: bool = False) -> None:
        import onnxruntime as ort

        self.num_threads, self.spinning = num_threads, spinning
        self.options = session_options(num_threads, spinning)
        self.session = ort.InferenceSession(str(path), self.options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def serving(self, batch_size: int) -> str:
        """This session's serving configuration, for a row's ``note``."""
        return (f"ONNX Runtime: {self.num_threads} intra-op threads, 1 inter-op, sequential, "
                f"spinning {'on' if self.spinning else 'off'}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input: x.numpy()})[0])


def quantize_int8(fp32: str | Path, out: str | Path, calibration: Iterable[torch.Tensor],
                  nodes_to_exclude: Iterable[str] = ()) -> Path:
    """Static QDQ int8, per-channel weights, calibrated on ``calibration``; written to ``out``.
    ``nodes_to_exclude``: ONNX node names left in fp32 (the accuracy budget's layers,
    :mod:`.budget`)."""
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
                               weight_type=oq.QuantType.QInt8, calibrate_method=oq.CalibrationMethod.MinMax,
                               nodes_to_exclude=list(nodes_to_exclude))

        return atomic_write(out, write)
    finally:
        pre.unlink(missing_ok=True)
        for leftover in out.parent.glob(f".{out.name}.pre*"):
            os.unlink(leftover)
