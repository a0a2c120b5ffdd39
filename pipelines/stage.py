"""What every stage entry point shares: params loading, user-error handling, outputs, logging.

A stage body receives a :class:`~pipelines.workflow.Context` and an MLflow :class:`Run`; it
calls :mod:`pipelines.workflow` and hands its results to :func:`write_outputs`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from pipelines.checkpoint import CheckpointError, load_model, save_model
from pipelines.config import ParamsError, load_params
from pipelines.data import DataError
from pipelines.io import write_json
from pipelines.models import ModelError
from pipelines.quantize import QuantizeError
from pipelines.tracking import Run, TrackingError, check_reachable, close_pipeline, stage_run
from pipelines.workflow import Context

MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")

USER_ERRORS = (ParamsError, DataError, CheckpointError, TrackingError, ModelError, QuantizeError)


def model_path(name: str) -> Path:
    return MODELS / f"{name}.pt"


def load(name: str) -> nn.Module:
    return load_model(model_path(name)).model


def write_outputs(ctx: Context, run: Run, stage: str, metrics: dict[str, Any], *,
                  model: nn.Module | None = None, model_name: str | None = None,
                  spec: dict[str, Any] | None = None, save_kwargs: dict[str, Any] | None = None,
                  history: list[dict[str, float]] | None = None, artifacts: list[Path] = ()) -> None:
    """Checkpoint (atomic), ``metrics/<stage>.json``, training curve, and the same to MLflow."""
    if model is not None:
        save_model(model_path(model_name), model, spec, **(save_kwargs or {}),
                   extra={"stage": stage, "metrics": metrics})
    if history:
        write_json(PLOTS / f"{stage}.json", history)
        run.log_history(history)
    write_json(METRICS / f"{stage}.json", metrics)
    run.log_metrics(metrics)
    for path in artifacts:
        run.log_artifact(path)
    if model is not None and ctx.params.tracking.log_models:
        run.log_model(model, ctx.example(2))


def main(stage: str, sections: list[str], body: Callable[[Context, Run], None],
         closes_pipeline: bool = False) -> None:
    """Entry point: validate all params first, probe a remote tracking server (seconds, not
    MLflow's minutes of retries), then run ``body`` inside the stage's MLflow run; a user error
    ends as one line on stderr and exit code 2, before anything is written. The last stage closes
    the pipeline parent run."""
    try:
        params = load_params(os.environ.get("PARAMS_FILE", "params.yaml"))
        if params.tracking.enabled:
            check_reachable()
        import torch

        torch.set_num_threads(params.benchmark.num_threads)
        ctx = Context(params)
        with stage_run(params, stage, sections) as run:
            body(ctx, run)
        if closes_pipeline:
            close_pipeline(params)
    except USER_ERRORS as exc:
        print(f"{stage}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
