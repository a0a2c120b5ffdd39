"""Latency as a server sees it: variants timed in rotating blocks, the machine's speed probed
between blocks, an artifact timed inside the benchmark agreeing with the same artifact timed
alone, and stage runs that log what the machine was doing (MLflow system metrics)."""

from __future__ import annotations

import statistics
import time

import mlflow
import pytest
import torch

from pipelines.core.stats import LatencyRatio
from pipelines.measurement.benchmark import benchmark_models, machine_metrics, speedup_fields
from pipelines.measurement.deploy import Deployer, DeploySettings, ort
from pipelines.measurement.settle import busy_threads, settle
from pipelines.measurement.speed import Speed, SpeedProbe
from pipelines.measurement.timing import Disturbance, Latency, NoiseLimits, Round, measure, time_blocks
from pipelines.models import CNN
from pipelines.tracking import stage_run
from tests.conftest import fast_params

THREADS = 2


def test_blocks_run_many_calls_of_one_variant_in_a_row_and_rotate_per_round():
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    limits = NoiseLimits(blocks=3, block_warmup=2, retries=0, max_speed_change=1e9, block_warm_ms=0.0)
    timed = time_blocks(fns, warmup=1, iters=12, limits=limits)
    body = calls[3:]  # after one warm-up call of each
    runs = [body[i:i + 6] for i in range(0, len(body), 6)]  # a block: 2 untimed + 4 timed calls
    assert [set(run) for run in runs] == [{n} for n in "abc" "bca" "cab"]  # round r starts at variant r
    for lat in timed.timings.values():
        assert lat.iters == 12 and len(lat.samples) == 12 and len(lat.rounds) == 3
        assert list(lat.rounds) == [statistics.median(lat.samples[i:i + 4]) for i in (0, 4, 8)]


def test_rounds_aligned_across_variants_give_a_paired_ratio():
    fns = {"slow": lambda: time.sleep(0.002), "fast": lambda: time.sleep(0.0002)}
    m = measure(fns, warmup=1, iters=24, limits=NoiseLimits(max_other_cpu=1.0, max_spread=50.0, retries=0,
                                                              blocks=4, max_speed_change=1e9))
    ratio = m.timings["slow"].ratio(m.timings["fast"])
    assert ratio.rounds == 4 and ratio.b_faster() and ratio.ratio > 2
    assert m.speed is not None and m.speed.int8_ms > 0 and m.speed.fp32_ms > 0


def test_a_speed_change_across_a_block_marks_its_round_disturbed():
    limits = NoiseLimits(max_speed_change=1.25)
    steady = Round({"a": [1.0] * 5}, 1.0, [Speed(0.05, 0.1), Speed(0.052, 0.1), Speed(0.05, 0.105)])
    slowed = Round({"a": [1.0] * 5}, 1.0, [Speed(0.05, 0.1), Speed(0.1, 0.13)])  # an int8 slow phase: 2x
    assert steady.speed_change < 1.25 and not steady.disturbed(limits)
    assert slowed.speed_change == pytest.approx(2.0) and slowed.disturbed(limits)
    assert slowed.score(limits) > steady.score(limits)
    assert Disturbance(0.0, 1.1, 2.0).exceeds(limits) and not Disturbance(0.0, 1.1, 1.1).exceeds(limits)


def test_rounds_past_the_speed_limit_are_re_measured_up_to_retries_and_flagged():
    fns = {"a": lambda: torch.mm(torch.ones(32, 32), torch.ones(32, 32))}
    # a limit no two probes can meet: every round is timed again, retries times, and the result is noisy
    strict = NoiseLimits(max_other_cpu=1.0, max_spread=50.0, retries=2, blocks=3, max_speed_change=1.0 + 1e-9)
    m = measure(fns, warmup=1, iters=6, limits=strict)
    assert m.remeasured == 3 * 2 and m.noisy and m.disturbance.speed_change > 1.0
    lax = NoiseLimits(max_other_cpu=1.0, max_spread=50.0, retries=2, blocks=3, max_speed_change=1e9)
    assert time_blocks(fns, warmup=1, iters=6, limits=lax).remeasured == 0


def test_the_speed_probe_times_an_int8_and_an_fp32_product():
    speed = SpeedProbe(calls=3)()
    assert 0 < speed.int8_ms < 50 and 0 < speed.fp32_ms < 50
    assert Speed(1.0, 2.0).change(Speed(2.0, 2.0)) == Speed(2.0, 2.0).change(Speed(1.0, 2.0)) == 2.0


