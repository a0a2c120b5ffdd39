"""What optuna-dashboard 0.21 shows of a search: a real study written by the real Objective
(run_search with a fast stand-in for the chain), served by a real `optuna-dashboard` process and
read through its HTTP API, the same JSON its trial table and Pareto plot are drawn from."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from pipelines import search
from pipelines.search.attrs import named_constraints
from pipelines.tracking import stage_run
from pipelines.training.context import Context
from tests.conftest import fast_params, venv_env

optuna.logging.set_verbosity(optuna.logging.ERROR)
NUMBERS = ("accuracy", "latency_ms_p50", "speedup_vs_teacher", "size_mb", "feasible")


def fake_chain(baseline, params, after_epoch=None):
    """Stands in for distill -> prune -> quantize -> benchmark: numbers that follow prune.amount, so
    that min_speedup 2 makes trials with amount < 0.5 infeasible."""
    kept = 1.0 - params.prune.amount
    return {"val_accuracy": 0.9 + 0.05 * kept, "accuracy": 0.9 + 0.05 * kept, "latency_ms_p50": 10.0 * kept, "speedup_vs_teacher": 1.0 / kept,
            "size_mb": kept, "best_runtime": "eager", "noisy": False, "compile_time_s": 0.0}


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """A searched study in sqlite (MLflow logging on) and an optuna-dashboard server over it."""
    tmp = tmp_path_factory.mktemp("dashboard")
    storage = f"sqlite:///{tmp / 'optuna.db'}"
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
    patch.setenv("MLFLOW_PORT", "5123")
    patch.delenv("DVC_EXP_NAME", raising=False)
    params = fast_params(search={"study_name": "dash", "n_trials": 6, "sampler": "random", "min_speedup": 2.0,
                                 "max_accuracy_drop": 100.0,
                                 "space": {"prune.amount": {"type": "float", "low": 0.05, "high": 0.8}}},
                         distill={"cache_teacher_logits": False}, tracking={"experiment": "dash"})
    teacher = Context(params).new_model("teacher").eval()  # untrained: the chain above never uses it
    with stage_run(params, "search", ["search"]) as run:
        search.run_search(params, teacher, run, tmp / "out", storage=storage, chain=fake_chain)
    patch.undo()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp / "dashboard.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(Path(sys.executable).parent / "optuna-dashboard"), storage, "--host", "127.0.0.1",
                             "--port", str(port)], env=venv_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp / "dashboard.log").read_text()[-2000:]
            try:
                studies = _get(f"{url}/api/studies")["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, "optuna-dashboard did not answer"
                time.sleep(0.5)
        study_id = next(s["study_id"] for s in studies if s["study_name"] == "dash")
        yield _get(f"{url}/api/studies/{study_id}?after=0"), optuna.load_study(study_name="dash", storage=storage)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _attrs(serialized: list[dict]) -> dict[str, str]:
    return {a["key"]: a["value"] for a in serialized}


def test_dashboard_shows_each_trials_feasibility(dashboard):
    detail, study = dashboard
    complete = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(complete) == 6
    by_number = {t.number: t for t in study.trials}
    for shown in complete:
        named = named_constraints(by_number[shown["number"]])
        assert shown["constraints"] == list(named.values())  # what the dashboard marks (in)feasible
        assert all(c <= 0 for c in shown["constraints"]) == search.is_feasible(named)
        assert _attrs(shown["user_attrs"])["feasible"] == str(int(search.is_feasible(named)))
    feasible = {all(c <= 0 for c in t["constraints"]) for t in complete}
    assert feasible == {True, False}, "the random draws should give both kinds"


def test_trial_table_columns_are_flat_sortable_numbers(dashboard):
    detail, _ = dashboard
    sortable = {a["key"]: a["sortable"] for a in detail["union_user_attrs"]}
    assert all(sortable[name] for name in NUMBERS), sortable
    for shown in detail["trials"]:
        attrs = _attrs(shown["user_attrs"])
        assert not any(v.startswith(("{", "[")) for v in attrs.values()), attrs  # no JSON blobs
        float(attrs["speedup_vs_teacher"])
        assert attrs["best_runtime"] == "eager"
        assert attrs["mlflow_run"].startswith("http://127.0.0.1:5123/#/experiments/")
        assert f"({attrs['mlflow_run']})" in shown["note"]["body"]  # a clickable link in the trial's note


def test_study_says_what_it_optimizes_under_which_constraints(dashboard):
    detail, _ = dashboard
    attrs = _attrs(detail["user_attrs"])
    assert attrs["objectives"] == "val_accuracy (maximize), latency_ms_p50 (minimize)"
    assert "min_speedup = 2.0" in attrs["constraints"] and "max_accuracy_drop_pp = 100.0" in attrs["constraints"]
    assert 0.0 <= float(attrs["teacher_val_accuracy"]) <= 1.0 and len(attrs["context"]) == 12
    assert attrs["mlflow_run"].startswith("http://127.0.0.1:5123/#/experiments/")
