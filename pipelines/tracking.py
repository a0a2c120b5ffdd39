"""The one MLflow module: store location, experiment, parent/stage/trial runs, logging.

Layout in the store (DESIGN.md, Tracking):

- experiment ``tracking.experiment``, tagged ``mlflow.experimentKind=custom_model_development``;
- one *pipeline* parent run per pipeline execution (keyed by the DVC experiment name, or
  ``workspace``), opened by the first stage that runs and closed by ``report``;
- one run per stage execution under it, tagged ``stage``, ``git_commit``, ``params_hash`` and
  ``dvc_exp``; Optuna trials are nested runs under the search run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelines.core.config import Params
from pipelines.core.cpu import cpu_model, isa_summary
from pipelines.core.errors import TrackingError, first_line
from pipelines.core.io import project_root
from pipelines.core.kinds import is_eager_int8

PIPELINE_ROLE = "pipeline"
# A remote server gets this many seconds to answer the start-up probe (env var overrides).
PROBE_TIMEOUT_ENV = "COMPRESSION_LAB_TRACKING_PROBE_TIMEOUT_S"
_reachable: set[str] = set()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def check_reachable(uri: str | None = None) -> None:
    """Fail in seconds, before any compute, when a remote (``http(s)://``) tracking server does
    not answer: MLflow's own client retries a refused connection for minutes
    (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` x backoff). An HTTP answer such as 200 or 401/403 from an
    auth proxy counts as reachable; a refused/timed-out connection or a 5xx is a :class:`TrackingError`
    naming the URI, and so is a 404 (something answers, but it is not an MLflow server). Local
    stores (sqlite, file) are not probed."""
    uri = uri or tracking_uri()
    if not uri.lower().startswith(("http://", "https://")) or uri in _reachable:
        return
    timeout = float(os.environ.get(PROBE_TIMEOUT_ENV) or 5)
    context = None
    if uri.lower().startswith("https://"):  # honour MLflow's own TLS settings
        import ssl

        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            context = ssl._create_unverified_context()  # noqa: S323 - the user asked for it
        else:
            context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"))
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout, context=context):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 404:  # 404: whatever answers there has no MLflow /health
            raise TrackingError(f"MLflow tracking server {uri} answers HTTP {exc.code} on /health "
                                "(is an MLflow server running there? see `make server`)") from None
    except (urllib.error.URLError, OSError, socket.timeout, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"MLflow tracking server {uri} is not reachable ({str(reason)[:120]}); "
                            "start it with `make server` or unset MLFLOW_TRACKING_URI") from None
    _reachable.add(uri)


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

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    def _client(self):
        import mlflow

        return mlflow.MlflowClient(tracking_uri())

    def log_params(self, params: dict[str, Any]) -> None:
        if self.enabled and params:
            import mlflow

            mlflow.log_params({k: str(v)[:500] for k, v in params.items()}, run_id=self.run_id)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.enabled:
            import mlflow

            numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            if numeric:
                mlflow.log_metrics(numeric, step=step, run_id=self.run_id)

    def log_history(self, rows: list[dict[str, float]], prefix: str = "") -> None:
        for row in rows:
            self.log_metrics({f"{prefix}{k}": v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.enabled and tags:
            from mlflow.entities import RunTag

            self._client().log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled and Path(path).exists():
            self._client().log_artifact(self.run_id, str(path), artifact_path)

    def log_model(self, model: Any, example: Any, name: str = "model") -> None:
        """Log a PyTorch model with an input example (MLflow infers the signature from it)."""
        if not self.enabled:
            return
        import mlflow
        import torch

        # torch.export (MLflow's default "pt2") cannot trace torch.ao's packed int8 params.
        fmt = "pickle" if is_eager_int8(model) else "pt2"
        with _quiet_mlflow():
            mlflow.pytorch.log_model(
                model, name=name, input_example=example.numpy(), run_id=self.run_id,
                serialization_format=fmt, pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            )


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def experiment_id(name: str) -> str:
    import mlflow

    for noisy in ("alembic", "mlflow.store.db.utils"):  # "Creating initial MLflow database tables..."
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else client.create_experiment(name)
        client.set_experiment_tag(exp_id, "mlflow.experimentKind", "custom_model_development")
    except Exception as exc:  # noqa: BLE001 - any store failure becomes one clear line
        raise TrackingError(f"MLflow store {uri} is not usable: {first_line(exc)}") from None
    return exp_id


def pipeline_key() -> str:
    return os.environ.get("DVC_EXP_NAME") or "workspace"


def pipeline_parent(exp_id: str, create: bool = True) -> str | None:
    """The open pipeline run for this execution (DVC experiment or workspace), made if missing."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    key = pipeline_key()
    found = client.search_runs(
        [exp_id],
        filter_string=(f"tags.role = '{PIPELINE_ROLE}' and tags.pipeline_key = '{key}' "
                       "and attributes.status = 'RUNNING'"),
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if found:
        return found[0].info.run_id
    if not create:
        return None
    tags = {"role": PIPELINE_ROLE, "pipeline_key": key, "git_commit": git_commit(),
            "mlflow.runName": f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')}"}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp"] = os.environ["DVC_EXP_NAME"]
    return client.create_run(exp_id, tags=tags).info.run_id


def close_pipeline(params: Params) -> None:
    """Mark this execution's pipeline run finished (the report stage's last act)."""
    if not params.tracking.enabled:
        return
    import mlflow

    parent = pipeline_parent(experiment_id(params.tracking.experiment), create=False)
    if parent:
        mlflow.MlflowClient(tracking_uri()).set_terminated(parent, "FINISHED")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def mark_killed(exp_id: str, parent: str | None, stage: str) -> None:
    """A stage killed with SIGKILL (or a lost machine) leaves its run RUNNING forever. When the
    stage runs again under the same pipeline parent, mark such runs KILLED, but only those started
    on this host by a process that no longer exists (never a live run on another machine)."""
    if parent is None:
        return
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    stale = client.search_runs(
        [exp_id], filter_string=(f"tags.mlflow.parentRunId = '{parent}' and tags.stage = '{stage}' "
                                 "and attributes.status = 'RUNNING'"), max_results=50)
    host = socket.gethostname()
    for run in stale:
        tags = run.data.tags
        pid = tags.get("host.pid", "")
        if tags.get("host.name") == host and pid.isdigit() and not _alive(int(pid)):
            client.set_terminated(run.info.run_id, "KILLED")


@contextmanager
def stage_run(params: Params, stage: str, sections: list[str]) -> Iterator[Run]:
    """One MLflow run for one stage execution, under the pipeline parent, with the stage's
    sections logged as dotted params. Marked FAILED if the body raises."""
    if not params.tracking.enabled:
        yield Run(None)
        return
    import mlflow

    exp_id = experiment_id(params.tracking.experiment)
    parent = pipeline_parent(exp_id)
    mark_killed(exp_id, parent, stage)
    tags = {"stage": stage, "git_commit": git_commit(), "params_hash": params_hash(params),
            "host.name": socket.gethostname(), "host.pid": str(os.getpid()), **environment_tags()}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp"] = os.environ["DVC_EXP_NAME"]
    with _quiet_mlflow(), mlflow.start_run(experiment_id=exp_id, run_name=stage, parent_run_id=parent,
                                           tags=tags) as active:
        run = Run(active.info.run_id)
        raw = params.model_dump()
        logged: dict[str, Any] = {}
        for section in sections:
            logged.update(flatten(section, raw[section]))
        run.log_params(logged)
        yield run


@contextmanager
def child_run(parent: Run, name: str, tags: dict[str, Any] | None = None) -> Iterator[Run]:
    """A nested run under ``parent`` (used for Optuna trials); FAILED if the body raises."""
    if not parent.enabled:
        yield Run(None)
        return
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    info = client.get_run(parent.run_id).info
    created = client.create_run(info.experiment_id, run_name=name,
                                tags={"mlflow.parentRunId": parent.run_id, **(tags or {})})
    run = Run(created.info.run_id)
    try:
        yield run
    except BaseException:
        client.set_terminated(run.run_id, "FAILED")
        raise
    client.set_terminated(run.run_id, "FINISHED")
