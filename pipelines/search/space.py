"""The search space: one Optuna suggestion per dotted params key.

A trial sets exactly the sampled keys and nothing else: it trains with the pipeline's own epochs
(``distill.epochs``, ``prune.finetune_epochs``; put them in the space to search them), so
promoting a trial rebuilds what was measured.

Categorical choices may be lists (``student.channels: [[32, 64, 128], [64, 128, 256]]``): Optuna
stores categorical choices as scalars, so a list is suggested under its JSON text label
(``"[32, 64, 128]"``, what optuna-dashboard shows) and handed to params as the list itself.
"""

from __future__ import annotations

import json
import math
from typing import Any

import optuna

from pipelines.core.config import SearchDimension


def to_optuna(dim: SearchDimension, value: Any) -> Any:
    """``value`` as Optuna stores it for ``dim`` (a list choice becomes its JSON label)."""
    if dim.type == "categorical" and isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return value


def _labels(dim: SearchDimension) -> list[Any]:
    return [to_optuna(dim, choice) for choice in dim.choices or []]


def in_space(dim: SearchDimension, value: Any) -> bool:
    """Whether ``value`` is a point of ``dim`` (a choice, or inside the range and on its step)."""
    if dim.type == "categorical":
        return any(to_optuna(dim, value) == label and isinstance(value, bool) == isinstance(choice, bool)
                   for label, choice in zip(_labels(dim), dim.choices or []))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if dim.type == "int" and value != int(value):
        return False
    if not dim.low - 1e-12 <= value <= dim.high + 1e-12:
        return False
    if dim.step:
        steps = (value - dim.low) / dim.step
        return math.isclose(steps, round(steps), abs_tol=1e-9)
    return True


def suggest(trial: optuna.Trial, space: dict[str, SearchDimension]) -> dict[str, Any]:
    """One value per dotted key, named as the key (so Optuna's params are params.yaml keys)."""
    values: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.type == "categorical":
            labels = _labels(dim)
            values[key] = dim.choices[labels.index(trial.suggest_categorical(key, labels))]
        elif dim.type == "int":
            step = int(dim.step) if dim.step else 1
            values[key] = trial.suggest_int(key, int(dim.low), int(dim.high), step=step, log=dim.log)
        else:
            values[key] = trial.suggest_float(key, dim.low, dim.high, step=dim.step, log=dim.log)
    return values
