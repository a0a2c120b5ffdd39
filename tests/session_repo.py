"""The session's pipeline repos, as fixtures (conftest.py imports them): ``repo``, one real
`dvc repro` of the shortened default pipeline in a temporary git repo, shared by every test that
reads it and changed by none; ``committed``, the pipeline with stand-in outputs that DVC recorded,
for `dvc status` after a code edit."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from pipelines.core.config import validate

# The session repo's params: the cheapest run in which every test that reads it can assert what it
# asserts. Its readers: tests/test_pipeline_e2e.py (every stage ran, every output written, the MLflow
# runs/models/registry, ort-int8 and ov-int8 rows of the final model at batch 1 and 64 measured
# above 0.5 accuracy, ONNX files of teacher/student/pruned), tests/test_experiments.py (a copy:
# one `dvc exp run` re-running prune..report, exp show/diff/plots) and tests/test_ui_mlflow.py (the
# runs in the UI). None reads a
# compile-* row or the engine `auto` chose: runtimes are eager plus the two deploy targets the
# e2e test asserts (no cold Inductor compiles; trials then time eager only), and the quantize
# engine is eager (auto would time a PT2E compile beside it; tests/test_kernels.py checks auto).
REPO_PARAMS = {
    "teacher": {"channels": [16, 32, 64], "depth": 1},
    "student": {"channels": [8, 16, 32], "depth": 1},
    "train": {"epochs": 3},
    "distill": {"epochs": 3},
    "prune": {"finetune_epochs": 1},
    "quantize": {"engine": "eager", "calibration_batches": 2},
    # one timed attempt in short blocks: these tests read the numbers' presence and shape, not
    # their quietness (a busy machine would re-measure every loop twice more)
    "benchmark": {"warmup": 1, "iters": 6, "retries": 0, "block_warmup": 1, "block_warm_ms": 1.0,
                  "runtimes": ["eager", "ort-int8", "ov-int8"]},
    # one trial (the current configuration, trained with the epochs above), feasible by construction:
    # a student this small is many points below the teacher, and with no feasible trial the search
    # still writes best_params.yaml for the incumbent (test_pipeline_e2e asserts the feasible case)
    "search": {"n_trials": 1, "max_accuracy_drop": 100.0, "min_speedup": None},
}
REPO_SPACE = {"student.channels": {"type": "categorical", "choices": [[8, 16, 32], [16, 32, 64]]},
              "quantize.engine": {"type": "categorical", "choices": ["eager"]}}


@pytest.fixture(scope="session")
def repo(tmp_path_factory):
    """The default pipeline through a real `dvc repro` in a temporary git repo (shortened by
    :data:`REPO_PARAMS`), run once per session: ``(root, env, output of the first repro)``.

    Under pytest-xdist (`make test`) the tests that read it run on one worker (conftest.py's
    ``REPO_FILES``); should several workers ask for it all the same, the first builds it in the
    run's shared temp dir under a file lock and the others read it there."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build_repo(tmp_path_factory.mktemp("project"))
    shared = tmp_path_factory.getbasetemp().parent  # this run's, one for all its workers
    built = shared / "repo.json"
    with FileLock(str(shared / "repo.lock")):
        if not built.exists():
            root, env, first = build_repo(Path(tempfile.mkdtemp(prefix="project", dir=shared)))
            built.write_text(json.dumps({"root": str(root), "env": env, "first": first}))
        done = json.loads(built.read_text())
    return Path(done["root"]), done["env"], done["first"]


def build_repo(root: Path) -> tuple[Path, dict[str, str], str]:
    """:data:`REPO_PARAMS`' pipeline in a fresh git repo at ``root``, after its first `dvc repro`."""
    from conftest import copy_project, init_repo, run_cmd  # conftest imports this module at its end
    copy_project(root)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in REPO_PARAMS.items():
        raw[section].update(values)
    raw["search"]["space"].update(REPO_SPACE)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    validate(raw)  # a typo here is one line, not a failed `dvc repro` minutes later
    env = init_repo(root)
    first = run_cmd(["dvc", "repro"], root, env)
    return root, env, first


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> Path:
    """A copy of the project's pipeline (code, dvc.yaml, params.yaml) whose data deps and outputs
    are stand-in files, recorded by `dvc commit` as if `dvc repro` had run: `dvc status` then
    compares only file hashes, as it does after a real run. Tests that edit a file restore it."""
    from conftest import ROOT
    from dvc.repo import Repo
    from dvc_deps import dvc_stages

    root = tmp_path_factory.mktemp("pipeline")
    for name in ("pipelines", "stages"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, root / name)
    for stage in dvc_stages().values():
        for entry in [*stage.get("deps", []), *stage.get("outs", []), *stage.get("metrics", [])]:
            path = root / (entry if isinstance(entry, str) else next(iter(entry)))
            if not path.exists():
                if path.suffix:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(f"stand-in for {path.name}\n")
                else:
                    path.mkdir(parents=True)
                    (path / "stand-in.txt").write_text("stand-in\n")
    with contextlib.chdir(root), Repo.init(str(root), no_scm=True) as dvc:
        dvc.commit(None, force=True)
        assert dvc.status() == {}
    return root
