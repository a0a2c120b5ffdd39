"""Shared fixtures: small real params, a real MLflow sqlite store in a temp dir, and one real
`dvc repro` of the default pipeline (session-scoped: the e2e and UI tests share it; defined in
session_repo.py, imported at the end)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _pin_worker() -> None:
    """Under pytest-xdist (`make test`), each worker and every process it starts on cores of its
    own, before the library reads how many it may use (``pipelines.core.params_base.CORES``): the
    stages then run at most that many threads (``usable_threads``). Two workers sharing 2 cores at
    2 threads each oversubscribe them: two session-repo `dvc repro`s side by side took 112 s
    unpinned, 72 s pinned. Fewer cores than workers: left as they are."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if worker.startswith("gw") and 2 <= count <= len(cores):
        os.sched_setaffinity(0, cores[int(worker[2:]) % count::count])


_pin_worker()

import pipelines  # noqa: E402,F401  (installs the central warning filters)
from pipelines.core.config import Params, validate  # noqa: E402
from pipelines.core.params_base import usable_threads  # noqa: E402

torch.set_num_threads(usable_threads(2))

FAST = {
    "train": {"epochs": 6},
    "distill": {"epochs": 6},
    "prune": {"steps": 2, "finetune_epochs": 1},
    "quantize": {"calibration_batches": 2, "qat_epochs": 1},
    "benchmark": {"warmup": 2, "iters": 5, "runtimes": ["eager"], "min_block_ms": 0.0, "max_slowdown": 0.0},
    "teacher": {"channels": [16, 32], "depth": 1},
    "student": {"channels": [8, 16], "depth": 1},
}


class Broken(torch.nn.Module):
    """Runs in eager; torch.compile refuses it (a graph break where none is allowed)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    @torch._dynamo.error_on_graph_break(True)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x.flatten(1))
        torch._dynamo.graph_break()
        return y


@pytest.fixture(scope="session", autouse=True)
def _session_decision_cache(tmp_path_factory):
    """Machine decisions of the session's shared fixtures (module/session scope, built before any
    test's own cache is set) in a temp dir, never the user's ~/.cache/compression-lab."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPRESSION_CACHE_DIR", str(tmp_path_factory.mktemp("session-decisions")))
        yield


@pytest.fixture(autouse=True)
def _own_decision_cache(tmp_path_factory, monkeypatch):
    """Each test its own machine-decision cache (pipelines.core.io.cache_dir): one test's measured
    `quantize.engine: auto` answer is no other test's (and never the developer's .cache/)."""
    monkeypatch.setenv("COMPRESSION_CACHE_DIR", str(tmp_path_factory.mktemp("decisions")))


def fast_params(**sections) -> Params:
    raw: dict = {k: dict(v) for k, v in FAST.items()}
    for key, value in sections.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return validate(raw)


@pytest.fixture
def params() -> Params:
    return fast_params(tracking={"enabled": False})


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    """A real MLflow sqlite store in a temp dir, selected the way users do (env var)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    return uri


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return tmp_path


def venv_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this interpreter's bin dir first on PATH, project importable."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    env.update(DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", **extra)
    return env


def stage_env(**extra: str) -> dict[str, str]:
    """:func:`venv_env` for a stage run outside DVC: no DVC variables, and no tracking URI unless given."""
    env = venv_env(**extra)
    env.pop("DVC_ROOT", None)
    env.pop("DVC_EXP_NAME", None)
    if "MLFLOW_TRACKING_URI" not in extra:
        env.pop("MLFLOW_TRACKING_URI", None)
    return env


def one_error_line(proc: Finished | subprocess.CompletedProcess, code: int = 2) -> str:
    """Assert the process ended with ``code`` and printed exactly one line (no traceback) on
    stderr; return that line."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, proc.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def pytest_addoption(parser):
    parser.addoption("--reverse", action="store_true",
                     help="run the collected tests in reverse order (no test may depend on another's leftovers)")


# The test files that read the session's pipeline repo: under pytest-xdist they are one unit of
# work (see pytest_xdist_make_scheduler), so one worker builds the repo while the other runs the rest.
REPO_FILES = ("tests/test_pipeline_e2e.py", "tests/test_experiments.py", "tests/test_ui_mlflow.py")


