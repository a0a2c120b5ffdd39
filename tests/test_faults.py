"""Faults a stage must survive, each through a real `python -m stages.<name>` process:

- an unreachable MLflow tracking server fails the stage in seconds (not MLflow's minutes of
  retries) with one line naming the URI, exit 2, nothing written;
- a stage SIGKILLed mid-training, and one SIGKILLed in the middle of writing its checkpoint, leave
  no file a reader would take for real; the re-run completes (and marks the dead run KILLED);
- a truncated checkpoint stops the next stage with one line naming the file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
import torch

from pipelines.compression.checkpoint import load_model
from pipelines.core.config import load_params
from pipelines.training.context import Context
from pipelines.tracking import PROBE_TIMEOUT_ENV, check_reachable
from pipelines.core.errors import TrackingError
from tests.conftest import one_error_line, run_stage, snapshot, stage_env, tiny_project

def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: nothing listens there


# --- unreachable tracking server --------------------------------------------------------------

def test_probe_refused_connection_fails_in_well_under_a_second():
    uri = f"http://127.0.0.1:{_closed_port()}"
    started = time.perf_counter()
    with pytest.raises(TrackingError, match=uri.replace(".", r"\.")):
        check_reachable(uri)
    assert time.perf_counter() - started < 1.0


def test_probe_silent_server_fails_after_its_timeout(monkeypatch):
    """A server that accepts the connection but never answers: the probe's timeout, not MLflow's
    120 s x 7 retries."""
    monkeypatch.setenv(PROBE_TIMEOUT_ENV, "1")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.perf_counter()
        with pytest.raises(TrackingError, match="not reachable"):
            check_reachable(uri)
        assert time.perf_counter() - started < 5.0


def test_unreachable_server_stops_the_stage_fast_with_one_line_and_writes_nothing(tmp_path):
    root = tiny_project(tmp_path / "p")
    (root / "models").mkdir()
    (root / "models" / "teacher.pt").write_bytes(b"previous output")
    before = snapshot(root)
    uri = f"http://127.0.0.1:{_closed_port()}"
    started = time.perf_counter()
    proc = run_stage("train_baseline", root, stage_env(MLFLOW_TRACKING_URI=uri), real=True)
    elapsed = time.perf_counter() - started
    line = one_error_line(proc)
    assert line.startswith("train_baseline: error: MLflow tracking server ") and uri in line, line
    assert snapshot(root) == before  # no checkpoint, metrics, plots or local store
    print(f"\nunreachable tracking server: stage exited 2 after {elapsed:.1f}s (interpreter start "
          "and imports included)")
    assert elapsed < 60, f"took {elapsed:.0f}s: the probe did not cut MLflow's retries short"


# --- killed stages -----------------------------------------------------------------------------

def _start_until(cmd: list[str], root: Path, env: dict[str, str], marker: str,
                 timeout: float = 240) -> subprocess.Popen:
    """Start ``cmd`` and return once ``marker`` appeared on its stderr (tqdm writes there)."""
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = bytearray()
    found = threading.Event()

    def pump() -> None:
        while chunk := os.read(proc.stderr.fileno(), 4096):
            seen.extend(chunk)
            if marker.encode() in seen:
                found.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not found.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"never saw {marker!r} (exit {proc.poll()}):\n{bytes(seen)[-3000:].decode()}")
    return proc


ONE_SAMPLE = 1 / 360  # digits' test split: thread counts may flip a near-tie, nothing more


def _test_accuracy(root: Path) -> float:
    """Test-split accuracy of ``models/teacher.pt`` under ``root``'s params, as the stages compute it."""
    ctx = Context(load_params(root / "params.yaml"))
    return ctx.accuracy(load_model(root / "models" / "teacher.pt").model)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def test_sigkill_mid_training_then_rerun_completes(tmp_path):
    root = tiny_project(tmp_path / "p", train={"epochs": 500})
    env = stage_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    # the first epoch's summary (val_acc=) is on the progress bar: training is under way
    proc = _start_until([sys.executable, "-m", "stages.train_baseline"], root, env, "val_acc=")
    _kill(proc)
    leftovers = {p.name for p in root.rglob("*") if p.is_file()}
    assert leftovers == {"params.yaml"}, leftovers  # no checkpoint, no metrics, not even a temp file

    tiny_project(root)  # the user shortens the run and starts again
    done = run_stage("train_baseline", root, env)
    assert done.returncode == 0, done.stderr[-3000:]
    # the checkpoint is the trained model its metrics describe
    assert (root / "metrics" / "train_baseline.json").exists()
    recorded = json.loads((root / "metrics" / "train_baseline.json").read_text())["accuracy"]
    assert _test_accuracy(root) == pytest.approx(recorded, abs=ONE_SAMPLE)

    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    status = sorted(r.info.status for r in runs if r.data.tags.get("stage") == "train_baseline")
    assert status == ["FINISHED", "KILLED"]  # the dead run is not left RUNNING forever


