"""The one MLflow module: store location, experiment, parent/stage/trial runs, logging.

Layout in the store (DESIGN.md, Tracking):

- experiment ``tracking.experiment``, tagged ``mlflow.experimentKind=custom_model_development``;
- one *pipeline* parent run per pipeline execution (keyed by the DVC experiment name, or
  ``workspace``), opened by the first stage that runs and closed by ``report``;
- one run per stage execution under it, tagged ``stage``, ``git_commit``, ``params_hash`` and
  ``dvc_exp``; Optuna trials are nested runs under the search run;
- the parent carries every params section, the headline metrics (``metrics/summary.json``) and
  the report as its description; it is named by the DVC experiment (or params hash) and time;
- each stage's model is a logged model named after it (``teacher`` ... ``quantized``), tagged with
  its checkpoint's sha256 so later stages find it and link their measurements to it; the final
  one is registered under ``tracking.registered_model``, and the ``champion`` alias moves to the
  new version unless the version holding it dominates it.
"""

from __future__ import annotations

import base64
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
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.core.config import Params
from pipelines.core.cpu import cpu_model, isa_summary
from pipelines.core.dominance import dominates_named
from pipelines.core.errors import TrackingError, error_line, first_line
from pipelines.core.io import file_digest, project_root
from pipelines.core.kinds import is_eager_int8
from pipelines.core.urls import mask_url, redact, without_userinfo

PIPELINE_ROLE = "pipeline"
CHECKPOINT_TAG = "checkpoint_sha256"
CHAMPION = "champion"
# How the champion alias compares two final models (headline names, see pipelines/report.py):
# ratios measured side by side, so versions measured on different days stay comparable.
CHAMPION_DIRECTIONS = {"acc": "maximize", "speedup": "maximize", "mb": "minimize"}
MAX_DESCRIPTION = 8000  # MLflow's limit on a tag value (the run description is a tag)
# A remote server gets this many seconds to answer the start-up probe (env var overrides).
PROBE_TIMEOUT_ENV = "COMPRESSION_LAB_TRACKING_PROBE_TIMEOUT_S"
_reachable: set[str] = set()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def check_reachable(uri: str | None = None) -> None:
    """Fail in seconds, before any compute, when a remote tracking store does not answer: MLflow's
    own client retries a refused connection for minutes (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` x
    backoff for a server, ten attempts over ~100 s for a database). For an ``http(s)://`` server an
    HTTP answer such as 200 or 401/403 from an auth proxy counts as reachable; a refused/timed-out
    connection or a 5xx is a :class:`TrackingError` naming the URI (password masked), and so is a
    404 (something answers, but it is not an MLflow server). A database URL (PostgreSQL, MySQL,
    SQL Server) gets one connection attempt, which reports the real reason (refused, unknown host,
    authentication failed). Local stores (sqlite, file) are not probed."""
    uri = uri or tracking_uri()
    if uri in _reachable:
        return
    timeout = float(os.environ.get(PROBE_TIMEOUT_ENV) or 5)
    if uri.lower().startswith(("http://", "https://")):
        _probe_http(uri, timeout)
    else:
        reason = database_unreachable(uri, timeout)
        if reason:
            raise TrackingError(f"MLflow tracking store {mask_url(uri)} is not reachable ({reason}); "
                                "check the URL and the database server, or unset MLFLOW_TRACKING_URI")
    _reachable.add(uri)


