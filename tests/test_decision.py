"""The one decision rule (pipelines/core/decision.py) on plain data: ties, feasibility, selection,
promotion and the champion, each from per-image outcomes and latency intervals."""

from __future__ import annotations

import pytest

from pipelines.core import decision as d
from pipelines.core.stats import LatencyRatio, pack_outcomes, unpack_outcomes

OBJ = ["val_accuracy", "latency_ms_p50"]


def outcomes(n: int, wrong: set[int]) -> tuple[bool, ...]:
    return tuple(i not in wrong for i in range(n))


def result(key, wrong, n=270, speedup=(10.0, 9.0, 11.0), feasible=None, size=None):
    correct = outcomes(n, set(wrong))
    return d.Result(key, sum(correct) / n, correct, speedup=d.Interval(*speedup) if speedup else None,
                    size_mb=size, feasible=feasible)


def test_two_models_that_disagree_on_2_of_360_images_are_tied():
    a, b = result("a", set(), n=360), result("b", {3, 7}, n=360)
    assert d.accuracy_verdict(a, b) == d.accuracy_verdict(b, a) == d.TIED
    assert not d.improves(a, b, ["val_accuracy"]) and not d.improves(b, a, ["val_accuracy"])
    assert "tied" in d.explain(a, b, ["val_accuracy"])


def test_a_difference_the_data_shows_is_not_a_tie():
    a, b = result("a", set(), n=360), result("b", set(range(12)), n=360)
    assert d.accuracy_verdict(a, b) == d.BETTER and d.accuracy_verdict(b, a) == d.WORSE
    assert d.improves(a, b, OBJ)  # same speedup interval: tied on latency, better on accuracy


def test_the_issues_starting_point_is_feasible_3_images_below_the_teacher():
    teacher = result("teacher", {0}, speedup=None)
    trial = result(0, {0, 1, 2, 3})  # 1.11 pp below on 270 images: the data cannot show > 1 pp
    c = d.constraint_values(trial, teacher, d.Limits(1.0, min_speedup=4.0))
    assert d.is_feasible(c) and c["accuracy"] < 0 and c["speedup"] == pytest.approx(4.0 - 11.0)
    far = result(1, set(range(20)))  # 7 pp below: shown beyond the limit
    assert not d.is_feasible(d.constraint_values(far, teacher, d.Limits(1.0)))
    slow = result(2, {0}, speedup=(3.0, 2.8, 3.3))  # its whole interval below min_speedup
    assert d.constraint_values(slow, teacher, d.Limits(1.0, min_speedup=4.0))["speedup"] > 0
    level = result(3, {0}, speedup=(3.9, 3.5, 4.4))  # interval reaches 4: not shown too slow
    assert d.is_feasible(d.constraint_values(level, teacher, d.Limits(1.0, min_speedup=4.0)))


def test_latency_is_decided_by_intervals():
    fast, slow, overlapping = (result(k, set(), speedup=s) for k, s in
                               (("f", (20.0, 18.0, 22.0)), ("s", (10.0, 9.0, 11.0)), ("o", (12.0, 10.5, 13.0))))
    assert d.latency_verdict(fast, slow) == d.BETTER and d.latency_verdict(slow, fast) == d.WORSE
    assert d.latency_verdict(overlapping, slow) == d.TIED
    # timed side by side: the per-round ratio's interval decides, whatever the speedups say
    assert d.latency_verdict(slow, fast, LatencyRatio(0.8, 0.7, 0.9, 40)) == d.BETTER
    assert d.latency_verdict(fast, slow, LatencyRatio(0.95, 0.85, 1.05, 40)) == d.TIED


def test_selection_keeps_the_incumbent_unless_something_improves_on_it():
    current = result(0, {1, 2}, feasible=True)
    tied_faster_in_noise = result(1, {1}, speedup=(10.5, 9.5, 11.5), feasible=True)  # 1 image, overlapping speed
    assert d.select([current, tied_faster_in_noise], OBJ, current) is current
    faster = result(2, {1, 2, 3}, speedup=(30.0, 28.0, 32.0), feasible=True)  # 1 image worse: tied, 3x faster
    assert d.select([current, tied_faster_in_noise, faster], OBJ, current) is faster
    infeasible = result(3, set(), speedup=(40.0, 38.0, 42.0), feasible=False)
    assert d.select([current, faster, infeasible], OBJ, current) is faster  # infeasible never replaces


def test_among_candidates_tied_in_accuracy_the_fastest_wins():
    candidates = [result(1, set(), speedup=(8.0, 7.5, 8.5), feasible=True),
                  result(2, {5}, speedup=(20.0, 19.0, 21.0), feasible=True),      # 1 image less: tied
                  result(3, set(range(30)), speedup=(60.0, 58.0, 62.0), feasible=True)]  # shown less accurate
    assert d.select(candidates, OBJ).key == 2
    # 2 improves on 1 (tied accuracy, faster); 3 is less accurate but faster than all: both on the front
    assert {r.key for r in d.front(candidates, OBJ)} == {2, 3}


def test_an_infeasible_incumbent_is_replaced_by_a_feasible_trial_it_does_not_improve_on():
    current = result(0, set(range(25)), speedup=(40.0, 38.0, 42.0), feasible=False)  # shown too lossy
    slower = result(1, {2}, speedup=(10.0, 9.0, 11.0), feasible=True)
    assert d.replaces(slower, current, OBJ) and d.select([current, slower], OBJ, current) is slower
    assert d.select([current], OBJ, current) is current  # nothing feasible: the incumbent stays
    assert d.select([], OBJ) is None


