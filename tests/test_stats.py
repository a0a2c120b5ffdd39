"""The statistics decisions rest on (pipelines/core/stats.py), checked against values computed
independently (closed forms, brute-force enumeration) rather than against themselves."""

from __future__ import annotations

import math
import random

import pytest

from pipelines.core.stats import Accuracy, LatencyRatio, PairedAccuracy, binom_two_sided, median_interval, wilson


def test_wilson_known_values():
    # Wilson (1927) / Newcombe (1998) table: 81/263 -> 0.2553 .. 0.3662
    lo, hi = wilson(81, 263)
    assert lo == pytest.approx(0.2553, abs=5e-4) and hi == pytest.approx(0.3662, abs=5e-4)
    lo, hi = wilson(359, 359)
    assert hi == 1.0 and 0.985 < lo < 0.9905  # a perfect score on 359 images is not "100%"
    assert wilson(0, 0) == (0.0, 1.0)


def test_accuracy_metrics_carry_the_interval():
    acc = Accuracy(357, 359)
    m = acc.metrics("accuracy")
    assert m["accuracy"] == pytest.approx(357 / 359)
    assert m["accuracy_ci_low"] < m["accuracy"] < m["accuracy_ci_high"] <= 1.0
    assert m["accuracy_n"] == 359
    assert "357/359" in acc.describe()


def test_mcnemar_exact_matches_enumeration():
    for k, m in [(0, 2), (1, 7), (3, 10), (5, 10), (0, 0)]:
        brute = sum(math.comb(m, i) for i in range(m + 1)
                    if math.comb(m, i) <= math.comb(m, k)) / 2 ** m if m else 1.0
        assert binom_two_sided(k, m) == pytest.approx(min(1.0, brute))


def test_two_images_of_360_are_a_tie():
    """The issue's bar: two models that disagree on 2 of 360 images are tied."""
    a = [True] * 360
    b = [True] * 358 + [False] * 2
    paired = PairedAccuracy.of(b, a)
    assert paired.difference == pytest.approx(-2 / 360)
    assert paired.tied() and paired.verdict() == "tied"
    assert paired.p_value == pytest.approx(0.5)
    lo, hi = paired.interval
    assert lo < -2 / 360 < 0 < hi
    assert "tied" in paired.describe()


def test_paired_interval_coverage_by_simulation():
    """Newcombe's paired interval covers the true difference about 95% of the time (checked by
    simulating correlated outcomes of two models on 300 images)."""
    rng = random.Random(2)
    p_both, p_a, p_b = 0.90, 0.04, 0.02  # true difference +0.02
    hits, trials = 0, 300
    for _ in range(trials):
        a, b = [], []
        for _ in range(300):
            u = rng.random()
            a.append(u < p_both + p_a)
            b.append(u < p_both or p_both + p_a <= u < p_both + p_a + p_b)
        lo, hi = PairedAccuracy.of(a, b).interval
        hits += lo <= 0.02 <= hi
    assert hits / trials >= 0.92


def test_agreeing_models_still_have_an_interval():
    paired = PairedAccuracy.of([True] * 359, [True] * 359)
    lo, hi = paired.interval
    assert lo < -0.005 and hi > 0.005  # the loss 359 images could have missed
    assert paired.tied()


def test_clear_difference_is_not_a_tie():
    a = [True] * 300
    b = [True] * 250 + [False] * 50
    assert PairedAccuracy.of(a, b).a_better() and PairedAccuracy.of(b, a).b_better()


def test_median_interval_coverage_by_simulation():
    rng = random.Random(0)
    hits, trials = 0, 400
    for _ in range(trials):
        xs = [rng.expovariate(1.0) for _ in range(40)]
        lo, hi = median_interval(xs)
        hits += lo <= math.log(2) <= hi
    assert hits / trials >= 0.92  # nominal 95%, order statistics are conservative
    assert median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)  # too few samples: the range
    assert LatencyRatio.of([1.0, 2.0, 3.0, 10.0], [1.0] * 4).ratio == 2.5  # the median of the per-round ratios


def test_latency_ratio_decides_only_beyond_its_interval():
    rng = random.Random(1)
    drift = [1 + rng.random() for _ in range(60)]  # the machine's speed, shared by both in a round
    b = [2.0 * d * (1 + 0.02 * rng.random()) for d in drift]
    faster = LatencyRatio.of([1.0 * d * (1 + 0.02 * rng.random()) for d in drift], b)
    assert faster.a_faster() and 0.45 < faster.ratio < 0.55
    same = LatencyRatio.of([2.0 * d * (1 + 0.02 * rng.random()) for d in drift], b)
    assert same.tied() and same.low < 1 < same.high
    assert "tied" in same.describe()
    with pytest.raises(ValueError):
        LatencyRatio.of([1.0], [1.0, 2.0])


def test_median_interval_of_many_timed_calls_matches_the_normal_approximation():
    """benchmark.iters allows 100,000 calls: the exact binomial sum must not overflow a float
    (2**n did past 1,023 samples) and must agree with n/2 +- 1.96 sqrt(n)/2 where that holds."""
    for n in (1024, 3000, 20_000):
        lo, hi = median_interval(list(range(n)))
        half = 1.96 * math.sqrt(n) / 2
        assert abs((n - 1) / 2 - lo - half) <= 2 and abs(hi - (n - 1) / 2 - half) <= 2, (n, lo, hi)
