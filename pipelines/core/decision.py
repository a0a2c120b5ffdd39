"""The one rule every decision of the lab follows: feasibility, ties, the search's selection,
``make promote`` and the Model Registry's ``champion`` alias, on plain data.

The rule (:data:`RULE`), in four sentences:

1. **Differences are what the data can show.** Two accuracies measured on the same images differ
   only when the 95% paired interval of their difference excludes 0 (Newcombe, with McNemar's
   exact test beside it); two latencies only when the 95% interval of their ratio excludes 1
   (timed side by side: the per-round ratio; timed in separate measurements against the same
   reference: the intervals of their speedups over that reference do not overlap); sizes (exact
   numbers) only beyond :data:`SIZE_RESOLUTION`. Otherwise the two are *tied*
   (:data:`~pipelines.core.stats.TIE_RULE`).
2. **Feasible unless shown otherwise.** A result breaks a constraint only when the data shows it:
   its accuracy drop against the reference (paired, same validation images) is above the limit
   with 95% confidence, its speedup's interval lies below ``min_speedup``, its p50's interval above
   ``max_latency_ms``.
3. **Replace only an improvement; a tie keeps the incumbent.** A candidate *improves on* an
   incumbent when it is no worse on every objective and better on one (point 1). The search's
   incumbent is the current configuration's own trial, ``make promote``'s the same trial, the
   ``champion`` alias's the version holding it. An incumbent that is itself shown infeasible is
   replaced by any feasible candidate it does not improve on.
4. **Among the candidates that may replace it, accuracy first, then speed.** The candidates tied
   in accuracy with the most accurate one are ranked by speed (speedup over the reference, higher
   first), then by accuracy, then by trial number; the incumbent is chosen when no candidate may
   replace it.

Nothing here knows Optuna, MLflow or torch: results are :class:`Result` records built by the
callers from what they measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pipelines.core.stats import LatencyRatio, PairedAccuracy, TIE_RULE, wilson

SIZE_RESOLUTION = 0.01  # sizes within 1% are the same model for a user
BETTER, TIED, WORSE = "better", "tied", "worse"
RULE = ("one rule (pipelines/core/decision.py): accuracies differ only when the 95% paired interval of their "
        "difference on the same images excludes 0 (Newcombe + exact McNemar), latencies only when the 95% interval "
        "of their ratio excludes 1 (speedup intervals against the same teacher that do not overlap), sizes beyond 1%; "
        "a result is infeasible only when the data shows it breaks a constraint; a candidate replaces the "
        "incumbent (the current configuration's trial, the champion) only when no worse on every objective and "
        "better on one; among those, the ones tied in accuracy with the most accurate go by speedup, then accuracy, "
        "then trial number")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% interval."""

    value: float
    low: float
    high: float

    @classmethod
    def exact(cls, value: float) -> "Interval":
        return cls(value, value, value)


@dataclass(frozen=True)
class Result:
    """What one model (a trial, a registered version) measured, as the rule needs it.

    ``correct``: per image of the shared split, whether the model got it right (paired
    comparisons need it; without it, the accuracy ``accuracy`` is taken as exact). ``speedup``:
    over the reference timed side by side; ``latency_ms``: the p50; ``feasible``: from
    :func:`constraint_values` (None: not constrained)."""

    key: int | str
    accuracy: float
    correct: tuple[bool, ...] | None = None
    speedup: Interval | None = None
    latency_ms: Interval | None = None
    size_mb: float | None = None
    feasible: bool | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def n(self) -> int:
        return len(self.correct) if self.correct is not None else 0

    def accuracy_interval(self) -> Interval:
        if self.correct is None:
            return Interval.exact(self.accuracy)
        lo, hi = wilson(sum(self.correct), self.n)
        return Interval(sum(self.correct) / self.n if self.n else float("nan"), lo, hi)


@dataclass(frozen=True)
class SideBySide:
    """Two models measured together (the champion's holder and the new final model): paired on
    the same test images (``new_correct``/``old_correct``) and timed in one loop (``ratio`` =
    p50(new) / p50(old), None when they could not both be timed)."""

    new_correct: tuple[bool, ...]
    old_correct: tuple[bool, ...]
    ratio: LatencyRatio | None = None
    note: str = ""