def test_benchmark_rows_record_the_machine_speed_and_the_run_its_metrics():
    models = {"teacher": CNN(1, 10, [8, 16], 1).eval(), "student": CNN(1, 10, [4, 8], 1).eval()}
    rows = benchmark_models(models, {4: torch.randn(4, 1, 8, 8)}, ["eager"], warmup=1, iters=6, reference="teacher",
                            noise=NoiseLimits(retries=0, blocks=3))
    for row in rows:
        assert row["ref_int8_ms"] > 0 and row["ref_fp32_ms"] > 0 and row["speed_change"] >= 1.0
        assert row["remeasured_rounds"] == 0 and "PyTorch: " in row["note"]
        assert row["latency_ms_p50_ci_low"] <= row["latency_ms_p50"] <= row["latency_ms_p50_ci_high"]
        # the speedup's point is the median of its per-round ratios, inside its own interval
        assert row["speedup_vs_teacher_ci_low"] <= row["speedup_vs_teacher"] <= row["speedup_vs_teacher_ci_high"]
    metrics = machine_metrics(rows)
    assert set(metrics) == {"machine.ref_int8_ms", "machine.ref_fp32_ms", "machine.speed_change",
                            "machine.phase_slowdown"}
    assert metrics["machine.phase_slowdown"] >= 1.0
    assert metrics["machine.ref_int8_ms"] == rows[0]["ref_int8_ms"]  # one measurement: one speed


def test_a_rows_speedup_is_the_paired_ratio_inside_its_own_interval():
    """Drift moves pooled medians, not paired ratios: 12 rounds where the machine ran 2x slow in
    some, the teacher / row ratio per round is 8-12, the pooled p50s' ratio 7.3, outside it."""
    teacher = [2.4, 1.0, 2.0, 2.4, 2.4, 1.0, 2.4, 1.0, 1.0, 1.0, 1.0, 1.2]
    row = [0.2, 0.15, 0.3, 0.2, 0.2, 0.1, 0.2, 0.1, 0.1, 0.1, 0.1, 0.15]
    ref, lat = (Latency(statistics.median(v), max(v), statistics.fmean(v), len(v), tuple(v), tuple(v))
                for v in (teacher, row))
    fields = speedup_fields(ref, lat)
    assert not fields["speedup_vs_teacher_ci_low"] <= ref.p50_ms / lat.p50_ms <= fields["speedup_vs_teacher_ci_high"]
    assert fields["speedup_vs_teacher"] == pytest.approx(10.0) == LatencyRatio.of(teacher, row).ratio
    assert fields["speedup_vs_teacher_ci_low"] <= fields["speedup_vs_teacher"] <= fields["speedup_vs_teacher_ci_high"]


# --- one artifact: alone and inside the benchmark agree ------------------------------------------


@pytest.fixture(scope="module")
def onnx_session(tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    small = CNN(1, 10, [8, 16], 1).eval()
    deployer = Deployer(DeploySettings(THREADS, [torch.randn(8, 1, 8, 8)], tmp_path_factory.mktemp("serving")))
    path, _, _ = deployer.onnx("small", small, torch.randn(2, 1, 8, 8))
    return ort.Session(path, THREADS, spinning=True)


def test_an_artifact_timed_inside_the_benchmark_agrees_with_it_timed_alone(onnx_session):
    """ONNX Runtime (spinning, as served) next to a PyTorch model whose OpenMP pool wants the same
    cores: timed alone in blocks and inside the benchmark's measurement, alternately, three times.
    Their p50s must agree within the speed change the benchmark tolerates inside one measurement
    (``max_speed_change``); per-call interleaving measured ONNX Runtime 1.6x slow here."""
    torch.manual_seed(1)
    neighbour = CNN(1, 10, [16, 32], 1).eval()
    x = torch.randn(1, 1, 8, 8)
    limits = NoiseLimits(retries=1, blocks=4)
    fns = {"ort": lambda: onnx_session(x), "pytorch": lambda: neighbour(x)}
    ratios = []
    for _ in range(3):
        alone = time_blocks({"ort": fns["ort"]}, warmup=5, iters=40, limits=limits).timings["ort"].p50_ms
        inside = measure(fns, warmup=5, iters=40, limits=limits).timings["ort"].p50_ms
        ratios.append(inside / alone)
    assert 1 / limits.max_speed_change <= statistics.median(ratios) <= limits.max_speed_change, ratios


# --- what the machine was doing ---------------------------------------------------------------------


def test_stage_runs_log_system_metrics(mlflow_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    params = fast_params(tracking={"experiment": "t"})
    with stage_run(params, "compile_benchmark", ["benchmark"]) as run:
        time.sleep(2.5)
    metrics = mlflow.MlflowClient(mlflow_store).get_run(run.run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(metrics)


# --- settling: the previous runtime's threads let go of the cores --------------------------------


def test_settle_waits_until_a_spinning_onnx_runtime_pool_sleeps(onnx_session):
    """Right after its calls, ONNX Runtime's spinning workers (on, as served) are still running;
    settle returns once they sleep, never later than its limit, at once when nothing runs.
    Thread states do not depend on how loaded the machine is."""
    x = torch.randn(64, 1, 8, 8)

    def calls() -> None:
        for _ in range(20):
            onnx_session(x)

    calls()
    assert busy_threads() >= 1  # the premise: its pool spins on after the last call
    waited = settle(10_000.0)
    assert busy_threads() == 0 and 0 < waited < 10_000.0
    assert settle(10_000.0) < 1_000.0  # nothing spinning: two quiet looks
    calls()
    start = time.perf_counter()
    assert settle(5.0) < 5.0 + 100.0 and busy_threads() >= 1  # the limit holds while it still spins
    assert (time.perf_counter() - start) * 1e3 < 200.0
    assert settle(0.0) < 1.0
