"""What every stage entry point shares: params loading, user-error handling, outputs, logging.

A stage body receives a :class:`~pipelines.training.context.Context` and an MLflow :class:`Run`;
it calls its step of :mod:`pipelines.chain` and hands its results to :func:`write_outputs`.
Checkpoints load and save through :mod:`pipelines.models.checkpoint` (fp32, no quantizer
imported); a stage that meets int8 models passes :mod:`pipelines.compression.checkpoint`'s
``load_model`` / ``save_model`` instead.

:data:`SECTIONS` is the one list of the params sections each stage reads: ``dvc.yaml`` declares
exactly these (a test checks it) and :func:`main` logs exactly these to MLflow.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from pipelines.core.config import Params, load_params
from pipelines.core.errors import CheckpointError, UserError
from pipelines.core.io import write_json
from pipelines.core.params_base import usable_threads
from pipelines.data import dataset_arrays
from pipelines.measurement.accuracy import with_intervals
from pipelines.models.checkpoint import Loaded, load_model, save_model
from pipelines.tracking import Run, check_reachable, close_pipeline, stage_run
from pipelines.training.context import Context

MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
REPORTS = Path("reports")

# The params sections each stage reads (seed is logged with every stage). Whole sections, never
# single keys: a section written short (only the keys it changes, the rest taking the schema's
# defaults) must still run every stage, and DVC refuses a key-by-key param the file lacks. So a
# change anywhere in a section re-runs every stage that reads it: promoting a search trial (which
# sets student.channels/depth and benchmark.deploy_runtime) re-runs the search too, and
# benchmark.runtimes re-runs quantize (whose engine choice reads the timing keys).
SECTIONS: dict[str, list[str]] = {
    "train_baseline": ["seed", "data", "teacher", "train"],
    "distill": ["seed", "data", "student", "train", "distill"],
    "prune": ["seed", "data", "train", "prune"],
    # benchmark (timing keys): quantize.engine auto times eager int8 against PT2E int8 here
    "quantize": ["seed", "data", "train", "quantize", "benchmark"],
    "compile_benchmark": ["seed", "data", "quantize", "benchmark"],  # quantize: the deploy int8 calibration
    "search": ["seed", "data", "student", "train", "benchmark", "search"],  # the teacher: models/teacher.pt
    "report": ["data", "distill", "prune", "quantize", "benchmark"],
}


# which stage writes each model (named in the error when a model is missing)
WRITTEN_BY = {"teacher": "train_baseline", "student": "distill", "pruned": "prune", "quantized": "quantize"}


def model_path(name: str) -> Path:
    return MODELS / f"{name}.pt"


def load_checkpoint(ctx: Context, name: str, loader: Callable[[Path], Loaded] = load_model) -> Loaded:
    """``models/<name>.pt``, refused with one line when it is missing or was built for other data
    than the params describe (input channels, classes), before it meets that data. ``loader``:
    the fp32 loader, or :func:`pipelines.compression.checkpoint.load_model` where int8 models load."""
    path = model_path(name)
    if not path.exists():
        raise CheckpointError(f"{path}: not found; run `dvc repro {WRITTEN_BY[name]}` (the stage that writes it) "
                              "first")
    loaded = loader(path)
    got = (loaded.spec.get("in_channels"), loaded.spec.get("num_classes"))
    want = (ctx.data.in_channels, ctx.data.num_classes)
    if got != want:
        raise CheckpointError(f"{path}: built for {got[0]} input channels and {got[1]} classes, but "
                              f"data.name={ctx.params.data.name} has {want[0]} and {want[1]}; re-run "
                              f"`dvc repro -f {WRITTEN_BY[name]}`")
    return loaded


def load(ctx: Context, name: str, loader: Callable[[Path], Loaded] = load_model) -> nn.Module:
    return load_checkpoint(ctx, name, loader).model


def data_source(params: Params) -> Path:
    """Where the training data comes from: scikit-learn's bundled digits file, else ``data.root``."""
    if params.data.name == "digits":
        import sklearn.datasets

        return Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    return Path(params.data.root).resolve()


def log_training_data(ctx: Context, run: Run) -> None:
    """The train split as the run's MLflow dataset input (name, digest, source)."""
    if not run.enabled:  # a streamed split's digest reads every file: only when it is logged
        return
    features, targets = dataset_arrays(ctx.data.train)
    run.log_dataset(f"{ctx.data.name}-train", features, targets, data_source(ctx.params))


def write_outputs(ctx: Context, run: Run, stage: str, metrics: dict[str, Any], *,
                  model: nn.Module | None = None, model_name: str | None = None,
                  spec: dict[str, Any] | None = None, save_kwargs: dict[str, Any] | None = None,
                  saver: Callable[..., Path] = save_model,
                  history: list[dict[str, float]] | None = None, artifacts: list[Path] = (),
                  logged_metrics: dict[str, Any] | None = None) -> None:
    """Checkpoint (atomic), ``metrics/<stage>.json``, training curve, and the same to MLflow:
    the numbers of ``metrics`` (or ``logged_metrics``) under their dotted names, the model as a
    logged model named ``model_name`` with those numbers linked to it, and the train split.
    ``saver``: the fp32 writer, or :func:`pipelines.compression.checkpoint.save_model` for int8."""
    metrics = with_intervals(metrics, len(ctx.data.test), len(ctx.data.val))  # every accuracy with its 95% interval
    checkpoint = None
    if model is not None:
        checkpoint = saver(model_path(model_name), model, spec, **(save_kwargs or {}),
                                extra={"stage": stage, "metrics": metrics})
    if history:
        write_json(PLOTS / f"{stage}.json", history)
        run.log_history(history)
    write_json(METRICS / f"{stage}.json", metrics)
    for path in artifacts:
        run.log_artifact(path)
    logged = metrics if logged_metrics is None else logged_metrics
    if model is not None:
        log_training_data(ctx, run)
        if ctx.params.tracking.log_models:
            run.log_model(model, ctx.example(2), name=model_name, checkpoint=checkpoint, metrics=logged)
            return
    run.log_metrics(logged)


def main(stage: str, body: Callable[[Context, Run], None], closes_pipeline: bool = False) -> None:
    """Entry point: validate all params first, probe a remote tracking server (seconds, not
    MLflow's minutes of retries), then run ``body`` inside the stage's MLflow run (which logs the
    stage's :data:`SECTIONS`). A :class:`~pipelines.core.errors.UserError` ends as one line on
    stderr and exit code 2; Ctrl-C as one line and exit 130. The last stage closes the pipeline
    parent run. Stages that time models (their sections include ``benchmark``) run at
    ``benchmark.num_threads`` (at most the cores it may use); the others at torch's default."""
    try:
        params = load_params(os.environ.get("PARAMS_FILE", "params.yaml"))
        if params.tracking.enabled:
            check_reachable()
        if any(key.partition(".")[0] == "benchmark" for key in SECTIONS[stage]):
            import torch

            torch.set_num_threads(usable_threads(params.benchmark.num_threads))
        ctx = Context(params)
        with stage_run(params, stage, SECTIONS[stage]) as run:
            body(ctx, run)
        if closes_pipeline:
            close_pipeline(params)
    except UserError as exc:
        print(f"{stage}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{stage}: interrupted; outputs already written are complete (written atomically)", file=sys.stderr)
        raise SystemExit(130) from None
