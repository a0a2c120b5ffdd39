"""The pipeline parent run of one execution and the stage and trial runs under it, with the
recovery of runs left RUNNING by a killed process."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipelines.core.config import Params
from pipelines.tracking.run import Run, environment_tags, flatten, git_commit, params_hash
from pipelines.tracking.store import _quiet_mlflow, experiment_id, tracking_uri

PIPELINE_ROLE = "pipeline"


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
    # log_system_metrics: CPU and memory over time (system/*, every 10 s), next to the timings' noisy flag
    with _quiet_mlflow(), mlflow.start_run(experiment_id=exp_id, run_name=stage, parent_run_id=parent,
                                           tags=tags, log_system_metrics=True) as active:
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
