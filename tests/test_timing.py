"""Latency that knows when it was disturbed: a real CPU hog on our cores (other processes) is seen,
our own work is not, and a disturbed benchmark is flagged and not quoted by the report."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from pipelines import report
from pipelines.measurement.benchmark import benchmark_models
from pipelines.measurement.timing import CpuWatch, NoiseLimits, measure, time_blocks
from pipelines.models import CNN
from tests.conftest import fast_params, venv_env


@contextlib.contextmanager
def cpu_hog():
    """One busy-looping process per CPU this process may run on."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in os.sched_getaffinity(0)]
    try:
        time.sleep(0.5)  # let them start spinning
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _own_work() -> None:
    x = torch.randn(256, 256)
    for _ in range(20):
        x = torch.tanh(x @ x)


SPIN_S = 0.4
_SPIN = f"import time\nend = time.perf_counter() + {SPIN_S}\nwhile time.perf_counter() < end: pass"


def test_own_cpu_work_is_not_counted_as_other_processes():
    """The same busy loop run here and run by a child process, alternately: the child's is other
    processes' CPU, ours is not. Other load on the machine enters both windows alike, so the
    child's window must read more ``other_cpu`` than ours by a good part of the work's share
    (were our own work counted as others', the two would read the same)."""
    more, own = [], []
    for _ in range(3):
        with CpuWatch() as here:
            exec(_SPIN)  # noqa: S102 - the very loop the child runs
        with CpuWatch() as child:
            subprocess.run([sys.executable, "-c", _SPIN], check=True)
        assert here.other_cpu is not None and child.other_cpu is not None
        more.append(child.other_cpu - here.other_cpu)
        own.append(here.own_cpu)
    assert statistics.median(own) > 0.02, own  # the loop ran here, on our CPUs
    assert statistics.median(more) > statistics.median(own) / 2, (more, own)


def test_a_cpu_hog_on_our_cores_is_seen():
    with cpu_hog(), CpuWatch() as watch:
        time.sleep(1.0)
    assert watch.other_cpu is not None and watch.other_cpu > 0.6  # the hogs had our CPUs while we slept


def test_a_loop_timed_beside_a_hog_is_retried_then_flagged_noisy():
    limits = NoiseLimits(max_other_cpu=0.2, max_spread=50.0, retries=1)
    with cpu_hog():
        m = measure({"work": _own_work}, warmup=1, iters=10, limits=limits)
    assert m.noisy and m.attempts == 2
    assert m.disturbance.other_cpu > 0.2


