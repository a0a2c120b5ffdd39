"""The statistics every decision uses: intervals for an accuracy (binomial), for a difference of two
accuracies on the same images (paired), for a median latency (order statistics) and for a ratio of
latencies timed side by side, and the one tie rule built on them.

Why: the default split has 270 validation and 359 test images (one image is 0.37 / 0.28 pp) and
this machine's speed drifts 2x within a minute. A difference that its interval does not separate
from zero (accuracy) or from one (latency ratio) is a tie, never a win.

All intervals are two-sided at ``CONFIDENCE`` (95%). Nothing here is random: the latency ratio's
interval comes from order statistics of paired ratios, not from a bootstrap.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
Z = 1.959963984540054  # two-sided 95% normal quantile
TIE_RULE = ("A differs from B only when the 95% interval of the difference excludes 0 (accuracy: paired "
            "Newcombe interval and exact McNemar test on the images both saw) or of the ratio p50(A)/p50(B) "
            "excludes 1 (latency: order statistics of per-round ratios timed side by side); otherwise the "
            "two are tied")


# --- one accuracy ---------------------------------------------------------------------------------

def wilson(correct: int, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson score interval of a proportion ``correct / n`` (``(0, 1)`` when ``n`` is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Accuracy:
    """Top-1 accuracy with its 95% Wilson interval, from counts."""

    correct: int
    n: int

    @property
    def value(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.correct, self.n)

    def metrics(self, name: str = "accuracy") -> dict[str, float | int]:
        """``{name, name_ci_low, name_ci_high, name_n}``: the flat form of metrics files and MLflow."""
        lo, hi = self.interval
        return {name: self.value, f"{name}_ci_low": lo, f"{name}_ci_high": hi, f"{name}_n": self.n}

    def describe(self) -> str:
        lo, hi = self.interval
        return f"{self.value:.4f} [{lo:.4f}, {hi:.4f}] ({self.correct}/{self.n})"


# --- two accuracies on the same images --------------------------------------------------------------

def binom_two_sided(k: int, m: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``m`` fair coin flips (McNemar's exact test
    with ``k`` = the smaller discordant count)."""
    if m == 0:
        return 1.0
    k = min(k, m - k)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2.0 ** m
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class PairedAccuracy:
    """Model A against model B on the same ``n`` images. ``only_a``: images A gets right and B
    wrong; ``only_b``: the reverse; ``both``: right in both. ``difference`` is acc(A) - acc(B)."""

    both: int
    only_a: int
    only_b: int
    n: int

    @classmethod
    def of(cls, a_correct: Sequence[bool], b_correct: Sequence[bool]) -> "PairedAccuracy":
        if len(a_correct) != len(b_correct):
            raise ValueError(f"paired accuracy needs the same images: {len(a_correct)} vs {len(b_correct)} outcomes")
        pairs = list(zip((bool(x) for x in a_correct), (bool(y) for y in b_correct)))
        return cls(sum(a and b for a, b in pairs), sum(a and not b for a, b in pairs),
                   sum(b and not a for a, b in pairs), len(pairs))

    @property
    def difference(self) -> float:
        return (self.only_a - self.only_b) / self.n if self.n else 0.0

    @property
    def p_value(self) -> float:
        """Exact McNemar test: are the discordant images split unevenly?"""
        return binom_two_sided(min(self.only_a, self.only_b), self.only_a + self.only_b)

    @property
    def interval(self) -> tuple[float, float]:
        """95% interval of acc(A) - acc(B): Newcombe's hybrid score method for paired proportions
        (method 10, Newcombe 1998), which stays honest at 0 discordant images: two models that agree
        on all 359 test images still have [-1.07, +1.07] pp, the loss such a split could miss."""
        n, a, b, c = self.n, self.both, self.only_a, self.only_b
        if n == 0:
            return -1.0, 1.0
        d = n - a - b - c
        p1, p2 = (a + b) / n, (a + c) / n
        l1, u1 = wilson(a + b, n)
        l2, u2 = wilson(a + c, n)
        denom = (a + b) * (c + d) * (a + c) * (b + d)
        phi = (a * d - b * c) / math.sqrt(denom) if denom > 0 else 0.0
        theta = p1 - p2
        delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
        eps = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
        return max(-1.0, theta - delta), min(1.0, theta + eps)

    def a_better(self) -> bool:
        return self.interval[0] > 0

    def b_better(self) -> bool:
        return self.interval[1] < 0

    def tied(self) -> bool:
        return not (self.a_better() or self.b_better())

    def verdict(self) -> str:
        return "better" if self.a_better() else "worse" if self.b_better() else "tied"

    def describe(self, a: str = "A", b: str = "B") -> str:
        """e.g. ``A - B = -0.56 pp [-1.9, +0.8] (A only 0, B only 2 of 359 images, McNemar p=0.50): tied``."""
        lo, hi = self.interval
        return (f"{a} - {b} = {100 * self.difference:+.2f} pp [{100 * lo:+.2f}, {100 * hi:+.2f}] "
                f"({a} only {self.only_a}, {b} only {self.only_b} of {self.n} images, McNemar p={self.p_value:.2g}): "
                f"{self.verdict()}")

    def metrics(self, name: str = "accuracy_diff") -> dict[str, float | int]:
        lo, hi = self.interval
        return {name: self.difference, f"{name}_ci_low": lo, f"{name}_ci_high": hi,
                f"{name}_p_value": self.p_value, f"{name}_discordant": self.only_a + self.only_b}


