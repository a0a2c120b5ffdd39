"""A trial (or a trial's metrics) as the decision rule's :class:`~pipelines.core.decision.Result`:
its per-image validation outcomes (``val_correct``, packed), its speedup over the teacher with
the interval of the per-round ratios, its p50 with its interval, its size and its feasibility.

Trials recorded before the outcomes were kept (no ``val_correct``) compare on their point values."""

from __future__ import annotations

import math
from typing import Any

from optuna.trial import FrozenTrial

from pipelines.core.decision import Interval, Result, is_feasible
from pipelines.core.stats import unpack_outcomes
from pipelines.search.attrs import metrics_of, named_constraints

VAL_CORRECT = "val_correct"  # the metrics record's per-image validation outcomes (stats.pack_outcomes)


def _interval(metrics: dict[str, Any], name: str) -> Interval | None:
    value = metrics.get(name)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        return Interval(float(value), float(low), float(high))
    return Interval.exact(float(value))


def from_metrics(key: int | str, metrics: dict[str, Any], feasible: bool | None = None) -> Result:
    return Result(key=key, accuracy=float(metrics.get("val_accuracy", float("nan"))),
                  correct=unpack_outcomes(metrics.get(VAL_CORRECT)),
                  speedup=_interval(metrics, "speedup_vs_teacher"), latency_ms=_interval(metrics, "latency_ms_p50"),
                  size_mb=metrics.get("size_mb"), feasible=feasible, extra={"metrics": metrics})


def from_trial(trial: FrozenTrial) -> Result:
    return from_metrics(trial.number, metrics_of(trial), is_feasible(named_constraints(trial)))
