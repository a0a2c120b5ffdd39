"""`make ui`: print the URL of the experiment's training-runs view, then serve the MLflow UI over
the project's store on 127.0.0.1.

    python -m stages.ui [--port PORT] [--print-only]

The port is ``--port``, else ``$MLFLOW_PORT``, else 5000. With ``MLFLOW_TRACKING_URI=http(s)://``
the server there already serves the UI: only its URL is printed.
"""

import argparse
import os
import sys

from pipelines.core.config import TrackingConfig, load_params
from pipelines.core.errors import ParamsError, TrackingError
from pipelines.tracking import runs_url, tracking_uri


def experiment_name() -> str:
    try:
        return load_params(os.environ.get("PARAMS_FILE", "params.yaml")).tracking.experiment
    except ParamsError:  # the UI is still worth opening on a broken params.yaml
        return TrackingConfig().experiment


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.ui", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("MLFLOW_PORT") or 5000))
    parser.add_argument("--print-only", action="store_true", help="print the URL, start nothing")
    args = parser.parse_args(argv)
    os.environ["MLFLOW_PORT"] = str(args.port)
    uri = tracking_uri()
    import mlflow

    name = experiment_name()
    try:
        experiment = mlflow.MlflowClient(uri).get_experiment_by_name(name)
    except Exception as exc:  # noqa: BLE001 - an unreachable store is one line, not a traceback
        print(f"ui: error: {TrackingError(f'{uri}: {str(exc).splitlines()[0][:200]}')}", file=sys.stderr)
        raise SystemExit(2) from None
    where = runs_url(experiment.experiment_id) if experiment else runs_url("0").rsplit("/#/", 1)[0]
    print(f"MLflow UI, experiment {name!r} training runs: {where}" if experiment else
          f"MLflow UI: {where} (no experiment {name!r} yet: run `make repro`)", flush=True)
    if args.print_only or uri.lower().startswith(("http://", "https://")):
        return
    os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                               "--host", "127.0.0.1", "--port", str(args.port)])


if __name__ == "__main__":
    main()
