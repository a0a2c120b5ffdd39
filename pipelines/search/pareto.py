"""Reading a study: the feasible Pareto front, the one selection rule, hypervolume."""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial, TrialState

from pipelines.core.dominance import dominates, no_worse
from pipelines.search.attrs import metrics_of, named_constraints, overrides_of
from pipelines.search.constraints import is_feasible

SELECTION_RULE = ("highest val_accuracy among feasible trials (every constraint <= 0) that do not lose to the "
                  "current configuration's own trial: when that trial is feasible, only trials at least as good "
                  "on every objective (itself included), else only trials it does not dominate; val accuracies "
                  "within one validation sample of the highest are ties (the split cannot tell them apart), "
                  "and ties go to the lower latency_ms_p50, then to the higher val_accuracy, then to the lower "
                  "trial number")


def feasible_front(trials: list[FrozenTrial], dirs: list[str]) -> list[FrozenTrial]:
    """Non-dominated feasible trials, by trial number."""
    feasible = [t for t in trials if t.state == TrialState.COMPLETE and is_feasible(t.constraints)]
    front = [t for t in feasible if not any(dominates(o.values, t.values, dirs) for o in feasible if o is not t)]
    return sorted(front, key=lambda t: t.number)


def pick_best(trials: list[FrozenTrial], dirs: list[str] | None = None,
              current: FrozenTrial | None = None, val_samples: int | None = None) -> FrozenTrial | None:
    """:data:`SELECTION_RULE` over the feasible trials; ``current`` is the trial of the
    configuration params.yaml holds now (None: not measured in this context); ``val_samples``:
    the validation split's size, shared by every trial of a context (None: exact accuracies)."""
    candidates = [t for t in trials if t.state == TrialState.COMPLETE and is_feasible(t.constraints)]
    if current is not None and current.state == TrialState.COMPLETE and dirs is not None:
        if is_feasible(current.constraints):
            candidates = [t for t in candidates if no_worse(t.values, current.values, dirs)]
        else:
            candidates = [t for t in candidates if not dominates(current.values, t.values, dirs)]
    if not candidates:
        return None
    best = max(metrics_of(t)["val_accuracy"] for t in candidates)
    one_sample = 1.0 / val_samples + 1e-6 if val_samples else 0.0  # + a hair: accuracies are float32
    tied = [t for t in candidates if metrics_of(t)["val_accuracy"] >= best - one_sample]
    return min(tied, key=lambda t: (metrics_of(t)["latency_ms_p50"], -metrics_of(t)["val_accuracy"], t.number))


def trial_record(t: FrozenTrial) -> dict[str, Any]:
    return {"number": t.number, "params": dict(t.params), "overrides": overrides_of(t),
            "values": list(t.values), "constraints": named_constraints(t),
            "metrics": metrics_of(t), "mlflow_run": t.user_attrs.get("mlflow_run", "")}


def first_feasible(trials: list[FrozenTrial]) -> int | None:
    """1-based position of the first feasible trial in order of trial number (None if none)."""
    for i, t in enumerate(sorted(trials, key=lambda t: t.number), start=1):
        if t.state == TrialState.COMPLETE and is_feasible(t.constraints):
            return i
    return None


def _hv(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Volume dominated by ``points`` (all minimized, each strictly better than ``ref`` on every
    axis) up to ``ref``: slice along the last axis, recurse on the rest (fronts here are small)."""
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    ordered = sorted(points, key=lambda p: p[-1])
    volume = 0.0
    for i, point in enumerate(ordered):
        upper = ordered[i + 1][-1] if i + 1 < len(ordered) else ref[-1]
        if upper > point[-1]:
            volume += (upper - point[-1]) * _hv([p[:-1] for p in ordered[:i + 1]], ref[:-1])
    return volume


def hypervolume(front: list[FrozenTrial], dirs: list[str], reference: list[float]) -> float:
    """Hypervolume of ``front`` against ``reference`` (in objective units), maximized objectives
    negated so that every axis is minimized; points not better than ``reference`` on every axis
    do not count."""
    sign = [1.0 if d == "minimize" else -1.0 for d in dirs]
    ref = tuple(r * s for r, s in zip(reference, sign))
    points = [tuple(v * s for v, s in zip(t.values, sign)) for t in front]
    return _hv([p for p in points if all(x < r for x, r in zip(p, ref))], ref)