# --- pairwise verdicts ----------------------------------------------------------------------------

def paired(a: Result, b: Result) -> PairedAccuracy | None:
    """acc(a) - acc(b) on the same images, or None when either lacks per-image outcomes (or they
    were not measured on the same images)."""
    if a.correct is None or b.correct is None or a.n != b.n:
        return None
    return PairedAccuracy.of(a.correct, b.correct)


def accuracy_verdict(a: Result, b: Result) -> str:
    """``a`` against ``b`` on accuracy: better / tied / worse (point 1)."""
    pair = paired(a, b)
    if pair is not None:
        return pair.verdict()
    return BETTER if a.accuracy > b.accuracy else WORSE if a.accuracy < b.accuracy else TIED


def latency_verdict(a: Result, b: Result, ratio: LatencyRatio | None = None) -> str:
    """``a`` against ``b`` on latency: from ``ratio`` = p50(a)/p50(b) timed side by side when given,
    else from their speedups over the same reference (intervals that do not overlap), else from
    their p50 intervals."""
    if ratio is not None:
        return BETTER if ratio.a_faster() else WORSE if ratio.b_faster() else TIED
    if a.speedup is not None and b.speedup is not None:
        if a.speedup.low > b.speedup.high:
            return BETTER
        return WORSE if a.speedup.high < b.speedup.low else TIED
    if a.latency_ms is not None and b.latency_ms is not None:
        if a.latency_ms.high < b.latency_ms.low:
            return BETTER
        return WORSE if a.latency_ms.low > b.latency_ms.high else TIED
    return TIED


def size_verdict(a: Result, b: Result) -> str:
    if a.size_mb is None or b.size_mb is None:
        return TIED
    if a.size_mb < b.size_mb * (1 - SIZE_RESOLUTION):
        return BETTER
    return WORSE if a.size_mb > b.size_mb * (1 + SIZE_RESOLUTION) else TIED


def verdicts(a: Result, b: Result, objectives: Sequence[str], ratio: LatencyRatio | None = None) -> dict[str, str]:
    """Per objective (``val_accuracy``/``accuracy``, ``latency_ms_p50``, ``size_mb``): ``a`` against ``b``."""
    out = {}
    for name in objectives:
        if name.endswith("accuracy"):
            out[name] = accuracy_verdict(a, b)
        elif name.startswith("latency") or name == "speedup":
            out[name] = latency_verdict(a, b, ratio)
        elif name.startswith("size"):
            out[name] = size_verdict(a, b)
        else:
            raise ValueError(f"no rule for objective {name!r}")
    return out


def improves(a: Result, b: Result, objectives: Sequence[str], ratio: LatencyRatio | None = None) -> bool:
    """``a`` is no worse than ``b`` on every objective and better on one (point 3)."""
    seen = verdicts(a, b, objectives, ratio).values()
    return WORSE not in seen and BETTER in seen


def replaces(candidate: Result, incumbent: Result | None, objectives: Sequence[str],
             ratio: LatencyRatio | None = None) -> bool:
    """Point 3: may ``candidate`` take ``incumbent``'s place? (No incumbent: yes, when feasible.)"""
    if candidate.feasible is False:
        return False
    if incumbent is None:
        return True
    if incumbent.feasible is False:
        return not improves(incumbent, candidate, objectives, ratio)
    return improves(candidate, incumbent, objectives, ratio)


# --- constraints ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """The constraints (``search.max_accuracy_drop`` in pp, ``min_speedup``, ``max_latency_ms``)."""

    max_accuracy_drop_pp: float
    min_speedup: float | None = None
    max_latency_ms: float | None = None


def accuracy_drop(result: Result, reference: Result) -> PairedAccuracy | None:
    """reference - result on the same images (positive: ``result`` lost accuracy)."""
    return paired(reference, result)