def test_blocks_that_move_together_are_noisy_even_without_other_processes():
    """A disturbance moves whole blocks (here blocks 0 and 3 of 6 run 20x slower): the block
    medians spread past the limit, so the measurement is noisy."""
    calls = iter(range(10**6))
    per_block = 5 + 4  # block_warmup untimed + iters/blocks timed calls

    def phases() -> None:
        time.sleep(0.02 if (next(calls) // per_block) % 3 == 0 else 0.001)

    limits = NoiseLimits(max_other_cpu=1.0, max_spread=3.0, retries=0, blocks=6, block_warmup=5,
                         max_speed_change=1e9, block_warm_ms=0.0)
    m = measure({"j": phases}, warmup=0, iters=24, limits=limits)
    assert m.noisy and m.disturbance.spread > 3.0
    assert "block medians" in m.disturbance.describe()


def test_a_steady_heavy_tail_is_the_runtime_not_a_disturbance():
    """Every 3rd call 20x slower, in every block alike (a bimodal kernel): the tail shows in
    p90/p50 of the calls, but the block medians agree, so the measurement is not noisy."""
    calls = iter(range(10**6))

    def jittery() -> None:
        time.sleep(0.02 if next(calls) % 3 == 0 else 0.001)

    limits = NoiseLimits(max_other_cpu=1.0, max_spread=3.0, retries=0, blocks=4, block_warmup=1,
                         max_speed_change=1e9, block_warm_ms=0.0)
    m = measure({"j": jittery}, warmup=0, iters=24, limits=limits)
    lat = m.timings["j"]
    assert lat.p90_ms / lat.p50_ms > 3.0
    assert not m.noisy and m.disturbance.spread < 3.0


@pytest.fixture(scope="module")
def hogged_rows():
    models = {"teacher": CNN(1, 10, [8, 16], 1).eval(), "student": CNN(1, 10, [4, 8], 1).eval()}
    with cpu_hog():
        return benchmark_models(models, {8: torch.randn(8, 1, 8, 8)}, ["eager"], warmup=1, iters=8,
                                reference="teacher", noise=NoiseLimits(0.2, 3.0, retries=0))


def test_benchmark_rows_timed_under_load_say_noisy(hogged_rows):
    assert all(r["noisy"] is True and r["other_cpu"] > 0.2 for r in hogged_rows)
    assert all(r["timing_attempts"] == 1 for r in hogged_rows)


def test_report_of_a_noisy_run_says_so_and_quotes_no_speedup(hogged_rows):
    params = fast_params()
    notice = report.noise_notice(hogged_rows, params)
    assert notice is not None and "not to be trusted" in notice
    summary = {r["model"]: {**r, "num_params": 1, "accuracy": 0.9, "size_mb": 1.0} for r in hogged_rows}
    text = report.table(summary, 8, noisy=True)
    assert report.NOT_QUOTED in text and "x |" not in text


def test_a_slow_variant_times_only_the_calls_that_fit_its_block():
    """benchmark.block_ms: a 30 ms call times 6 calls a block (not iters/blocks = 20) after one
    warm-up call, a fast one keeps its 20 and its 5; 0 keeps every variant at iters."""
    limits = NoiseLimits(max_other_cpu=1.0, max_spread=1e9, retries=0, blocks=2, block_warmup=5,
                         max_speed_change=1e9, block_warm_ms=20.0, settle_ms=0.0, block_ms=150.0)
    assert limits.schedule(20, 30.0) == (6, 1) and limits.schedule(20, 0.5) == (20, 5)
    assert limits.schedule(4, 30.0) == (4, 1)  # never more than iters/blocks
    assert replace(limits, block_ms=0.0).schedule(20, 30.0) == (20, 5)
    # benchmark.min_block_ms: a fast call times at least that long a block; a slow one is unchanged
    longer = replace(limits, min_block_ms=10.0)
    assert longer.schedule(20, 0.05) == (200, 5) and longer.schedule(20, 30.0) == (6, 1)
    assert replace(longer, block_ms=0.0).schedule(20, 0.05) == (200, 5)
    counts = {"slow": 0, "fast": 0}

    def call(name: str, seconds: float):
        def fn() -> None:
            counts[name] += 1
            time.sleep(seconds)
        return fn

    blocks = time_blocks({"slow": call("slow", 0.03), "fast": call("fast", 0.0005)}, warmup=1, iters=40,
                         limits=limits)
    assert len(blocks.timings["slow"].samples) == 2 * 6 and len(blocks.timings["fast"].samples) == 2 * 20
    assert counts["slow"] == 1 + 3 + 2 * (1 + 6)  # warm-up, the schedule's probe, per block: rewarm + timed
    assert 25 < blocks.timings["slow"].p50_ms < 60
    stretched = time_blocks({"fast": call("fast", 0.0005)}, warmup=1, iters=4,
                            limits=replace(limits, block_ms=0.0, min_block_ms=10.0))
    samples = stretched.timings["fast"].samples
    assert len(samples) > 4 and sum(samples) >= 2 * 10.0 * 0.9  # two blocks of ~10 ms, not 2 calls each


def test_a_process_on_one_core_runs_one_thread_whatever_benchmark_num_threads_says():
    """``usable_threads``: threads above the cores a process may use (taskset, cgroups, a pinned test
    worker) would only oversubscribe them; the timing loops and the deploy sessions get at most
    that many."""
    probe = ("import torch; from pipelines.measurement.timing import set_threads; "
             "from pipelines.core.params_base import CORES, usable_threads; "
             "set_threads(8); print(CORES, torch.get_num_threads(), usable_threads(2))")
    one_core = min(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-c", probe], env=venv_env(), capture_output=True, text=True, check=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, {one_core})).stdout.split()
    assert out == ["1", "1", "1"], out


def _tiny() -> torch.Tensor:
    """A call that costs next to nothing: what these tests time is the schedule around it (a
    matmul loop here took 30 s in the suite, beside the other worker's processes)."""
    return torch.ones(8).sum()


@pytest.fixture
def usual_speed():
    """The process's memory of the machine's speed, emptied before and after the test."""
    from pipelines.measurement import speed

    speed.forget()
    yield speed
    speed.forget()


def test_a_measurement_in_a_slow_phase_is_measured_again_and_says_so(usual_speed):
    """benchmark.max_slowdown: a machine remembered as far faster than now (a usual speed of a
    nanosecond per reference product) makes every attempt a slow-phase one: it is timed again
    (retries), the rows say how much slower than usual, and that alone is not 'noisy'."""
    from pipelines.measurement.speed import Speed

    usual_speed.seen([Speed(1e-6, 1e-6)] * 10)
    limits = NoiseLimits(max_other_cpu=1.0, max_spread=1e9, retries=2, blocks=2, max_speed_change=1e9,
                         settle_ms=0.0, max_slowdown=1.3)
    m = measure({"tiny": _tiny}, warmup=1, iters=4, limits=limits)
    assert m.attempts == 3 and m.slowdown > 1.3 and not m.noisy
    assert "slower than its usual speed" in m.phase_note(limits)
    rows = benchmark_models({"teacher": CNN(1, 10, [2], 1)}, {1: torch.randn(1, 1, 4, 4)}, ["eager"], 1, 4,
                            reference="teacher", noise=limits)
    assert rows[0]["phase_slowdown"] > 1.3 and "slower than its usual speed" in rows[0]["note"]
    assert rows[0]["timing_attempts"] == 3


def test_the_first_measurement_of_a_process_has_a_usual_speed_to_compare_with(usual_speed):
    """Before its first measurement the process probes the machine (speed.calibrate); with
    max_slowdown off it does not, and a slowdown is never below 1."""
    lax = NoiseLimits(max_other_cpu=1.0, max_spread=1e9, retries=0, blocks=2, max_speed_change=1e9, settle_ms=0.0)
    measure({"tiny": _tiny}, warmup=1, iters=4, limits=lax)
    assert usual_speed._SEEN == [] and usual_speed.typical() is None  # off: nothing probed, nothing kept
    assert usual_speed.slowdown(None) == 1.0
    start = time.perf_counter()
    m = measure({"tiny": _tiny}, warmup=1, iters=4, limits=replace(lax, max_slowdown=1.3))
    assert time.perf_counter() - start >= usual_speed.CALIBRATE_S
    assert len(usual_speed._SEEN) > 0 and m.slowdown >= 1.0
    assert usual_speed.slowdown(usual_speed.typical()) == 1.0