SLOW_SAVE = """
import os, runpy, sys, time, torch
real_save = torch.save
def half_then_hang(obj, f, *args, **kwargs):
    real_save(obj, f, *args, **kwargs)
    if not isinstance(f, (str, os.PathLike)):  # in-memory saves (size metrics) are not the checkpoint
        return
    with open(f, "r+b") as handle:  # as if the process died halfway through the write
        handle.truncate(max(1, handle.seek(0, 2) // 2))
    print("HALF-WRITTEN", file=sys.stderr, flush=True)
    time.sleep(600)
torch.save = half_then_hang
sys.argv = ["train_baseline"]
runpy.run_module("stages.train_baseline", run_name="__main__")
"""


def test_sigkill_while_writing_the_checkpoint_leaves_the_previous_one(tmp_path):
    root = tiny_project(tmp_path / "p", tracking={"enabled": False})
    env = stage_env()
    first = run_stage("train_baseline", root, env)
    assert first.returncode == 0, first.stderr[-3000:]
    previous = snapshot(root)

    proc = _start_until([sys.executable, "-c", SLOW_SAVE], root, env, "HALF-WRITTEN")
    _kill(proc)
    partial = [p for p in (root / "models").iterdir() if p.name != "teacher.pt"]
    assert len(partial) == 1 and partial[0].name.startswith(".teacher.pt.")  # the half-written temp
    assert partial[0].stat().st_size < len(previous["models/teacher.pt"])
    assert snapshot(root) == {**previous, str(partial[0].relative_to(root)): partial[0].read_bytes()}
    # readers only ever open models/teacher.pt: still the complete previous checkpoint, the model
    # the first run's metrics describe
    recorded = json.loads(previous["metrics/train_baseline.json"])["accuracy"]
    assert _test_accuracy(root) == pytest.approx(recorded, abs=ONE_SAMPLE)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert load_model(root / "models" / "teacher.pt").model(x).shape == (2, 10)


# --- corrupted checkpoint at stage level ----------------------------------------------------

def test_truncated_teacher_stops_distill_with_one_line_naming_the_file(tmp_path):
    root = tiny_project(tmp_path / "p")
    env = stage_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    from pipelines.compression.checkpoint import save_model
    from pipelines.models import CNN

    spec = {"model": {"arch": "cnn", "channels": [16, 32], "depth": 1, "dropout": 0.0}, "in_channels": 1,
            "num_classes": 10}
    path = save_model(root / "models" / "teacher.pt", CNN(1, 10, [16, 32]), spec)
    path.write_bytes(path.read_bytes()[:200])
    before = snapshot(root)
    line = one_error_line(run_stage("distill", root, env))
    assert line.startswith("distill: error: models/teacher.pt: not a readable checkpoint"), line
    assert snapshot(root) == before  # no student, no metrics
