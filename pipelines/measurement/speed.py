"""How fast the machine is right now: a fixed reference workload, timed between the blocks of a
measurement (:mod:`pipelines.measurement.timing`).

This machine has slow phases that no process accounting sees (no other process, no steal in
``/proc/stat``): the same PT2E graph runs 0.56 ms and, minutes later, 1.31 ms; AMX int8 kernels
slow 1.6-2.3x in them, fp32 ones 1.2-1.5x. So the probe times one small int8 matrix product
(oneDNN's ``qlinear_pointwise``, the primitive PT2E int8 graphs run) and one small fp32 one
(``torch.mm``), each a few times, median of each. Two uses:

- a block bracketed by probes that disagree by more than ``benchmark.max_speed_change`` may have
  been timed across a speed change: its round is re-measured (the steadiest attempt kept). It is
  not what flags a measurement ``noisy``: one probe right after a block is disturbed by that block
  (measured: adjacent probes around one plain fp32 block differ 1.0-1.7x on an idle machine); a
  slow phase lasts minutes and moves every probe of the rounds it covers, so a measurement is
  flagged when a round's median probe is off the median of all its probes by more than
  ``max_speed_change`` (``Blocks.speed_change`` in :mod:`.timing`);
- the probe's milliseconds (``ref_int8_ms``, ``ref_fp32_ms``) are the run's speed on a fixed
  workload, recorded with every row and logged as metrics, so two runs on different machine
  speeds are told apart from two different models;
- a slow phase that covers a whole measurement moves all its probes alike, so nothing inside it
  looks disturbed: the process remembers every probe it took (a one-second calibration before its
  first measurement, then each measurement's), and a measurement whose median probe ran more than
  ``benchmark.max_slowdown`` slower than the process's usual speed (:func:`typical`) is measured
  again (``benchmark.retries``), the attempt in the fastest phase kept, and its rows say how much
  slower than usual they were timed (``phase_slowdown``). Measured: the default run's batch-1 rows
  were timed at a reference fp32 product of 0.077 ms and its batch-64 rows at 0.053 ms; `ts-int8`
  ran 0.072 ms in the first and 0.045 ms alone in the usual phase, ONNX Runtime 0.050 in both.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

SHAPE = (64, 256, 256)  # (rows, inner, outputs): ~0.05 ms int8, ~0.1 ms fp32 on 2 cores here


@dataclass(frozen=True)
class Speed:
    """One probe: p50 ms of the int8 and of the fp32 reference product."""

    int8_ms: float
    fp32_ms: float

    def change(self, other: "Speed") -> float:
        """How far apart two probes are, >= 1: the worse of the int8 and fp32 ratios, either way."""
        return max(_fold(self.int8_ms / other.int8_ms), _fold(self.fp32_ms / other.fp32_ms))


def _fold(ratio: float) -> float:
    return ratio if ratio >= 1 else 1 / ratio


def _int8_product():
    """A zero-argument callable running oneDNN's int8 linear, or None where this torch lacks it."""
    rows, inner, outs = SHAPE
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (rows, inner), dtype=torch.uint8, generator=gen)
    w = torch.randint(-127, 127, (outs, inner), dtype=torch.int8, generator=gen)
    try:
        packed = torch.ops.onednn.qlinear_prepack(w, [rows, inner])
        scales, zeros = torch.full((outs,), 0.01), torch.zeros(outs, dtype=torch.long)

        def run() -> torch.Tensor:
            return torch.ops.onednn.qlinear_pointwise(x, 0.02, 128, packed, scales, zeros, None, 0.5, 0, None,
                                                      "none", [], "")

        run()
        return run
    except (AttributeError, RuntimeError):
        return None


class SpeedProbe:
    """The reference workload, built once; :meth:`__call__` times it (``calls`` each, median)."""

    def __init__(self, calls: int = 7) -> None:
        rows, inner, outs = SHAPE
        gen = torch.Generator().manual_seed(0)
        a, b = torch.randn(rows, inner, generator=gen), torch.randn(inner, outs, generator=gen)
        self.fp32 = lambda: torch.mm(a, b)
        self.int8 = _int8_product() or (lambda: torch.mm(a, b))  # no oneDNN int8: fp32 twice (said nowhere faster)
        self.calls = calls
        with torch.inference_mode():
            for _ in range(3):
                self.fp32()
                self.int8()

    def _p50(self, fn) -> float:
        for _ in range(2):  # untimed: the block before may have left another runtime's pool spinning
            fn()
        times = []
        for _ in range(self.calls):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    def __call__(self) -> Speed:
        with torch.inference_mode():
            return Speed(self._p50(self.int8), self._p50(self.fp32))


def summarise(probes: list[Speed]) -> Speed:
    """The median probe of a measurement (per workload)."""
    return Speed(statistics.median(p.int8_ms for p in probes), statistics.median(p.fp32_ms for p in probes))


# --- the machine's usual speed in this process ---------------------------------------------------

_SEEN: list[Speed] = []   # every probe this process took: a short calibration, then every measurement's
CALIBRATE_S = 1.0         # how long the first measurement of a process probes the machine before it starts
TYPICAL_QUANTILE = 0.25   # "usual" speed: this quantile of the probe times seen (a slow phase lasts seconds)


def calibrate(probe: SpeedProbe, seconds: float = CALIBRATE_S) -> None:
    """Probe the machine for ``seconds`` (once per process, before its first measurement) so that
    the first measurement already has a usual speed to be compared with."""
    if _SEEN:
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        _SEEN.append(probe())


def seen(probes: list[Speed]) -> None:
    """Remember a measurement's probes."""
    _SEEN.extend(probes)


def forget() -> None:
    _SEEN.clear()


def typical() -> Speed | None:
    """This process's usual speed: the :data:`TYPICAL_QUANTILE` of every probe seen, per workload;
    None before any probe."""
    if not _SEEN:
        return None

    def q(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[int(TYPICAL_QUANTILE * (len(ordered) - 1))]

    return Speed(q([p.int8_ms for p in _SEEN]), q([p.fp32_ms for p in _SEEN]))


def slowdown(speed: Speed | None) -> float:
    """How much slower than usual (:func:`typical`) a measurement whose median probe is ``speed``
    ran: the worse of the int8 and fp32 ratios, at least 1 (faster than usual is not a slowdown)."""
    usual = typical()
    if speed is None or usual is None:
        return 1.0
    return max(1.0, speed.int8_ms / usual.int8_ms, speed.fp32_ms / usual.fp32_ms)