def constraint_values(result: Result, reference: Result, limits: Limits) -> dict[str, float]:
    """Named constraint values (Optuna 5 ``set_constraint``: feasible when every one is <= 0),
    each the most favourable end of its 95% interval minus the limit (point 2): accuracy in pp,
    the drop's lower bound minus ``max_accuracy_drop``; speedup, ``min_speedup`` minus the speedup's
    upper bound; latency, the p50's lower bound minus ``max_latency_ms``."""
    drop = accuracy_drop(result, reference)
    low = drop.interval[0] if drop is not None else reference.accuracy - result.accuracy
    out = {"accuracy": 100.0 * low - limits.max_accuracy_drop_pp}
    if limits.max_latency_ms is not None:
        lat = result.latency_ms or Interval.exact(float("nan"))
        out["latency_ms"] = lat.low - limits.max_latency_ms
    if limits.min_speedup is not None:
        speed = result.speedup or Interval.exact(float("nan"))
        out["speedup"] = limits.min_speedup - speed.high
    return out


def is_feasible(constraints: dict[str, float]) -> bool:
    return all(value <= 0.0 for value in constraints.values())


# --- selection --------------------------------------------------------------------------------------

def _speed(r: Result) -> float:
    if r.speedup is not None:
        return r.speedup.value
    return -r.latency_ms.value if r.latency_ms is not None else float("-inf")


def select(results: Sequence[Result], objectives: Sequence[str], incumbent: Result | None = None) -> Result | None:
    """Point 4: the result to take among ``results`` (feasible or not; infeasible ones never
    replace anything), ``incumbent`` (the current configuration's trial, also allowed inside
    ``results``) when none may replace it; None when nothing is feasible and there is no incumbent."""
    pool = [r for r in results if r is not incumbent and r.key != getattr(incumbent, "key", object())
            and replaces(r, incumbent, objectives)]
    if not pool:
        return incumbent
    top = max(pool, key=lambda r: r.accuracy)
    tied = [r for r in pool if accuracy_verdict(r, top) != WORSE]
    return min(tied, key=lambda r: (-_speed(r), -r.accuracy, str(r.key) if isinstance(r.key, str) else r.key))


def front(results: Sequence[Result], objectives: Sequence[str]) -> list[Result]:
    """The feasible results no other feasible result improves on (the statistical Pareto front)."""
    feasible = [r for r in results if r.feasible is not False]
    return [r for r in feasible if not any(improves(o, r, objectives) for o in feasible if o is not r)]


def explain(a: Result, b: Result, objectives: Sequence[str], a_name: str = "A", b_name: str = "B",
            ratio: LatencyRatio | None = None) -> str:
    """One line: per objective, ``a`` against ``b`` with the evidence."""
    parts = []
    for name, verdict in verdicts(a, b, objectives, ratio).items():
        if name.endswith("accuracy") and (pair := paired(a, b)) is not None:
            parts.append(f"{name}: {pair.describe(a_name, b_name)}")
        elif name.endswith("accuracy"):
            parts.append(f"{name} {a.accuracy:.4f} vs {b.accuracy:.4f}: {verdict}")
        elif ratio is not None and (name.startswith("latency") or name == "speedup"):
            parts.append(f"latency: {ratio.describe(a_name, b_name)}")
        elif (name.startswith("latency") or name == "speedup") and a.speedup and b.speedup:
            parts.append(f"speedup {a.speedup.value:.2f}x [{a.speedup.low:.2f}, {a.speedup.high:.2f}] vs "
                         f"{b.speedup.value:.2f}x [{b.speedup.low:.2f}, {b.speedup.high:.2f}]: {verdict}")
        elif name.startswith("size") and a.size_mb is not None and b.size_mb is not None:
            parts.append(f"size {a.size_mb:.4g} vs {b.size_mb:.4g} MB: {verdict}")
        else:
            parts.append(f"{name}: {verdict}")
    return "; ".join(parts)


__all__ = ["BETTER", "Interval", "Limits", "RULE", "Result", "SIZE_RESOLUTION", "SideBySide", "TIED", "TIE_RULE", "WORSE",
           "accuracy_drop", "accuracy_verdict", "constraint_values", "explain", "front", "improves", "is_feasible",
           "latency_verdict", "paired", "replaces", "select", "size_verdict", "verdicts"]
