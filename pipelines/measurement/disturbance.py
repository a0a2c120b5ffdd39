"""How disturbed a timed measurement was: the share of our CPUs' time other processes (or the
hypervisor) took while it ran (``/proc/stat``), and the spread and speed change its blocks showed
(:mod:`.timing` measures those; :class:`Disturbance` holds the three and judges them against
``benchmark.*`` limits: a :class:`~pipelines.measurement.timing.NoiseLimits`, typed loosely here so
this module does not import the one that uses it)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


_PROC_STAT = Path("/proc/stat")


def _cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: every CPU
        return set(range(os.cpu_count() or 1))


def _busy_seconds(cpus: set[int]) -> float | None:
    """Non-idle time (user+nice+system+irq+softirq+steal) of ``cpus`` since boot, or None where
    ``/proc/stat`` is not readable (the disturbance is then unknown, not zero)."""
    try:
        lines = _PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        fields = [int(v) for v in rest.split()]
        user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        total += user + nice + system + irq + softirq + steal
    return total / ticks


@dataclass(frozen=True)
class Disturbance:
    """How disturbed one timed measurement was."""

    other_cpu: float | None  # share of our CPUs' time that other processes (or the hypervisor) took, 0..1
    spread: float            # the worst p90/p50 of a variant's block medians among those timed together
    speed_change: float = 1.0  # how far the slowest or fastest round ran from the typical speed (>= 1)

    def exceeds(self, limits: Any) -> bool:
        return (self.other_cpu is not None and self.other_cpu > limits.max_other_cpu) or \
            self.spread > limits.max_spread or self.speed_change > limits.max_speed_change

    def score(self, limits: Any) -> float:
        """How far past its limits the measurement was (<= 1: within them)."""
        return max((self.other_cpu or 0.0) / limits.max_other_cpu, self.spread / limits.max_spread,
                   self.speed_change / limits.max_speed_change)

    def describe(self) -> str:
        other = "unknown" if self.other_cpu is None else f"{self.other_cpu:.0%}"
        return (f"other processes used {other} of the CPUs during timing, worst p90/p50 of block medians {self.spread:.2f}, "
                f"a round ran {self.speed_change:.2f}x off the machine's typical speed in this measurement")


class CpuWatch:
    """Context manager: the share of the affine CPUs' time that went to other processes while it was open."""

    def __enter__(self) -> "CpuWatch":
        self.cpus = _cpus()
        self._busy = _busy_seconds(self.cpus)
        self._own = time.process_time()
        self._wall = time.perf_counter()
        self.other_cpu: float | None = None
        self.own_cpu = 0.0  # share of the same CPUs' time this process used
        return self

    def __exit__(self, *exc: Any) -> None:
        busy = _busy_seconds(self.cpus)
        wall = time.perf_counter() - self._wall
        own = time.process_time() - self._own
        self.own_cpu = own / (wall * len(self.cpus)) if wall > 0 else 0.0
        if busy is None or self._busy is None or wall <= 0:
            return
        self.other_cpu = min(1.0, max(0.0, (busy - self._busy - own) / (wall * len(self.cpus))))
