"""Logged models found by their checkpoint, later measurements linked to them, and the Model
Registry's final-model versions with the ``champion`` alias."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

from pipelines.core.collapse import WARNING_TAG
from pipelines.core.config import Params
from pipelines.core.decision import Interval, Result, SideBySide, explain, replaces
from pipelines.core.stats import pack_outcomes, unpack_outcomes
from pipelines.core.io import file_digest
from pipelines.tracking.run import CHECKPOINT_TAG, Run, numeric_leaves, params_hash
from pipelines.tracking.store import experiment_id, tracking_uri

CHAMPION = "champion"
# How the champion alias compares two final models: test accuracy (paired on the same images),
# latency (one timing loop, or the speedups' intervals against each run's teacher), size; the
# headline names (pipelines/report.py) they are stored under on each version: acc, speedup, mb.
CHAMPION_OBJECTIVES = ("accuracy", "latency_ms_p50", "size_mb")
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


TEST_DIGEST, TEST_CORRECT = "test_digest", "test_correct"  # version tags: which images, which it got right


def _result(key: str, numbers: dict[str, Any], correct: tuple[bool, ...] | None) -> Result:
    speed = numbers.get("speedup")
    low, high = numbers.get("speedup_ci_low", speed), numbers.get("speedup_ci_high", speed)
    return Result(key, float(numbers.get("acc", float("nan"))), correct,
                  speedup=Interval(speed, low, high) if None not in (speed, low, high) else None,
                  size_mb=numbers.get("mb"))


def registered_name(client: Any, base: str, digest: str | None) -> str:
    """``base`` while it holds versions of the same test split (by digest, the registered
    model's ``test_digest`` tag) or none yet; a model for other data gets its own name,
    ``<base>-<digest[:8]>``, so only comparable versions ever compete for the alias."""
    from mlflow.exceptions import MlflowException

    if not digest:
        return base
    try:
        theirs = client.get_registered_model(base).tags.get(TEST_DIGEST)
    except MlflowException:
        return base
    return base if theirs in (None, digest) else f"{base}-{digest[:8]}"


def register_final(params: Params, checkpoint: str | Path, headline: dict[str, Any],
                   pipeline_run: str | None = None, test_digest: str | None = None,
                   test_correct: tuple[bool, ...] | None = None,
                   side_by_side: Callable[[Any], SideBySide | None] | None = None) -> Registration | None:
    """Register the logged model of ``checkpoint`` as a new version of
    ``tracking.registered_model`` (or of its own name when that one holds another test split,
    :func:`registered_name`), tagged with the headline numbers, ``test_digest`` and its per-image
    test outcomes; move the :data:`CHAMPION` alias to it only when it improves on the version
    holding it (:func:`pipelines.core.decision.replaces` on :data:`CHAMPION_OBJECTIVES`: a tie
    keeps the holder), judged from ``side_by_side(holder_version)`` (both models on the same
    images and in one timing loop) when given, else from the holder's stored outcomes and
    speedup interval. A run whose latency was measured while the machine was busy (``noisy``)
    never moves it; a checkpoint byte-identical to the holder's is the same model (tied, not
    measured again: a re-run that rebuilt the same weights). The decision and its evidence are recorded on the version."""
    base = params.tracking.registered_model
    model = find_logged_model(params, checkpoint) if base else None
    if model is None:
        return None
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri())
    name = registered_name(client, base, test_digest)
    numbers = numeric_leaves(headline)
    tags = {**{k: repr(v) for k, v in numbers.items()}, "params_hash": params_hash(params),
            "dvc_exp": os.environ.get("DVC_EXP_NAME", ""), "pipeline_run": pipeline_run or ""}
    tags[CHECKPOINT_TAG] = model.tags[CHECKPOINT_TAG]  # found by it; the same bytes as the holder's: the same model
    if test_digest:
        tags[TEST_DIGEST] = test_digest
    if test_correct is not None:
        tags[TEST_CORRECT] = pack_outcomes(test_correct)
    try:
        client.create_registered_model(name, tags={TEST_DIGEST: test_digest} if test_digest else None)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = str(client.create_model_version(name, f"models:/{model.model_id}", run_id=model.source_run_id,
                                              tags=tags, model_id=model.model_id).version)
    try:
        holder = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        holder = None
    if headline.get("noisy"):
        move, reason = False, "latency measured while the machine was busy (noisy): not compared"
    elif headline.get(WARNING_TAG):  # a collapsed chain (pipelines/core/collapse.py) never takes it
        move, reason = False, f"the run warned: {headline[WARNING_TAG]}"
    elif holder is None:
        move, reason = True, "first version"
    elif test_digest and holder.tags.get(TEST_DIGEST) not in (None, test_digest):
        move, reason = True, f"version {holder.version} was measured on other test images: not comparable"
    elif holder.tags.get(CHECKPOINT_TAG) == tags[CHECKPOINT_TAG]:
        move, reason = False, (f"the same model as version {holder.version} (byte-identical checkpoint): "
                               "tied on every objective, the alias stays; not measured again")
    else:
        move, reason = _judge(holder, numbers, test_correct, side_by_side, client, name, version)
    if move:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "champion_decision", reason)
    return Registration(name, version, move, reason)


def _judge(holder: Any, numbers: dict[str, float], test_correct: tuple[bool, ...] | None,
           side_by_side: Callable[[Any], SideBySide | None] | None, client: Any, name: str,
           version: str) -> tuple[bool, str]:
    theirs = {k: _number(v) for k, v in holder.tags.items()}
    old_correct = unpack_outcomes(holder.tags.get(TEST_CORRECT))
    together = side_by_side(holder) if side_by_side is not None else None
    ratio = None
    how = "from the numbers each version was registered with"
    if together is not None:
        test_correct, old_correct, ratio = together.new_correct, together.old_correct, together.ratio
        how = "side by side: same test images" + (", one timing loop" if ratio is not None else "") \
            + (f" ({together.note})" if together.note else "")
        if ratio is not None:
            client.set_model_version_tag(name, version, "vs_champion_latency_ratio", ratio.describe("new", "old"))
    if test_correct is not None and old_correct is not None and len(test_correct) != len(old_correct):
        test_correct = old_correct = None
    new = _result("new", numbers, test_correct)
    old = _result(f"version {holder.version}", {k: v for k, v in theirs.items() if v is not None}, old_correct)
    evidence = explain(new, old, CHAMPION_OBJECTIVES, "new", f"v{holder.version}", ratio)
    client.set_model_version_tag(name, version, "vs_champion", f"{how}: {evidence}"[:5000])
    if replaces(new, old, CHAMPION_OBJECTIVES, ratio):
        return True, f"improves on version {holder.version} ({how}: {evidence})"
    return False, f"does not improve on version {holder.version}, which keeps the alias ({how}: {evidence})"


def version_checkpoint(name: str, version: str, dest: str | Path) -> Path | None:
    """The checkpoint file a registered version was logged with (``Run.log_model`` stores it in
    the model's ``extra_files``), downloaded into ``dest``; None for a version logged without one.
    It loads weights-only through the chain's own loader, int8 included, where MLflow's pickle of
    a torch.ao int8 model does not load back."""
    import mlflow

    uri = f"models:/{name}/{version}"
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/extra_files", dst_path=str(dest),
                                                         tracking_uri=tracking_uri()))
    except Exception:  # noqa: BLE001 - logged before checkpoints travelled with the model
        return None
    found = sorted(local.glob("*.pt"))
    return found[0] if found else None


def _number(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None
