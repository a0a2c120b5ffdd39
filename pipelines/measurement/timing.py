"""Latency measured side by side, the way a server sees it: every variant of a comparison is
timed in *blocks* (many calls of one variant in a row, after a few untimed calls that wake its
thread pool and fill its caches), the blocks rotating (round ``r`` runs every variant once,
starting at the ``r``-th) so that machine drift hits every variant alike.

Why blocks, not one call of each in turn (the routine before issue 26, removed): across
runtimes, per-call interleaving makes each call pay
for the previous runtime's threads and caches: thread pools that went to sleep must be woken,
OpenMP's spinning workers hold the cores another pool wants. Measured on the default run's final
model, per call interleaved vs blocks of 100: ONNX Runtime int8 1.6x slower, OpenVINO 1.2x,
PyTorch 1.15-1.27x. A server runs one runtime, call after call; ``bench/serving.py`` measures how
close the blocks come to each runtime timed alone in its own process.

Between blocks a fixed reference workload (:mod:`.speed`) measures the machine's speed; a round
with a block timed across a speed change (probes before and after it disagree by more than
``benchmark.max_speed_change``) or with a block whose p90/p50 passes ``benchmark.max_spread`` is
re-measured, up to ``benchmark.retries`` times, keeping the steadiest attempt. Before every
block and every probe the routine waits (at most ``benchmark.settle_ms``) until the threads of the
runtime that ran before stop spinning (:mod:`.settle`): ONNX Runtime's spinning workers kept a
core for 0.3 s after a block on a loaded 2-core machine, taking it from whatever was timed next.
Those two probes
only re-measure: one probe right after a block is disturbed by that block itself, so what flags
a measurement is a whole round off the typical speed (:attr:`Blocks.speed_change`).

A shared machine can still disturb a whole measurement (another process on our cores, a VM's
stolen time). :func:`measure` therefore records how much of the CPUs we run on went to *others*
during it (``/proc/stat`` busy + steal time of those CPUs, minus this process's own CPU time: its
10 ms ticks are too coarse for one block, so this is watched over the whole measurement), the
worst p90/p50 of a variant's block medians and how far the slowest or fastest round ran from the
measurement's typical speed (each round's median probe against the median of all probes); when
one passes its limit (:class:`NoiseLimits`) it measures again, up to ``benchmark.retries`` times, and keeps the
quietest attempt. If even that one is disturbed its result says ``noisy`` and the report refuses
to quote its speedups.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pipelines.core.params_base import usable_threads
from pipelines.core.stats import LatencyRatio, median_interval
from pipelines.measurement.disturbance import CpuWatch, Disturbance
from pipelines.measurement.settle import settle
from pipelines.measurement import speed as machine
from pipelines.measurement.speed import Speed, SpeedProbe, summarise


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


def _latency(samples: list[float], rounds: list[float]) -> Latency:
    return Latency(statistics.median(samples), _percentile(samples, 0.9), statistics.fmean(samples), len(samples),
                   tuple(samples), tuple(rounds))


MIN_BLOCK_CALLS = 6       # a variant's block never times fewer calls (benchmark.block_ms)
MIN_BLOCK_FOR_SPREAD = 5  # a block's p90/p50 means something from this many calls on


@dataclass
class Round:
    """One block of every variant: the calls timed (ms), the worst p90/p50 within a block, the
    speed probes around the blocks and the worst change between a block's two probes."""

    samples: dict[Any, list[float]]
    spread: float
    probes: list[Speed]

    @property
    def speed_change(self) -> float:
        return max((a.change(b) for a, b in zip(self.probes, self.probes[1:])), default=1.0)

    def score(self, limits: "NoiseLimits") -> float:
        """How far past its limits the round was (<= 1: within them)."""
        return max(self.spread / limits.max_spread, self.speed_change / limits.max_speed_change)

    def disturbed(self, limits: "NoiseLimits") -> bool:
        return self.spread > limits.max_spread or self.speed_change > limits.max_speed_change


def _block(fn: Callable[[], Any], calls: int, rewarm: int, warm_ms: float = 0.0) -> list[float]:
    """``rewarm`` untimed calls and at least ``warm_ms`` of them (see ``NoiseLimits.block_warm_ms``),
    then ``calls`` timed ones."""
    start, done = time.perf_counter(), 0
    while done < rewarm or (time.perf_counter() - start) * 1e3 < warm_ms:
        fn()
        done += 1
    sync()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _round(fns: dict[Any, Callable[[], Any]], order: list[Any], calls: dict[Any, tuple[int, int]],
           probe: SpeedProbe, limits: "NoiseLimits") -> Round:
    """One block of each variant in ``order``, the speed probed before the first and after each;
    before every block and every probe the previous runtime's pool is let go to sleep
    (:func:`~pipelines.measurement.settle.settle`, at most ``limits.settle_ms``)."""
    settle(limits.settle_ms)
    probes = [probe()]
    samples: dict[Any, list[float]] = {}
    spread = 1.0
    for name in order:
        settle(limits.settle_ms)
        timed, rewarm = calls[name]
        samples[name] = times = _block(fns[name], timed, rewarm, limits.block_warm_ms)
        settle(limits.settle_ms)
        probes.append(probe())
        if len(times) >= MIN_BLOCK_FOR_SPREAD and (mid := statistics.median(times)) > 0:
            spread = max(spread, _percentile(times, 0.9) / mid)
    return Round(samples, spread, probes)