# --- latency -------------------------------------------------------------------------------------

def median_interval(samples: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Distribution-free interval of the median from order statistics: the widest-needed pair
    ``(x_(j), x_(n-1-j))`` whose coverage (from Binomial(n, 1/2)) is at least ``confidence``; the
    sample range when even that falls short (fewer than 6 samples). The binomial CDF is summed in
    exact integers (``2**n`` overflows a float past n = 1023 timed calls)."""
    ordered = sorted(float(s) for s in samples)
    n = len(ordered)
    if n == 0:
        return float("nan"), float("nan")
    # 0-based: P(x_(j) <= median <= x_(n-1-j)) = P(j < K <= n-1-j) = 1 - 2 P(K <= j), K ~ Bin(n, 1/2)
    total, term = 1 << n, n           # 2**n; C(n, j+1)
    below = 1 + n                     # 2**n * P(K <= j+1)
    j = 0
    while j + 1 < n - 1 - (j + 1) and 1 - 2 * below / total >= confidence:
        j += 1
        term = term * (n - j) // (j + 1)
        below += term
    return ordered[j], ordered[n - 1 - j]


@dataclass(frozen=True)
class LatencyRatio:
    """p50(A) / p50(B) from samples timed side by side: the median of the per-round ratios
    ``a[i] / b[i]`` (round ``i`` of an interleaved or block-rotated measurement hit both at the
    same machine speed), with its order-statistics interval."""

    ratio: float
    low: float
    high: float
    rounds: int

    @classmethod
    def of(cls, a: Sequence[float], b: Sequence[float]) -> "LatencyRatio":
        if len(a) != len(b) or not a:
            raise ValueError(f"a latency ratio needs paired rounds: {len(a)} vs {len(b)} samples")
        ratios = [x / y for x, y in zip(a, b) if y > 0]
        lo, hi = median_interval(ratios)
        return cls(statistics.median(ratios), lo, hi, len(ratios))

    def a_faster(self) -> bool:
        return self.high < 1.0

    def b_faster(self) -> bool:
        return self.low > 1.0

    def tied(self) -> bool:
        return not (self.a_faster() or self.b_faster())

    def within(self, factor: float) -> bool:
        """A is no slower than ``factor`` times B as far as the data shows (the interval's low end
        is at most ``factor``)."""
        return self.low <= factor

    def describe(self, a: str = "A", b: str = "B") -> str:
        verdict = f"{a} faster" if self.a_faster() else f"{b} faster" if self.b_faster() else "tied"
        return f"{a}/{b} = {self.ratio:.3f} [{self.low:.3f}, {self.high:.3f}] over {self.rounds} rounds: {verdict}"


# --- per-image outcomes, stored compactly ------------------------------------------------------------

def pack_outcomes(correct: Sequence[bool]) -> str:
    """Per-image right/wrong as ``"<n>:<hex>"`` (one bit per image): small enough for an Optuna user
    attr or an MLflow tag, so paired comparisons stay possible after the models are gone."""
    bits = 0
    for i, ok in enumerate(correct):
        if ok:
            bits |= 1 << i
    return f"{len(correct)}:{bits:x}"


def unpack_outcomes(text: str | None) -> tuple[bool, ...] | None:
    """The inverse of :func:`pack_outcomes` (None for None or a malformed value)."""
    if not text or ":" not in str(text):
        return None
    n, _, hexa = str(text).partition(":")
    try:
        count, bits = int(n), int(hexa, 16)
    except ValueError:
        return None
    return tuple(bool(bits >> i & 1) for i in range(count))


def resolution(n: int, accuracy: float) -> dict[str, float | int]:
    """What ``n`` paired images can tell apart near ``accuracy``: one image in pp, the 95% interval
    half-width of two models that agree on every image (the loss such a split can miss), and the
    fewest images one model must get right where the other does not (and none the other way) for
    the paired interval to exclude 0."""
    both = round(accuracy * n)
    tie = PairedAccuracy(both, 0, 0, n).interval
    needed = next((k for k in range(1, n + 1)
                   if PairedAccuracy(max(0, both - k), k, 0, n).interval[0] > 0), n)
    return {"images": n, "one_image_pp": 100.0 / n if n else float("nan"),
            "undetectable_pp": 100.0 * max(-tie[0], tie[1]), "detectable_images": needed,
            "detectable_pp": 100.0 * needed / n if n else float("nan")}
