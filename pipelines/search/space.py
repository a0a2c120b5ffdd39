"""The search space: one Optuna suggestion per dotted params key, and what a trial sets in params."""

from __future__ import annotations

from typing import Any

import optuna

from pipelines.core.config import Params, SearchDimension

# params keys every trial sets from its epoch budget (unless the space samples them itself)
EPOCH_KEYS = {"distill.epochs": "distill_epochs", "prune.finetune_epochs": "finetune_epochs"}


def suggest(trial: optuna.Trial, space: dict[str, SearchDimension]) -> dict[str, Any]:
    """One value per dotted key, named as the key (so Optuna's params are params.yaml keys)."""
    values: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.type == "categorical":
            values[key] = trial.suggest_categorical(key, list(dim.choices))
        elif dim.type == "int":
            step = int(dim.step) if dim.step else 1
            values[key] = trial.suggest_int(key, int(dim.low), int(dim.high), step=step, log=dim.log)
        else:
            values[key] = trial.suggest_float(key, dim.low, dim.high, step=dim.step, log=dim.log)
    return values


def trial_overrides(params: Params, sampled: dict[str, Any]) -> dict[str, Any]:
    """Everything a trial changes in params: the sampled values plus its epoch budget."""
    out = {key: getattr(params.search, attr) for key, attr in EPOCH_KEYS.items()}
    out.update(sampled)
    return out
