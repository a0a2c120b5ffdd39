"""What the test suite's session repo costs (tests/session_repo.py: one real `dvc repro` of the
shortened default pipeline, the suite's dearest fixture), per stage, with the params the tests use
now or those they used before (``--before``: b14b7ba's, compile-default and engine auto included).

    .venv/bin/python bench/session_repo.py            # the tests' params now
    .venv/bin/python bench/session_repo.py --before   # b14b7ba's, for comparison (same machine, same minute)

Prints each stage's wall seconds as `dvc repro` starts the next, then the total wall time and the
CPU seconds of dvc and every stage process (less sensitive than wall time to a busy machine)."""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from conftest import copy_project, init_repo  # noqa: E402
from session_repo import REPO_PARAMS, REPO_SPACE  # noqa: E402

BEFORE = {  # tests/conftest.py's repo fixture at b14b7ba
    "teacher": {"channels": [32, 64, 128], "depth": 2},
    "student": {"channels": [32, 64, 128], "depth": 1},
    "train": {"epochs": 3},
    "distill": {"epochs": 3},
    "prune": {"finetune_epochs": 1},
    "benchmark": {"warmup": 2, "iters": 10, "retries": 0},
    "search": {"n_trials": 2},
}
BEFORE_SPACE = {"student.channels": {"type": "categorical", "choices": [[16, 32, 64], [32, 64, 128]]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", action="store_true", help="b14b7ba's params")
    args = parser.parse_args()
    sections, space = (BEFORE, BEFORE_SPACE) if args.before else (REPO_PARAMS, REPO_SPACE)
    root = copy_project(Path(tempfile.mkdtemp(prefix="session_repo_")))
    raw = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in sections.items():
        raw[section].update(values)
    raw["search"]["space"].update(space)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = init_repo(root)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = last = time.perf_counter()
    stage = None
    proc = subprocess.Popen(["dvc", "repro"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    for line in proc.stdout:
        if line.startswith("Running stage '"):
            now = time.perf_counter()
            if stage:
                print(f"{stage:<18} {now - last:7.1f} s", flush=True)
            stage, last = line.split("'")[1], now
    proc.wait()
    end = time.perf_counter()
    print(f"{stage:<18} {end - last:7.1f} s")
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = used.ru_utime + used.ru_stime - before.ru_utime - before.ru_stime
    print(f"{'dvc repro':<18} {end - start:7.1f} s wall, {cpu:.1f} s CPU, exit {proc.returncode} ({root})")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
