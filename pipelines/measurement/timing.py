"""Latency measured side by side: every variant of a comparison is warmed up, then timed
*interleaved* (one call of each in turn, the order rotating every round) so that machine drift
hits all of them alike. p50/p90 of per-call wall times at a fixed thread count."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p90_ms: float
    mean_ms: float
    iters: int

    def throughput(self, batch_size: int) -> float:
        return batch_size / (self.p50_ms / 1e3)


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
    return {n: Latency(statistics.median(s), _percentile(s, 0.9), statistics.fmean(s), len(s))
            for n, s in samples.items()}


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