def pytest_collection_modifyitems(config, items):
    """Every test on the session's pipeline repo is ``slow`` (it needs the real `dvc repro` the
    fixture runs): `make test-fast` (``-m "not slow"``) leaves them out; its file must be one of
    :data:`REPO_FILES`. ``--reverse``: reversed order. On an xdist worker the repo's tests come
    first (`make test` keeps that order: ``--no-loadscope-reorder``): they are the longest unit."""
    for item in items:
        if "repo" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
            if item.nodeid.split("::")[0] not in REPO_FILES:
                raise pytest.UsageError(f"{item.nodeid} reads the session repo: add its file to REPO_FILES")
    if config.getoption("--reverse"):
        items.reverse()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.nodeid.split("::")[0] not in REPO_FILES)  # stable


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` (`make test`): each test file goes to one worker whole, so a
    module-scoped fixture is built once; the files of :data:`REPO_FILES` go together."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return "session repo" if path in REPO_FILES else path

    return Scheduling(config, log)


def pytest_runtest_setup(item):
    """pytest resets warning filters for every test; re-apply the project's one central list
    before the test's fixtures are set up (module-scoped ones quantize models too)."""
    from pipelines.core import quiet as _quiet

    _quiet.install()


STAGES = ["train_baseline", "distill", "prune", "quantize", "compile_benchmark", "search", "report"]
METRIC_STAGES = ["train_baseline", "distill", "prune", "quantize", "compile_benchmark"]


def run_cmd(cmd, cwd, env, timeout=1800) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def stages_ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([a-z_]+)'", output)


def copy_project(root: Path) -> Path:
    """What a fresh clone holds (code, pipeline, params, examples) copied to ``root``."""
    for name in ["pipelines", "stages", "examples", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"]:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    for cache in root.rglob("__pycache__"):
        shutil.rmtree(cache)
    return root


def init_repo(root: Path) -> dict[str, str]:
    """``git init`` + ``dvc init`` + first commit in ``root``; the environment to run dvc there
    (the project's own MLflow store, not the caller's)."""
    env = venv_env(MLFLOW_TRACKING_URI="")
    env.pop("MLFLOW_TRACKING_URI")
    env.pop("DVC_ROOT", None)
    env.setdefault("COMPRESSION_CACHE_DIR", str(root / ".cache"))  # its own machine decisions, not the user's
    env["MLFLOW_PORT"] = str(free_port())  # the UI tests serve this store there (MLflow links name the port)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                ["git", "config", "user.name", "t"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "init"]):
        run_cmd(cmd, root, env)
    return env


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_system_dependency(reason: str) -> None:
    """A system service/program a test needs is absent (`make test` installs it where it can,
    see .ci/test-deps): a failure under CI, which must exercise it; a skip with the reason elsewhere."""
    if under_ci():
        pytest.fail(f"{reason} (under CI `make test` must provide it)", pytrace=False)
    pytest.skip(reason)


def require_chromium() -> str:
    """The headless browser's binary, or the missing-dependency failure/skip."""
    from tests.headless import chromium_binary

    binary = chromium_binary()
    if not binary:
        missing_system_dependency("no Chromium found (/usr/bin/chromium): install Debian's `chromium` package")
    return binary


# --- stage processes: how a user meets bad input ------------------------------------------------

TINY = {**FAST, "train": {"epochs": 1}, "tracking": {"experiment": "faults", "log_models": False},
        # a search small enough for a test and consistent with FAST's eager-only runtimes (the
        # committed space also picks benchmark.deploy_runtime); prune.amount's 0.5 lies inside
        "search": {"n_trials": 1, "pruner": "none",
                   "space": {"prune.amount": {"type": "float", "low": 0.1, "high": 0.8}}}}
STAGE_TIMEOUT_S = 60  # no stage that refuses its input may take longer (issue 14's bar)
STAGE_MAX_RSS_MIB = 2048  # ... or hold more memory


def corrupt_copy(folder: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A hard-linked copy of the image ``folder`` under ``tmp_path`` with one image (returned)
    replaced by a PNG signature and garbage: a corrupt file the decoder must name."""
    copy = tmp_path / "copy"
    for path in folder.rglob("*.png"):
        target = copy / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    bad = copy / "train" / "c1" / "000007.png"
    bad.unlink()
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)  # a PNG signature, then garbage
    return copy, bad


def tiny_project(root: Path, **sections) -> Path:
    """``root`` with the committed params.yaml, shortened by :data:`TINY` and ``sections`` (whose
    keys override TINY's key by key)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name in {*TINY, *sections}:
        raw[name].update({**TINY.get(name, {}), **sections.get(name, {})})
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root


@dataclass
class Finished:
    """A finished stage process, with its wall time and its own peak resident memory."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_mib: float


def run_stage(name: str, root: Path, env: dict[str, str] | None = None, timeout: float = 300,
              args: list[str] | None = None, real: bool = False) -> Finished:
    """``python -m stages.<name>`` in ``root``, as DVC would run it; killed after ``timeout`` seconds.

    By default a child forked from a process that has the library imported already
    (:mod:`tests.forked_stage`: a process of its own, with its own exit status, stderr and peak
    memory, seconds cheaper); ``real=True`` starts a fresh interpreter (what import-time output or
    interpreter start-up must be seen through)."""
    env = env if env is not None else stage_env()
    if not real:
        return _forked_stage(name, root, env, timeout, args or [])
    proc = subprocess.Popen([sys.executable, "-m", f"stages.{name}", *(args or [])], cwd=root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunks: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda key, pipe: chunks.__setitem__(key, pipe.read()), args=(key, pipe))
               for key, pipe in (("out", proc.stdout), ("err", proc.stderr))]
    for reader in readers:
        reader.start()
    started = time.perf_counter()
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    _, status, usage = os.wait4(proc.pid, 0)  # wait4: this process's own peak RSS (Linux: KiB)
    wall = time.perf_counter() - started
    killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    proc.stdout.close()
    proc.stderr.close()
    return Finished(proc.returncode, chunks["out"].decode(errors="replace"), chunks["err"].decode(errors="replace"),
                    wall, usage.ru_maxrss / 1024)


_FORKSERVER: list = []


def _fork(name: str, root: Path, env: dict[str, str], args: list[str], out: str, err: str, usage: str):
    """A child of the forkserver (started on first use) that becomes ``python -m stages.<name>``."""
    import multiprocessing

    from tests import forked_stage

    if not _FORKSERVER:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(forked_stage.PRELOAD)
        _FORKSERVER.append(context)
    return _FORKSERVER[0].Process(target=forked_stage.child, args=(name, str(root), env, args, out, err, usage))


class Started:
    """A stage process running in the background (forked, see :func:`run_stage`), its stdout and
    stderr together in ``log``; answers as :class:`subprocess.Popen` does."""

    def __init__(self, name: str, root: Path, env: dict[str, str], args: list[str], log: Path) -> None:
        self.log = log
        self._proc = _fork(name, root, env, args, str(log), str(log), f"{log}.rusage")
        self._proc.start()
        self.pid = self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            raise subprocess.TimeoutExpired(f"stages.{self._proc.name}", timeout)
        return self._proc.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        self._proc.kill()


def start_stage(name: str, root: Path, env: dict[str, str], args: list[str], log: Path) -> Started:
    """``python -m stages.<name> *args`` in ``root``, in the background, output to ``log``."""
    return Started(name, root, env, args, log)


def _forked_stage(name: str, root: Path, env: dict[str, str], timeout: float, args: list[str]) -> Finished:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="stage-") as tmp:
        out, err, usage = (os.path.join(tmp, n) for n in ("stdout", "stderr", "rusage"))
        proc = _fork(name, root, env, args, out, err, usage)
        started = time.perf_counter()
        proc.start()
        proc.join(timeout)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
        wall = time.perf_counter() - started
        read = lambda path: Path(path).read_bytes().decode(errors="replace") if os.path.exists(path) else ""  # noqa: E731
        rss_kib = float(read(usage) or "nan")
        return Finished(proc.exitcode, read(out), read(err), wall, rss_kib / 1024)


def within_bounds(proc: Finished) -> None:
    """The bar for a stage facing hostile input: done in seconds, in bounded memory."""
    assert proc.wall_s < STAGE_TIMEOUT_S, f"took {proc.wall_s:.0f}s"
    assert proc.peak_rss_mib < STAGE_MAX_RSS_MIB, f"peak RSS {proc.peak_rss_mib:.0f} MiB"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to prove nothing was written)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def agreement(ctx, a, b) -> float:
    """Share of the test split on which two models predict the same class."""
    from pipelines.training.loop import predict

    loader = ctx.loader("test")
    return (predict(a, loader).argmax(1) == predict(b, loader).argmax(1)).float().mean().item()


from session_repo import committed, repo  # noqa: E402,F401  (fixtures: the session's pipeline repos)
