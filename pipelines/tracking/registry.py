"""Logged models found by their checkpoint, later measurements linked to them, and the Model
Registry's final-model versions with the ``champion`` alias."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.core.config import Params
from pipelines.core.dominance import dominates_named
from pipelines.core.io import file_digest
from pipelines.tracking.run import CHECKPOINT_TAG, Run, numeric_leaves, params_hash
from pipelines.tracking.store import experiment_id, tracking_uri

CHAMPION = "champion"
# How the champion alias compares two final models (headline names, see pipelines/report.py):
# ratios measured side by side, so versions measured on different days stay comparable.
CHAMPION_DIRECTIONS = {"acc": "maximize", "speedup": "maximize", "mb": "minimize"}


def find_logged_model(params: Params, checkpoint: str | Path) -> Any | None:
    """The newest logged model of ``params.tracking.experiment`` made from this checkpoint file
    (matched by sha256), or None (tracking or model logging was off when it was written)."""
    if not (params.tracking.enabled and params.tracking.log_models) or not Path(checkpoint).exists():
        return None
    import mlflow

    exp_id = experiment_id(params.tracking.experiment)
    found = mlflow.MlflowClient(tracking_uri()).search_logged_models(
        [exp_id], filter_string=f"tags.{CHECKPOINT_TAG} = '{file_digest(checkpoint)}'",
        order_by=[{"field_name": "creation_time", "ascending": False}], max_results=1)
    return found[0] if found else None


def link_model_metrics(params: Params, checkpoint: str | Path, metrics: dict[str, Any]) -> str | None:
    """Attach measurements made later (latency, speedup ...) to the logged model of
    ``checkpoint``: logged to the run that logged the model, so each run keeps one value per
    name. Returns the model id, or None when there is no such model."""
    model = find_logged_model(params, checkpoint)
    if model is None:
        return None
    Run(model.source_run_id).log_metrics(metrics, model_id=model.model_id)
    return model.model_id


@dataclass
class Registration:
    name: str
    version: str
    champion: bool  # the alias now points at this version
    reason: str


def register_final(params: Params, checkpoint: str | Path, headline: dict[str, Any],
                   pipeline_run: str | None = None) -> Registration | None:
    """Register the logged model of ``checkpoint`` as a new version of
    ``tracking.registered_model``, tagged with the headline numbers; move the :data:`CHAMPION`
    alias to it unless the version holding the alias dominates it on :data:`CHAMPION_DIRECTIONS`
    (or this run's latency was measured while the machine was busy, ``noisy``)."""
    name = params.tracking.registered_model
    model = find_logged_model(params, checkpoint) if name else None
    if model is None:
        return None
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri())
    numbers = numeric_leaves(headline)
    tags = {**{k: repr(v) for k, v in numbers.items()}, "params_hash": params_hash(params),
            "dvc_exp": os.environ.get("DVC_EXP_NAME", ""), "pipeline_run": pipeline_run or ""}
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = str(client.create_model_version(name, f"models:/{model.model_id}", run_id=model.source_run_id,
                                              tags=tags, model_id=model.model_id).version)
    try:
        holder = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        holder = None
    mine = {k: numbers.get(k) for k in CHAMPION_DIRECTIONS}
    theirs = {k: _number(holder.tags.get(k)) for k in CHAMPION_DIRECTIONS} if holder else {}
    if headline.get("noisy"):
        move, reason = False, "latency measured while the machine was busy (noisy): not compared"
    elif holder is None:
        move, reason = True, "first version"
    elif None in mine.values() or None in theirs.values():
        move, reason = True, f"version {holder.version} has no comparable numbers"
    elif dominates_named(theirs, mine, CHAMPION_DIRECTIONS):
        move, reason = False, f"dominated by version {holder.version} ({_compare(theirs)})"
    else:
        move, reason = True, f"not dominated by version {holder.version} ({_compare(theirs)})"
    if move:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "champion_decision", reason)
    return Registration(name, version, move, reason)


def _number(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _compare(numbers: dict[str, float | None]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in numbers.items() if v is not None)