@dataclass(frozen=True)
class Blocks:
    """What :func:`time_blocks` measured: every variant's :class:`Latency` (``rounds``: each
    block's median, aligned across variants), the kept rounds, how many rounds were re-measured."""

    timings: dict[Any, Latency]
    rounds: list[Round]
    remeasured: int

    @property
    def spread(self) -> float:
        """The worst p90/p50 of one variant's block medians (``Latency.rounds``): a disturbance moves
        whole blocks, while a steady heavy tail of single calls (an fp32 eager call at batch 1 that
        takes 0.5 ms or 2.7 ms, block after block) is the runtime's own behaviour, shown in the row's
        ``p90_over_p50``, not a disturbance (it flagged every batch-1 row of the default run)."""
        mids = {n: statistics.median(t.rounds) for n, t in self.timings.items() if t.rounds}
        return max((_percentile(list(self.timings[n].rounds), 0.9) / mid for n, mid in mids.items() if mid > 0),
                   default=1.0)

    @property
    def speed_change(self) -> float:
        """How far the slowest or fastest round ran from the measurement's typical speed: each
        round's median probe against the median of all probes. A slow phase of the machine lasts
        minutes and moves every probe of the rounds it covers; one probe right after a block is
        disturbed by that block itself (measured: adjacent probes around one plain fp32 block differ
        1.0-1.7x on an idle machine), which re-measures the round (:meth:`Round.disturbed`) but does
        not flag the measurement."""
        overall = self.speed
        return max((summarise(r.probes).change(overall) for r in self.rounds if r.probes), default=1.0)

    @property
    def speed(self) -> Speed:
        return summarise([p for r in self.rounds for p in r.probes])


