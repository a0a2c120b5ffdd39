"""A handle on one MLflow run (params, metrics, tags, artifacts, datasets, models) and the
values every run is tagged with."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from pipelines.core.config import Params
from pipelines.core.cpu import cpu_model, isa_summary
from pipelines.core.io import file_digest, project_root
from pipelines.core.kinds import is_eager_int8
from pipelines.core.urls import mask_url
from pipelines.tracking.store import _quiet_mlflow, runs_url, tracking_uri, ui_base

CHECKPOINT_TAG = "checkpoint_sha256"

MAX_DESCRIPTION = 8000  # MLflow's limit on a tag value (the run description is a tag)


def params_hash(params: Params) -> str:
    blob = json.dumps(params.model_dump(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def git_commit(root: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root or project_root(), capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), sub))
        return out
    return {prefix: value}


def numeric_leaves(metrics: dict[str, Any]) -> dict[str, float]:
    """Numbers of a (nested) metrics dict under their dotted path: ``{"teacher": {"size_mb": 1}}``
    -> ``{"teacher.size_mb": 1.0}``, the names ``dvc metrics show`` prints for the same file."""
    return {k: float(v) for k, v in flatten("", metrics).items()
            if isinstance(v, (int, float))}


def environment_tags() -> dict[str, str]:
    import torch

    tags = {
        "host.platform": platform.platform(),
        "host.processor": cpu_model(),
        "host.cpu_isa": isa_summary(),
        "host.cpu_count": str(os.cpu_count()),
        "torch.version": torch.__version__,
        "torch.num_threads": str(torch.get_num_threads()),
        "torch.cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    for lib in ("torchvision", "torchao", "torch_pruning", "mlflow", "optuna"):
        try:  # installed version, without paying seconds to import the library
            tags[f"{lib}.version"] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:  # a missing optional library is just not tagged
            pass
    return tags


class Run:
    """Thin handle over an MLflow run; a no-op when tracking is disabled."""

    def __init__(self, run_id: str | None, experiment_id: str | None = None, parent_id: str | None = None) -> None:
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.parent_id = parent_id

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    @property
    def url(self) -> str:
        return f"{runs_url(self.experiment_id)}/{self.run_id}" if self.enabled else ""

    def artifact_url(self, path: str) -> str:
        """The absolute URL that serves one of this run's artifacts from the UI (see :func:`ui_base`)."""
        return f"{ui_base()}/get-artifact?path={path}&run_uuid={self.run_id}" if self.enabled else ""

    @property
    def pipeline(self) -> "Run":
        """The pipeline parent run this stage run sits under (a no-op handle when none)."""
        return Run(self.parent_id, self.experiment_id)

    def _client(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri())

    # The client on tracking_uri(), never mlflow's fluent API: that one writes to whatever store the
    # process selected first (mlflow.set_tracking_uri), not to the one $MLFLOW_TRACKING_URI names now.
    def log_params(self, params: dict[str, Any]) -> None:
        if self.enabled and params:
            from mlflow.entities import Param

            # a URL (search.storage) is logged with its password masked
            self._client().log_batch(self.run_id, params=[Param(k, mask_url(str(v))[:500]) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None, model_id: str | None = None) -> None:
        """Every number of ``metrics`` under its dotted path (nested dicts flattened, strings
        skipped); with ``model_id`` the values are also the logged model's metrics."""
        if self.enabled:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            rows = [Metric(k, v, now, step or 0, model_id=model_id, run_id=self.run_id)
                    for k, v in numeric_leaves(metrics).items()]
            if rows:
                self._client().log_batch(self.run_id, metrics=rows)

    def log_history(self, rows: list[dict[str, float]], prefix: str = "") -> None:
        for row in rows:
            self.log_metrics({f"{prefix}{k}": v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.enabled and tags:
            from mlflow.entities import RunTag

            self._client().log_batch(self.run_id, tags=[RunTag(k, mask_url(str(v))) for k, v in tags.items()])

    def set_description(self, markdown: str) -> None:
        """The run's description (rendered as Markdown on its overview page)."""
        if len(markdown) > MAX_DESCRIPTION:
            markdown = markdown[:MAX_DESCRIPTION - 40].rsplit("\n", 1)[0] + "\n\n(cut: see summary.md)"
        self.set_tags({"mlflow.note.content": markdown})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled and Path(path).exists():
            self._client().log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.enabled:
            self._client().log_text(self.run_id, text, artifact_file)

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        """Rows as an MLflow table artifact (the run's Artifacts tab shows it as a table and the
        Evaluation view can compare it across runs)."""
        if self.enabled and rows:
            import pandas as pd

            self._client().log_table(self.run_id, pd.DataFrame(rows), artifact_file)

    def log_dataset(self, name: str, features: Any, targets: Any, source: str | Path,
                    context: str = "training") -> None:
        """A dataset input (name, digest of the arrays, source path) on this run."""
        if not self.enabled:
            return
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        dataset = mlflow.data.from_numpy(features, targets=targets, source=str(source), name=name)
        self._client().log_inputs(self.run_id, datasets=[DatasetInput(
            dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])])

    def log_model(self, model: Any, example: Any, name: str = "model", checkpoint: str | Path | None = None,
                  metrics: dict[str, Any] | None = None) -> str | None:
        """Log a PyTorch model named ``name`` with an input example (MLflow infers the signature
        from it), tagged with ``checkpoint``'s sha256 and carrying the checkpoint file itself
        (:func:`pipelines.tracking.registry.version_checkpoint`: the weights-only form any later run can load, int8 included,
        where MLflow's pickle of a torch.ao int8 model does not load back); ``metrics`` are logged
        to this run and linked to the model. Returns the logged model's id."""
        if not self.enabled:
            return None
        import mlflow
        import torch

        tags = {"stage_model": name}
        if checkpoint is not None:
            tags[CHECKPOINT_TAG] = file_digest(checkpoint)
        # torch.export (MLflow's default "pt2") cannot trace torch.ao's packed int8 params.
        fmt = "pickle" if is_eager_int8(model) else "pt2"
        with _quiet_mlflow():
            info = mlflow.pytorch.log_model(
                model, name=name, input_example=example.numpy(), run_id=self.run_id, tags=tags,
                serialization_format=fmt, pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                extra_files=[str(checkpoint)] if checkpoint is not None else None,
            )
        if metrics:
            self.log_metrics(metrics, model_id=info.model_id)
        return info.model_id