def test_champion_rule_needs_an_improvement_and_a_tie_keeps_the_holder():
    old = result("old", {1}, n=359, size=1.0)
    same = result("new", {2}, n=359, size=1.0)
    assert not d.replaces(same, old, ["accuracy", "latency_ms_p50", "size_mb"], LatencyRatio(1.0, 0.9, 1.1, 40))
    assert d.replaces(same, old, ["accuracy", "latency_ms_p50", "size_mb"], LatencyRatio(0.5, 0.45, 0.55, 40))
    smaller = result("new", {2}, n=359, size=0.5)
    assert d.replaces(smaller, old, ["accuracy", "latency_ms_p50", "size_mb"])
    slower = LatencyRatio(1.5, 1.4, 1.6, 40)
    assert not d.replaces(smaller, old, ["accuracy", "latency_ms_p50", "size_mb"], slower)


def test_outcomes_survive_packing():
    for correct in [(), (True,), (False, True, True, False) * 90]:
        assert unpack_outcomes(pack_outcomes(correct)) == correct
    assert unpack_outcomes(None) is None and unpack_outcomes("garbage") is None


def test_every_accuracy_of_a_metrics_record_gets_its_interval():
    from pipelines.measurement.accuracy import with_intervals

    out = with_intervals({"accuracy": 357 / 359, "val_accuracy": 266 / 270, "accuracy_drop_vs_teacher": 0.28,
                          "quantized": {"best_accuracy_bs1": 0.99}, "steps": [{"accuracy_after_prune": 0.5}]},
                         359, 270)
    assert out["accuracy_n"] == 359 and out["accuracy_ci_low"] < 357 / 359 < out["accuracy_ci_high"]
    assert out["val_accuracy_n"] == 270 and out["val_accuracy_ci_high"] <= 1.0
    assert "accuracy_drop_vs_teacher_ci_low" not in out  # a difference is not a proportion
    assert "best_accuracy_bs1_ci_low" in out["quantized"] and "accuracy_after_prune_n" in out["steps"][0]


def test_the_deploy_choice_is_the_runtime_least_behind_each_round_s_fastest():
    from pipelines.measurement.comparison import judged_runtime, round_regrets, timed

    # "eager" wins the three fast rounds by 5% and loses the three slow ones by 33% (its kernels slow
    # more in the machine's slow phase): its pooled p50 ties, its rounds do not
    eager, ov = (1.0, 1.0, 1.0, 2.0, 2.0, 2.0), (1.05, 1.05, 1.05, 1.5, 1.5, 1.5)
    rows = {rt: {"latency_ms_p50": 1.3, "latency_ms_p50_ci_low": 1.0, "latency_ms_p50_ci_high": 1.6,
                 "latency_rounds_ms": list(r)} for rt, r in (("eager", eager), ("ov-int8", ov))}
    latencies = {rt: timed(r) for rt, r in rows.items()}
    regrets = round_regrets(latencies)
    assert regrets["eager"] > 1.15 and abs(regrets["ov-int8"] - 1.025) < 1e-9
    assert judged_runtime(latencies) == "ov-int8"
    # the same rounds the other way round: the choice follows the data, not the list order
    rows["eager"]["latency_rounds_ms"], rows["ov-int8"]["latency_rounds_ms"] = list(ov), list(eager)
    assert judged_runtime({rt: timed(r) for rt, r in rows.items()}) == "eager"
    # equal rounds: the first listed; rounds of different lengths (not one measurement): the intervals
    assert judged_runtime({"b": (1.0, 0.9, 1.1, (1.0, 2.0)), "a": (1.0, 0.9, 1.1, (1.0, 2.0))}) == "b"
    assert judged_runtime({"b": (1.0, 0.9, 1.1, (1.0,)), "a": (0.5, 0.4, 0.6, (0.5, 0.5))}) == "a"
    # tied: the paired per-round ratio's interval includes 1, however narrow the p50 intervals
    from pipelines.measurement.comparison import tied_with

    ort, ts = (0.043, 0.043, 0.042, 0.043, 0.044, 0.043), (0.044, 0.045, 0.044, 0.042, 0.045, 0.044)
    close = {"ort-int8": (0.043, 0.0429, 0.0431, ort), "ts-int8": (0.044, 0.0439, 0.0441, ts),
             "ov-int8": (0.098, 0.097, 0.099, tuple(2.3 * v for v in ort))}
    assert judged_runtime(close) == "ort-int8" and tied_with(close, "ort-int8") == ["ts-int8"]


def test_the_deploy_choice_calls_a_runtime_faster_only_outside_the_intervals():
    from pipelines.measurement.comparison import judged_runtime

    # without per-round p50s (LEGACY_TIE_RULE): compile-default's point is lower, but its interval
    # overlaps eager's: a tie, the first listed wins
    assert judged_runtime({"eager": (1.00, 0.95, 1.10), "compile-default": (0.97, 0.90, 1.02)}) == "eager"
    assert judged_runtime({"eager": (1.00, 0.95, 1.10), "compile-default": (0.50, 0.45, 0.55)}) == "compile-default"
    assert judged_runtime({"eager": 1.0, "compile-default": 0.97}) == "compile-default"  # bare p50s: exact
    from pipelines.measurement.comparison import tied_with
    from pipelines.reporting.deploy import _deploy_line

    timed = {"eager": (1.00, 0.95, 1.10), "compile-default": (0.97, 0.90, 1.02), "ort-int8": (0.50, 0.45, 0.55)}
    assert tied_with(timed, "eager") == ["compile-default"] and tied_with(timed, "ort-int8") == []
    line = _deploy_line({"best_runtime": "eager", "best_tied_with": "compile-default"}, "", 64, False)
    assert "**eager** (tied with compile-default" in line