def time_blocks(fns: dict[Any, Callable[[], Any]], warmup: int = 10, iters: int = 50,
                limits: "NoiseLimits | None" = None, probe: SpeedProbe | None = None) -> Blocks:
    """Time each zero-argument callable ``iters`` times in ``limits.blocks`` blocks (see the module
    docstring), after ``warmup`` calls each (a slow one fewer times: ``limits.block_ms``,
    :meth:`NoiseLimits.schedule`). Each block starts with ``limits.block_warmup``
    untimed calls. A round whose blocks saw a speed change or a spread past ``limits`` is timed
    again (at most ``limits.retries`` more times), the steadiest attempt kept."""
    limits = limits or NoiseLimits()
    probe = probe or SpeedProbe()
    names = list(fns)
    count = max(1, min(limits.blocks, iters))
    calls = -(-iters // count)
    rounds: list[Round] = []
    remeasured = 0
    per_call: dict[Any, float] = {}
    with torch.inference_mode():
        for name in names:
            for _ in range(warmup):
                fns[name]()
            sync()
            # the length of its call, for the block schedule: a few more calls, timed (none without block_ms)
            per_call[name] = statistics.median(_block(fns[name], 3, 0)) if limits.block_ms > 0 or \
                limits.min_block_ms > 0 else 0.0
        schedule = {name: limits.schedule(calls, per_call[name]) for name in names}
        for r in range(count):
            shift = r % len(names)
            order = names[shift:] + names[:shift]
            best = _round(fns, order, schedule, probe, limits)
            for _ in range(limits.retries):
                if not best.disturbed(limits):
                    break
                remeasured += 1
                again = _round(fns, order, schedule, probe, limits)
                best = again if again.score(limits) < best.score(limits) else best
            rounds.append(best)
    timings = {n: _latency([t for r in rounds for t in r.samples[n]], [statistics.median(r.samples[n]) for r in rounds])
               for n in names}
    return Blocks(timings, rounds, remeasured)


def set_threads(n: int) -> None:
    """PyTorch's intra-op threads: ``n``, at most the cores this process may use."""
    torch.set_num_threads(usable_threads(n))


@dataclass(frozen=True)
class NoiseLimits:
    """How a measurement is taken and when it counts as disturbed (``benchmark.*``): the limits
    (``max_other_cpu``, ``max_spread``, ``max_speed_change``), how often to try again
    (``retries``), and the block schedule (``blocks`` rounds, ``block_warmup`` untimed calls at the
    start of each block, going on for at least ``block_warm_ms``: the runtime timed before may have
    left its thread pool spinning (ONNX Runtime) or OpenMP workers asleep, and a fast model's few
    warm-up calls end before that settles; measured: p90/p50 of 9 for a 0.5 ms PyTorch call at
    batch 1 after 5 warm-up calls); before every block and probe, wait up to ``settle_ms`` for the
    previous runtime's threads to stop spinning (:func:`~pipelines.measurement.settle.settle`).
    ``block_ms``: a variant whose call is slow times fewer calls per block (as many as fit in
    ``block_ms``, at least :data:`MIN_BLOCK_CALLS`) and warms with fewer (at least one, and at
    least ``block_warm_ms``): a 25 ms teacher call does not need 20 samples per block for a p50,
    and 160 of them cost 4 s of every trial; 0 keeps ``iters`` for every variant.
    ``min_block_ms``: a variant whose call is fast times more calls per block, as many as fill
    ``min_block_ms``: 20 calls of 0.05 ms are one millisecond, one moment of a machine whose speed
    swings up to 2x from one second to the next (``bench/serving.py``: the same artifact alone ran
    0.64 ms in one round and 1.51 ms in the next); a server's p50 is over a sustained stretch."""

    max_other_cpu: float = 0.2
    max_spread: float = 3.0
    retries: int = 2
    blocks: int = 6
    block_warmup: int = 5
    max_speed_change: float = 2.0
    block_warm_ms: float = 20.0
    settle_ms: float = 200.0
    block_ms: float = 0.0
    min_block_ms: float = 0.0
    max_slowdown: float = 0.0  # 0: off; see measure()

    @classmethod
    def of(cls, cfg: Any) -> "NoiseLimits":
        """From a ``BenchmarkConfig``."""
        return cls(cfg.max_other_cpu, cfg.max_spread, cfg.retries, cfg.blocks, cfg.block_warmup,
                   cfg.max_speed_change, cfg.block_warm_ms, cfg.settle_ms, cfg.block_ms, cfg.min_block_ms,
                   cfg.max_slowdown)

    def schedule(self, calls: int, call_ms: float) -> tuple[int, int]:
        """(timed calls, untimed warm-up calls) per block for a variant whose call takes about
        ``call_ms``: ``calls`` and :attr:`block_warmup`, cut down for a slow call and stretched
        for a fast one (see the class)."""
        if call_ms <= 0:
            return calls, self.block_warmup
        timed, rewarm = calls, self.block_warmup
        if self.block_ms > 0:
            timed = max(min(MIN_BLOCK_CALLS, calls), min(calls, math.ceil(self.block_ms / call_ms)))
            rewarm = min(self.block_warmup, max(1, math.ceil(self.block_warm_ms / call_ms)))
        return max(timed, math.ceil(self.min_block_ms / call_ms)), rewarm


@dataclass(frozen=True)
class Measurement:
    timings: dict[Any, Latency]
    disturbance: Disturbance
    attempts: int
    noisy: bool
    speed: Speed | None = None   # the reference workload's p50s during the kept attempt
    remeasured: int = 0          # rounds of blocks timed again (speed change or spread) in the kept attempt
    slowdown: float = 1.0        # how much slower than the process's usual speed the kept attempt ran

    def phase_note(self, limits: NoiseLimits) -> str:
        """One line when even the kept attempt ran in a slow phase (past ``limits.max_slowdown``)."""
        if not limits.max_slowdown or self.slowdown <= limits.max_slowdown:
            return ""
        return (f"timed while the machine ran {self.slowdown:.2f}x slower than its usual speed in this process "
                f"(reference workload), {self.attempts} attempt(s): p50s read high against another phase")


def measure(fns: dict[Any, Callable[[], Any]], warmup: int = 10, iters: int = 50,
            limits: NoiseLimits = NoiseLimits()) -> Measurement:
    """:func:`time_blocks`, watched for disturbance and repeated while disturbed (at most
    ``limits.retries`` more times); returns the least disturbed attempt, ``noisy`` when even
    that one passed a limit. With ``limits.max_slowdown``, an attempt whose reference workload ran
    more than that much slower than this process's usual speed (:func:`.speed.slowdown`: a slow
    phase covering the whole attempt, which nothing inside it shows) is measured again too, and
    the kept attempt says its ``slowdown``; that alone does not make it ``noisy`` (ratios within
    it still hold)."""
    best: tuple[float, Blocks, Disturbance, float] | None = None
    attempts = 0
    probe = SpeedProbe()
    if limits.max_slowdown:
        machine.calibrate(probe)
    for attempts in range(1, limits.retries + 2):
        with CpuWatch() as watch:
            timed = time_blocks(fns, warmup if attempts == 1 else min(warmup, 2), iters, limits, probe)
        disturbance = Disturbance(watch.other_cpu, timed.spread, timed.speed_change)
        slow = 1.0
        if limits.max_slowdown:
            slow = machine.slowdown(timed.speed)
            machine.seen([p for r in timed.rounds for p in r.probes])
        score = max(disturbance.score(limits), slow / limits.max_slowdown if limits.max_slowdown else 0.0)
        if best is None or score < best[0]:
            best = (score, timed, disturbance, slow)
        if not disturbance.exceeds(limits) and not (limits.max_slowdown and slow > limits.max_slowdown):
            break
    assert best is not None
    _, timed, disturbance, slow = best
    return Measurement(timed.timings, disturbance, attempts, disturbance.exceeds(limits), timed.speed,
                       timed.remeasured, slow)
