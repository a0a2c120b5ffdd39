"""Distributed search: real `python -m stages.search --worker` processes (forked, as
tests/forked_stage.py explains) sharing one Optuna study
on a real PostgreSQL server (``$COMPRESSION_TEST_PG_URL``; `make test` starts one with
`.ci/postgres`), and on a journal file for several processes on one machine.

Without ``$COMPRESSION_TEST_PG_URL`` the PostgreSQL tests fail under CI and skip elsewhere:
``export COMPRESSION_TEST_PG_URL="$(.ci/postgres)"`` to run them locally."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from pipelines import search
from pipelines.core.errors import ParamsError
from pipelines.search import storage as search_storage
from pipelines.compression.checkpoint import save_model
from pipelines.search.attrs import overrides_of
from pipelines.training.context import Context
from tests.conftest import Started, missing_system_dependency, run_stage, start_stage, venv_env
from tests.test_search import EAGER_INT8, SPACE, search_params, teacher  # noqa: F401  (teacher: a module-scoped fixture)

optuna.logging.set_verbosity(optuna.logging.ERROR)

PG_ENV = "COMPRESSION_TEST_PG_URL"
HEARTBEAT_S, GRACE_S = 1, 4  # a dead worker's trial is failed and re-queued 4 s after its last heartbeat
STUDY = "dist"


@pytest.fixture(scope="module")
def pg_server() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        reason = (f"${PG_ENV} is not set: no PostgreSQL server to test the distributed search against "
                  f'(export {PG_ENV}="$(.ci/postgres)")')
        missing_system_dependency(reason)
    return url


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty database on the server (so N workers also race to create Optuna's tables),
    dropped afterwards."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def project(teacher, tmp_path):  # noqa: F811 - the fixture imported above
    """A project directory: tiny params (1 distill epoch, eager only, one thread per worker, no
    MLflow, the eager int8 engine: `auto` would cost every worker a PT2E compile, and what a trial
    quantizes with is not what these tests check), the teacher checkpoint, and the environment
    workers run with."""
    params = search_params(study_name=STUDY, n_trials=50,
                           space={k: v for k, v in SPACE.items() if k != "distill.lr"})  # no NaN trials
    params = params.with_overrides({"tracking.enabled": False, "benchmark.num_threads": 1, **EAGER_INT8})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump(), sort_keys=False))
    save_model(tmp_path / "models" / "teacher.pt", teacher, Context(params).spec("teacher"))
    env = venv_env(**{search_storage.HEARTBEAT_ENV: str(HEARTBEAT_S), search_storage.GRACE_ENV: str(GRACE_S)})
    for name in ("OPTUNA_STORAGE", "DVC_ROOT", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return tmp_path, env


def _worker(project, storage: str, n_trials: int, tag: str, *extra: str, **env_extra: str) -> tuple[Started, Path]:
    """``python -m stages.search --storage ... --n-trials N`` in the background: a process of its
    own (forked from one that imported the library already, see tests/forked_stage.py), output in
    a log file (a file, not a pipe: a full pipe would block the worker)."""
    root, env = project
    log = root / f"worker-{tag}.log"
    proc = start_stage("search", root, {**env, **env_extra}, ["--storage", storage, "--n-trials", str(n_trials),
                                                             *extra], log)
    return proc, log


def _wait(workers, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    for proc, log in workers:
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p, _ in workers:
                p.kill()
            pytest.fail(f"worker timed out:\n{log.read_text()[-3000:]}")
        assert proc.returncode == 0, f"worker exited {proc.returncode}:\n{log.read_text()[-3000:]}"


def _trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=search.make_storage(storage)).get_trials()


def _assert_exactly(trials, n_complete: int) -> None:
    """No lost and no duplicate trial: numbers 0..n-1, every one finished, ``n_complete`` complete."""
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == n_complete


def test_three_workers_on_postgres_run_exactly_their_trials(project, pg_url):
    k = 2
    workers = [_worker(project, pg_url, k, str(i), "--worker") for i in range(3)]
    _wait(workers)
    trials = _trials(pg_url)
    assert len(trials) == 3 * k and all(t.state == TrialState.COMPLETE for t in trials)
    _assert_exactly(trials, 3 * k)
    # each worker draws its own points (workers that start together must not repeat each other)
    firsts = [tuple(sorted(t.params.items())) for t in trials[:3]]
    assert len(set(firsts)) == 3, firsts
    for proc, log in workers:
        assert "worker on study 'dist'" in log.read_text() and "lab:***@" in log.read_text()  # no password in logs
    root, _ = project
    assert not (root / "reports").exists()  # workers write no outputs...
    # ...the outputs come afterwards, from every worker's trials
    proc = run_stage("search", root, project[1], timeout=120, args=["--storage", pg_url, "--n-trials", "0"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    pareto = json.loads((root / "reports" / "search" / "pareto.json").read_text())
    assert pareto["counts"]["complete"] == 3 * k and pareto["counts"]["trials"] == 3 * k


def test_killed_worker_trial_is_failed_by_heartbeat_and_retried(project, pg_url):
    # the victim's trials train for many epochs (a different epoch budget: the same study, its own
    # context), so that the kill lands mid-trial
    root, _ = project
    slow = yaml.safe_load((root / "params.yaml").read_text())
    slow["distill"]["epochs"] = 60
    (root / "slow.yaml").write_text(yaml.safe_dump(slow, sort_keys=False))
    victim, log = _worker(project, pg_url, 50, "victim", "--worker", PARAMS_FILE=str(root / "slow.yaml"))
    deadline = time.monotonic() + 90
    running = []
    while time.monotonic() < deadline and victim.poll() is None:
        try:
            # sampled and into the chain (the overrides are recorded right before training starts)
            running = [t for t in _trials(pg_url) if t.state == TrialState.RUNNING and overrides_of(t)]
        except KeyError:  # the study does not exist yet
            running = []
        if running:
            break
        time.sleep(0.3)
    assert running and victim.poll() is None, f"no trial started:\n{log.read_text()[-3000:]}"
    time.sleep(0.5)  # mid-trial; the heartbeat thread recorded its first beat when the trial started
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    killed_at = time.monotonic()
    before = {t.number: t for t in _trials(pg_url)}
    lost = [n for n, t in before.items() if t.state == TrialState.RUNNING]
    assert len(lost) == 1, before  # SIGKILL leaves its trial RUNNING, for now
    done_by_victim = sum(t.state == TrialState.COMPLETE for t in before.values())

    # survivors join once the grace period has passed: the first trial they start fails the dead
    # one (no heartbeat for GRACE_S) and re-queues it, and one of them runs it
    time.sleep(max(0.0, killed_at + GRACE_S + 0.5 - time.monotonic()))
    survivors = [_worker(project, pg_url, 1, f"s{i}", "--worker") for i in range(2)]
    _wait(survivors)
    trials = _trials(pg_url)
    _assert_exactly(trials, done_by_victim + 2)
    dead = trials[lost[0]]
    assert dead.state == TrialState.FAIL and "fail_reason" not in dead.user_attrs  # failed by heartbeat
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1, [t.system_attrs for t in trials]
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params  # the same point again
    assert retry.system_attrs["retry_history"] == [dead.number]
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [dead.number]


def test_two_processes_share_a_journal_file(project):
    storage = "journal:studies/dist.journal"  # relative: anchored at the project root (each cwd)
    workers = [_worker(project, storage, 2, f"j{i}", "--worker") for i in range(2)]
    _wait(workers)
    root, _ = project
    trials = optuna.load_study(study_name=STUDY, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / "studies" / "dist.journal")))).get_trials()
    assert len(trials) == 4
    _assert_exactly(trials, 4)


def test_heartbeat_settings_are_checked_and_a_dead_storage_is_named_masked(monkeypatch):
    # every way a password can sit in a URL: tests/test_hostile.py
    monkeypatch.delenv(search_storage.HEARTBEAT_ENV, raising=False)
    monkeypatch.delenv(search_storage.GRACE_ENV, raising=False)
    assert search.heartbeat_settings() == (search_storage.HEARTBEAT_INTERVAL_S, search_storage.GRACE_PERIOD_S)
    monkeypatch.setenv(search_storage.HEARTBEAT_ENV, "20")
    assert search.heartbeat_settings() == (20, 120)  # the default grace follows a longer interval
    monkeypatch.setenv(search_storage.GRACE_ENV, "20")
    with pytest.raises(ParamsError, match="must exceed"):
        search.heartbeat_settings()
    monkeypatch.setenv(search_storage.GRACE_ENV, "1.5")
    with pytest.raises(ParamsError, match=r"\$OPTUNA_GRACE_PERIOD: '1.5'"):
        search.make_storage("sqlite:///never-created.db")
    with pytest.raises(ParamsError, match=r"cannot open 'postgresql://u:\*\*\*@127.0.0.1:1/x'"):
        monkeypatch.delenv(search_storage.GRACE_ENV)
        search.make_storage("postgresql://u:pw@127.0.0.1:1/x")  # nothing listens on port 1
