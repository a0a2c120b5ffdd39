"""Stage search: Optuna over distill -> prune -> quantize -> benchmark -> reports/search/.

    python -m stages.search [--n-trials N] [--timeout SECONDS] [--storage URL] [--worker]

Runs (or resumes) the study ``search.study_name`` in ``--storage`` / ``$OPTUNA_STORAGE`` /
``search.storage`` / ``sqlite:///<repo root>/optuna.db`` for N more trials (default
``search.n_trials``; 0 runs none and only writes the outputs from the study).

``--worker``: one of many processes or machines sharing the study (``make worker``): it runs its N
trials and logs them, but writes nothing under ``reports/`` and leaves the MLflow pipeline run
open; afterwards ``python -m stages.search --n-trials 0`` (or ``make search N=0``) writes the
outputs from every worker's trials.
"""

import argparse
import os

# One line per trial instead of hundreds of progress bars (tqdm reads this when it is imported).
os.environ.setdefault("TQDM_DISABLE", "1")

from pipelines import stage  # noqa: E402
from pipelines.core.config import load_params  # noqa: E402
from pipelines.search import run_search  # noqa: E402
from pipelines.tracking import experiment_id, pipeline_parent  # noqa: E402


def _opens_pipeline() -> bool:
    """True when no pipeline run is open, i.e. this search run will open (and so must close) one:
    run after `report` closed the chain's parent, or on its own (`make search`). Joining an
    open pipeline run leaves closing it to `report`."""
    try:
        params = load_params(os.environ.get("PARAMS_FILE", "params.yaml"))
        if not params.tracking.enabled:
            return False
        return pipeline_parent(experiment_id(params.tracking.experiment), create=False) is None
    except Exception:  # noqa: BLE001 - stage.main reports params/store errors properly
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.search", description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=None, help="trials to add (default: search.n_trials)")
    parser.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="Optuna storage (beats $OPTUNA_STORAGE and search.storage): postgresql://user:pw@host/db, "
                             "sqlite:///path.db or journal:path")
    parser.add_argument("--worker", action="store_true",
                        help="join the shared study as one of many workers: run trials, write no reports/")
    args = parser.parse_args(argv)
    if args.n_trials is not None and args.n_trials < 0:
        parser.error(f"--n-trials must be 0 (outputs only) or a positive integer (got {args.n_trials})")
    if args.worker and args.n_trials == 0:
        parser.error("--worker with --n-trials 0 would do nothing; drop --worker to write the outputs")

    def body(ctx, run):
        run_search(ctx.params, stage.load(ctx, "teacher"), run, stage.REPORTS / "search", n_trials=args.n_trials,
                   timeout_s=args.timeout, storage=args.storage, worker=args.worker,
                   plots_dir=stage.REPORTS / "search_plots")

    # A worker never closes the pipeline run: the others may still be logging under it.
    stage.main("search", body, closes_pipeline=not args.worker and _opens_pipeline())


if __name__ == "__main__":
    main()
