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

from pipelines.checkpoint import CheckpointError, Loaded, load_model, save_model
from pipelines.config import ParamsError, load_params
from pipelines.data import DataError
from pipelines.io import write_json
from pipelines.tracking import Run, TrackingError, check_reachable, close_pipeline, stage_run
from pipelines.workflow import Context

MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")

USER_ERRORS = (ParamsError, DataError, CheckpointError, TrackingError)


def model_path(name: str) -> Path:
    return MODELS / f"{name}.pt"


WRITTEN_BY = {"teacher": "train_baseline", "student": "distill", "pruned": "prune", "quantized": "quantize"}


def checkpoint(ctx: Context, name: str) -> Loaded:
    """``models/<name>.pt``, refused with one line when it was built for other data than the
    params describe (input channels, classes), before it meets that data."""
    path = model_path(name)
    loaded = load_model(path)
    got = (loaded.spec.get("in_channels"), loaded.spec.get("num_classes"))
    want = (ctx.data.in_channels, ctx.data.num_classes)
    if got != want:
        raise CheckpointError(f"{path}: built for {got[0]} input channels and {got[1]} classes, but "
                              f"data.name={ctx.params.data.name} has {want[0]} and {want[1]}; re-run "
                              f"{WRITTEN_BY.get(name, 'the stage that writes it')} (dvc repro -f)")
    return loaded


def load(ctx: Context, name: str) -> nn.Module:
    return checkpoint(ctx, name).model


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


INTERRUPTED = "every file it wrote is complete (written whole or not at all); run it again to finish"


def main(stage: str, sections: list[str], body: Callable[[Context, Run], None],
         closes_pipeline: bool = False, interrupted: str = INTERRUPTED) -> None:
    """Entry point: validate all params first, probe a remote tracking server (seconds, not
    MLflow's minutes of retries), then run ``body`` inside the stage's MLflow run; a user error
    ends as one line on stderr and exit code 2, before anything is written; Ctrl-C as one line
    (``interrupted``), exit code 130 and the MLflow run marked KILLED. The last stage closes the
    pipeline parent run."""
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
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's exit code for SIGINT, run marked KILLED
        print(f"{stage}: interrupted; {interrupted}", file=sys.stderr)
        raise SystemExit(130) from None
