"""Shared fixtures: small real params, a real MLflow sqlite store in a temp dir."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipelines  # noqa: E402,F401  (installs the central warning filters)
from pipelines.config import Params, validate  # noqa: E402

torch.set_num_threads(2)

FAST = {
    "train": {"epochs": 6},
    "distill": {"epochs": 6},
    "prune": {"steps": 2, "finetune_epochs": 1},
    "quantize": {"calibration_batches": 2, "qat_epochs": 1},
    "benchmark": {"warmup": 2, "iters": 5, "runtimes": ["eager"]},
    "teacher": {"channels": [16, 32], "depth": 1},
    "student": {"channels": [8, 16], "depth": 1},
}


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


@pytest.fixture(autouse=True)
def _quiet_upstream_noise():
    """pytest resets warning filters per test; re-apply the project's one central list."""
    from pipelines import _quiet

    _quiet.install()