def _probe_http(uri: str, timeout: float) -> None:
    context = None
    if uri.lower().startswith("https://"):  # honour MLflow's own TLS settings
        import ssl

        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            context = ssl._create_unverified_context()  # noqa: S323 - the user asked for it
        else:
            context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"))
    bare, credentials = without_userinfo(uri)  # user:password@ goes in a header, as MLflow sends it
    headers = {}
    if credentials:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
    try:
        request = urllib.request.Request(bare.rstrip("/") + "/health", headers=headers)
        with urllib.request.urlopen(request, timeout=timeout, context=context):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 404:  # 404: whatever answers there has no MLflow /health
            raise TrackingError(f"MLflow tracking server {mask_url(uri)} answers HTTP {exc.code} on /health "
                                "(is an MLflow server running there? see `make server`)") from None
    except (urllib.error.URLError, OSError, socket.timeout, ValueError) as exc:
        reason = redact(str(getattr(exc, "reason", exc))[:120], uri)
        raise TrackingError(f"MLflow tracking server {mask_url(uri)} is not reachable ({reason}); "
                            "start it with `make server` or unset MLFLOW_TRACKING_URI") from None


DATABASE_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433}


def database_unreachable(url: str, timeout: float) -> str | None:
    """Why the database server of an SQLAlchemy URL (PostgreSQL, MySQL, SQL Server) cannot be
    used, found with one connection attempt of at most ``timeout`` seconds (secrets masked), or
    None when it can be. Other URLs (sqlite, journal files, http) are not probed: None."""
    dialect = url.partition("://")[0].split("+")[0].lower()
    if dialect not in DATABASE_PORTS or "://" not in url:
        return None
    try:
        parts = urllib.parse.urlsplit(without_userinfo(url)[0])
        address = (parts.hostname, parts.port or DATABASE_PORTS[dialect])
    except ValueError as exc:  # a port that is not a number
        return redact(str(exc), url)
    if address[0]:  # no host: a local socket, left to the driver
        try:
            socket.create_connection(address, timeout=timeout).close()
        except OSError as exc:
            return redact(f"{address[0]}:{address[1]}: {exc.strerror or exc}", url)
    import sqlalchemy

    args = {"connect_timeout": max(1, round(timeout))} if dialect != "mssql" else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - driver missing, authentication, unknown database ...
        return redact(error_line(exc), url)
    return None


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


def ui_base() -> str:
    """Where this store's MLflow UI answers: the tracking server itself, else what `make ui`
    serves (127.0.0.1 on ``$MLFLOW_PORT``, default 5000)."""
    uri = tracking_uri()
    if uri.lower().startswith(("http://", "https://")):
        return uri.rstrip("/")
    return f"http://127.0.0.1:{os.environ.get('MLFLOW_PORT') or 5000}"


def runs_url(experiment_id: str) -> str:
    """The experiment's training-runs view (MLflow 3.17 may otherwise open its GenAI overview)."""
    return f"{ui_base()}/#/experiments/{experiment_id}/runs"


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
        from it), tagged with ``checkpoint``'s sha256; ``metrics`` are logged to this run and
        linked to the model. Returns the logged model's id."""
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
            )
        if metrics:
            self.log_metrics(metrics, model_id=info.model_id)
        return info.model_id


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
        raise TrackingError(f"MLflow store {mask_url(uri)} is not usable: {redact(first_line(exc), uri)}") from None
    return exp_id


def pipeline_key() -> str:
    return os.environ.get("DVC_EXP_NAME") or "workspace"


def pipeline_label(params: Params | None = None) -> str:
    """What tells pipeline executions apart at a glance: the DVC experiment name, else the params
    hash (the run name adds the time)."""
    return os.environ.get("DVC_EXP_NAME") or (f"params {params_hash(params)[:8]}" if params else "workspace")


def pipeline_parent(exp_id: str, create: bool = True, params: Params | None = None) -> str | None:
    """The open pipeline run for this execution (DVC experiment or workspace), made if missing;
    a new one carries every params section."""
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
            "mlflow.runName": f"{pipeline_label(params)} {time.strftime('%m-%d %H:%M:%S')}"}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp"] = os.environ["DVC_EXP_NAME"]
    if params is not None:
        tags["params_hash"] = params_hash(params)
    run_id = client.create_run(exp_id, tags=tags).info.run_id
    if params is not None:
        Run(run_id).log_params(all_params(params))
    return run_id


