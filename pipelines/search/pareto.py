"""Reading a study through the one decision rule (:mod:`pipelines.core.decision`): the feasible
front, the chosen trial, hypervolume."""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial, TrialState

from pipelines.core.decision import RULE, front, is_feasible, select
from pipelines.search.attrs import metrics_of, named_constraints, overrides_of
from pipelines.search.evidence import from_trial

SELECTION_RULE = RULE


def _complete(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE]


def feasible_front(trials: list[FrozenTrial], objectives: list[str]) -> list[FrozenTrial]:
    """Feasible trials no other feasible trial improves on (within the intervals), by number."""
    done = {t.number: t for t in _complete(trials)}
    kept = front([from_trial(t) for t in done.values()], objectives)
    return sorted((done[r.key] for r in kept), key=lambda t: t.number)


def pick_best(trials: list[FrozenTrial], objectives: list[str],
              current: FrozenTrial | None = None) -> FrozenTrial | None:
    """:data:`SELECTION_RULE` over the finished trials; ``current`` is the trial of the
    configuration params.yaml holds now (None: not measured in this context), the incumbent."""
    done = {t.number: t for t in _complete(trials)}
    incumbent = from_trial(current) if current is not None and current.state == TrialState.COMPLETE else None
    chosen = select([from_trial(t) for t in done.values()], objectives, incumbent)
    if chosen is None:
        return None
    return done.get(chosen.key, current)


def trial_record(t: FrozenTrial) -> dict[str, Any]:
    return {"number": t.number, "params": dict(t.params), "overrides": overrides_of(t),
            "values": list(t.values), "constraints": named_constraints(t),
            "metrics": metrics_of(t), "mlflow_run": t.user_attrs.get("mlflow_run", "")}


def first_feasible(trials: list[FrozenTrial]) -> int | None:
    """1-based position of the first feasible trial in order of trial number (None if none)."""
    for i, t in enumerate(sorted(trials, key=lambda t: t.number), start=1):
        if t.state == TrialState.COMPLETE and is_feasible(named_constraints(t)):
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
