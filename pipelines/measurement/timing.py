"""Latency measured side by side: every variant of a comparison is warmed up, then timed
*interleaved* (one call of each in turn, the order rotating every round) so that machine drift
hits all of them alike. p50/p90 of per-call wall times at a fixed thread count.

A shared machine can still disturb a whole measurement (another process on our cores, a VM's
stolen time). :func:`measure` therefore records, for every timed loop, how much of the CPUs we run
on went to *others* during it (``/proc/stat`` busy + steal time of those CPUs, minus this
process's own CPU time) and the worst p90/p50 spread; when either passes its limit
(:class:`NoiseLimits`, ``benchmark.max_other_cpu`` / ``benchmark.max_spread``) it measures again,
up to ``benchmark.retries`` times, and keeps the quietest attempt. If even that one is disturbed
its result says ``noisy`` and the report refuses to quote its speedups.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipelines.core.stats import LatencyRatio, median_interval


@dataclass(frozen=True)
class Latency:
    """One variant's timing. ``samples``: every timed call (ms); ``rounds``: one value per round
    of the side-by-side measurement, aligned with every other variant timed in the same
    measurement (round ``i`` of each variant ran at the same machine speed), the pairs
    :meth:`ratio` is computed from."""

    p50_ms: float
    p90_ms: float
    mean_ms: float
    iters: int
    samples: tuple[float, ...] = ()
    rounds: tuple[float, ...] = ()

    def throughput(self, batch_size: int) -> float:
        return batch_size / (self.p50_ms / 1e3)

    @property
    def p50_interval(self) -> tuple[float, float]:
        """95% interval of the p50 from the samples' order statistics."""
        return median_interval(self.samples) if self.samples else (self.p50_ms, self.p50_ms)

    def ratio(self, other: "Latency") -> LatencyRatio:
        """This p50 over ``other``'s, with its interval, from the rounds both were timed in."""
        return LatencyRatio.of(self.rounds, other.rounds)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_interleaved(fns: dict[Any, Callable[[], Any]], warmup: int = 10, iters: int = 50,
                     rewarm: int = 1) -> dict[Any, Latency]:
    """Time each zero-argument callable ``iters`` times, interleaved, after ``warmup`` calls each.

    Round ``i`` starts at the ``i % len(fns)``-th callable, so no variant always runs first, and
    drift (thermal, other load) hits every variant alike. Before each timed call the variant runs
    ``rewarm`` untimed calls: the previous variant has just evicted its weights from the caches,
    and a deployed model serving one request after another runs with warm caches, which is what a
    latency figure should describe (without it a small model timed right after a large one pays
    for the large one's cache traffic)."""
    names = list(fns)
    with torch.inference_mode():
        for name in names:
            for _ in range(warmup):
                fns[name]()
        sync()
        samples: dict[Any, list[float]] = {n: [] for n in names}
        for i in range(iters):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                for _ in range(rewarm):
                    fns[name]()
                sync()
                start = time.perf_counter()
                fns[name]()
                sync()
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {n: Latency(statistics.median(s), _percentile(s, 0.9), statistics.fmean(s), len(s), tuple(s), tuple(s))
            for n, s in samples.items()}


def set_threads(n: int) -> None:
    torch.set_num_threads(n)


# --- disturbance --------------------------------------------------------------------------------

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
    """How disturbed one timed loop was."""

    other_cpu: float | None  # share of our CPUs' time that other processes (or the hypervisor) took, 0..1
    spread: float            # the worst p90/p50 among the variants timed together

    def exceeds(self, limits: "NoiseLimits") -> bool:
        return (self.other_cpu is not None and self.other_cpu > limits.max_other_cpu) or \
            self.spread > limits.max_spread

    def describe(self) -> str:
        other = "unknown" if self.other_cpu is None else f"{self.other_cpu:.0%}"
        return f"other processes used {other} of the CPUs during timing, worst p90/p50 {self.spread:.2f}"


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


@dataclass(frozen=True)
class NoiseLimits:
    """When a measurement counts as disturbed, and how often to try again (``benchmark.*``)."""

    max_other_cpu: float = 0.2
    max_spread: float = 3.0
    retries: int = 2

    @classmethod
    def of(cls, cfg: Any) -> "NoiseLimits":
        """From a ``BenchmarkConfig``."""
        return cls(cfg.max_other_cpu, cfg.max_spread, cfg.retries)


@dataclass(frozen=True)
class Measurement:
    timings: dict[Any, Latency]
    disturbance: Disturbance
    attempts: int
    noisy: bool


def measure(fns: dict[Any, Callable[[], Any]], warmup: int = 10, iters: int = 50,
            limits: NoiseLimits = NoiseLimits()) -> Measurement:
    """:func:`time_interleaved`, watched for disturbance and repeated while disturbed (at most
    ``limits.retries`` more times); returns the least disturbed attempt, ``noisy`` when even
    that one passed a limit."""
    best: tuple[float, dict[Any, Latency], Disturbance] | None = None
    attempts = 0
    for attempts in range(1, limits.retries + 2):
        with CpuWatch() as watch:
            timings = time_interleaved(fns, warmup if attempts == 1 else min(warmup, 2), iters)
        spread = max((t.p90_ms / t.p50_ms for t in timings.values() if t.p50_ms > 0), default=1.0)
        disturbance = Disturbance(watch.other_cpu, spread)
        # rank attempts by how far past its limits each was (0 for a quiet one)
        score = max((disturbance.other_cpu or 0.0) / limits.max_other_cpu, spread / limits.max_spread)
        if best is None or score < best[0]:
            best = (score, timings, disturbance)
        if not disturbance.exceeds(limits):
            break
    assert best is not None
    _, timings, disturbance = best
    return Measurement(timings, disturbance, attempts, disturbance.exceeds(limits))