def all_params(params: Params) -> dict[str, Any]:
    """Every params section as dotted keys (``distill.temperature`` ...), as the stage runs log theirs."""
    return flatten("", params.model_dump())


def close_pipeline(params: Params) -> None:
    """Mark this execution's pipeline run finished (the report stage's last act)."""
    if not params.tracking.enabled:
        return
    import mlflow

    parent = pipeline_parent(experiment_id(params.tracking.experiment), create=False)
    if parent:
        mlflow.MlflowClient(tracking_uri()).set_terminated(parent, "FINISHED")


# --- logged models and the registry -------------------------------------------------------------

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
    for run in stale:
        if _dead_here(run):
            client.set_terminated(run.info.run_id, "KILLED")
            # its nested runs (a search's trials) died with it
            for child in client.search_runs([exp_id], filter_string=(
                    f"tags.mlflow.parentRunId = '{run.info.run_id}' and attributes.status = 'RUNNING'")):
                if _dead_here(child):
                    client.set_terminated(child.info.run_id, "KILLED")


def _process_tags() -> dict[str, str]:
    """Which process on which host a run belongs to (see :func:`mark_killed`)."""
    return {"host.name": socket.gethostname(), "host.pid": str(os.getpid())}


def _dead_here(run: Any) -> bool:
    """Started on this host by a process that no longer exists."""
    tags = run.data.tags
    pid = tags.get("host.pid", "")
    return tags.get("host.name") == socket.gethostname() and pid.isdigit() and not _alive(int(pid))


@contextmanager
def stage_run(params: Params, stage: str, sections: list[str]) -> Iterator[Run]:
    """One MLflow run for one stage execution, under the pipeline parent, with the stage's
    sections (or dotted keys) logged as dotted params. Marked FAILED if the body raises."""
    if not params.tracking.enabled:
        yield Run(None)
        return
    import mlflow

    exp_id = experiment_id(params.tracking.experiment)
    parent = pipeline_parent(exp_id, params=params)
    mark_killed(exp_id, parent, stage)
    tags = {"stage": stage, "git_commit": git_commit(), "params_hash": params_hash(params),
            **_process_tags(), **environment_tags()}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp"] = os.environ["DVC_EXP_NAME"]
    with _quiet_mlflow(), mlflow.start_run(experiment_id=exp_id, run_name=stage, parent_run_id=parent,
                                           tags=tags) as active:
        run = Run(active.info.run_id, exp_id, parent)
        raw = params.model_dump()
        logged: dict[str, Any] = {}
        for key in sections:  # a section, or one dotted key of it
            section, _, field = key.partition(".")
            logged.update(flatten(key, raw[section][field] if field else raw[section]))
        run.log_params(logged)
        try:
            yield run
        except KeyboardInterrupt:  # Ctrl-C: the user stopped it, it did not fail
            mlflow.end_run("KILLED")
            raise


@contextmanager
def child_run(parent: Run, name: str, tags: dict[str, Any] | None = None,
              stopped: tuple[type[BaseException], ...] = ()) -> Iterator[Run]:
    """A nested run under ``parent`` (used for Optuna trials); FAILED if the body raises, KILLED
    if it raises one of ``stopped`` (a trial stopped on purpose, e.g. pruned)."""
    if not parent.enabled:
        yield Run(None)
        return
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    info = client.get_run(parent.run_id).info
    created = client.create_run(info.experiment_id, run_name=name,
                                tags={"mlflow.parentRunId": parent.run_id, **_process_tags(), **(tags or {})})
    run = Run(created.info.run_id, info.experiment_id, parent.run_id)
    try:
        yield run
    except BaseException as exc:
        client.set_terminated(run.run_id, "KILLED" if isinstance(exc, (KeyboardInterrupt, *stopped)) else "FAILED")
        raise
    client.set_terminated(run.run_id, "FINISHED")
