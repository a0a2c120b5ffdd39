"""``python -m stages.<name>`` without paying the interpreter start and the imports each time.

A forkserver process imports the library once (torch, MLflow, Optuna, the pipelines package);
every run is a child forked from it: its own process, pid, cwd, environment, stdout/stderr file
descriptors and exit status, running the stage module as ``__main__`` exactly as ``python -m``
does, atexit handlers included. What it cannot show is the import itself (a warning printed
while importing): the tests that need that start a real interpreter
(:func:`tests.conftest.run_stage` with ``real=True``).

This module is imported in the forkserver and in each child: keep its own imports light.
"""

from __future__ import annotations

import os
import sys

# What the stage entry points import at module level, and the libraries they import lazily when
# they meet their data and their tracking store (scikit-learn for digits, MLflow's sqlalchemy store).
PRELOAD = ["pipelines.stage", "pipelines.workflow", "pipelines.search", "pipelines.report", "pipelines.promote",
           "pipelines.engines", "pipelines.tracking", "sklearn.datasets", "sklearn.model_selection", "torchvision",
           "mlflow", "mlflow.data", "mlflow.store.tracking.sqlalchemy_store", "mlflow.tracking", "tests.forked_stage"]


def child(name: str, root: str, env: dict[str, str], args: list[str], out: str, err: str, usage: str) -> None:
    """The forked child: become ``python -m stages.<name> *args`` run in ``root`` with ``env``."""
    import atexit
    import resource
    import runpy
    import traceback

    for fd, path in ((1, out), (2, err)):
        if fd == 2 and err == out:  # one log for both, as `2>&1`
            os.dup2(1, 2)
            continue
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    os.environ.clear()
    os.environ.update(env)
    from pipelines.core import quiet

    quiet.install()  # what importing pipelines does in a fresh interpreter (its environment defaults)
    os.chdir(root)
    sys.path.insert(0, root)  # `python -m` puts the working directory first
    sys.argv = [os.path.join(root, "stages", f"{name}.py"), *args]
    code = 0
    try:
        runpy.run_module(f"stages.{name}", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException as exc:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)  # from runpy on, as `python -m`
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    with open(usage, "w") as handle:
        handle.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    os._exit(code)
