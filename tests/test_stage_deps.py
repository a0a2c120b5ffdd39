"""An edit re-runs only the stages it can affect: each stage's dvc.yaml code deps are the modules it
can execute, and no more. `.venv/bin/python tests/dvc_deps.py --affected` prints the map."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, venv_env
from dvc_deps import affected, declared_code_deps, dvc_stages, import_graph, module_file, parents

PT2E = "pipelines/compression/quantize/pt2e.py"
DISTILL_LOSS = "pipelines/compression/distill.py"
FP32_STAGES = {"train_baseline", "distill", "prune"}  # they never meet an int8 model


def _chain(stage: str, target: str) -> list[str] | None:
    """An import chain from ``stages.<stage>`` to the module of ``target`` (a file path): each step
    an import statement (module or function level) or a package ``__init__`` that importing runs."""
    graph = import_graph()
    start = f"stages.{stage}"
    previous: dict[str, str | None] = {start: None}
    todo = [start]
    while todo:
        module = todo.pop(0)
        if module_file(module) == target:
            chain = [module]
            while previous[chain[-1]] is not None:
                chain.append(previous[chain[-1]])
            return chain[::-1]
        for nxt in sorted(graph.find_modules_directly_imported_by(module) | parents(module)):
            if nxt not in previous:
                previous[nxt] = module
                todo.append(nxt)
    return None


def test_every_stage_an_edit_re_runs_can_import_the_edited_module():
    users = affected()
    assert set(users) >= {p.relative_to(ROOT).as_posix() for p in (ROOT / "pipelines").rglob("*.py")}
    unreachable = {(path, stage) for path, stages in users.items() for stage in stages if _chain(stage, path) is None}
    assert unreachable == set()


def test_the_bars_quantizer_and_distillation_edits_spare_the_stages_before_them():
    users = affected()
    assert FP32_STAGES.isdisjoint(users[PT2E]) and set(users[PT2E]) == {"quantize", "compile_benchmark", "search", "report"}
    assert "train_baseline" not in users[DISTILL_LOSS] and set(users[DISTILL_LOSS]) == {"distill", "search"}
    # each stage's own step of the chain is its (and the search's) alone
    for step, stage in [("teacher", "train_baseline"), ("distill", "distill"), ("prune", "prune"),
                        ("quantize", "quantize")]:
        assert users[f"pipelines/chain/{step}.py"] == [stage, "search"]
    assert users["pipelines/workflow.py"] == ["search"]
    # imported by pipelines/__init__.py, so it runs in every stage
    assert users["pipelines/core/quiet.py"] == list(dvc_stages())


# Imports each stage's entry point afresh in one process and reports the project modules that
# ran; then loads an fp32 checkpoint the way the fp32 stages do and reports what that imported.
_PROBE = r"""
import importlib, json, sys
import torch
def fresh():
    for name in [m for m in sys.modules if m.split(".")[0] in ("pipelines", "stages")]:
        del sys.modules[name]
ran = {}
for stage in sys.argv[1:]:
    fresh()
    importlib.import_module(f"stages.{stage}")
    ran[stage] = sorted(m for m in sys.modules if m.split(".")[0] in ("pipelines", "stages"))
fresh()
import stages.prune
from pipelines.models import CNN
from pipelines.models.checkpoint import load_model, save_model  # what pipelines.stage loads with by default
spec = {"model": {"arch": "cnn", "channels": [8, 16], "depth": 1, "dropout": 0.0}, "in_channels": 1, "num_classes": 10}
path = save_model(sys.argv[0] + ".pt", CNN(1, 10, [8, 16]).eval(), spec)
assert load_model(path).model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
quantizers = sorted(m for m in sys.modules if m.startswith(("pipelines.compression.quantize", "torchao")))
print(json.dumps({"ran": ran, "fp32_load_imported": quantizers}))
"""


def test_importing_a_stage_runs_only_its_deps_and_fp32_checkpoints_load_without_a_quantizer(tmp_path):
    stages = list(dvc_stages())
    probe = tmp_path / "probe.py"
    probe.write_text(_PROBE)
    proc = subprocess.run([sys.executable, str(probe), *stages], cwd=ROOT, env=venv_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for stage in stages:
        ran = {f for f in map(module_file, out["ran"][stage]) if (ROOT / f).stat().st_size}  # empty files run nothing
        assert ran - set(declared_code_deps(dvc_stages()[stage])) == set(), stage
        # report evaluates the int8 final model per image (paired against the teacher), so it loads int8 too
        assert ("pipelines/compression/quantize/__init__.py" in ran) == (stage not in FP32_STAGES), stage
    assert out["fp32_load_imported"] == []


# --- the bars with real DVC -----------------------------------------------------------------------

# `committed` (the pipeline with stand-in outputs, committed by DVC) lives in conftest.py: tests/test_layers.py
# edits every module in it.


def _status_after_editing(root: Path, path: str) -> set[str]:
    from dvc.repo import Repo

    file = root / path
    original = file.read_bytes()
    try:
        file.write_bytes(original + b"\n# edited\n")
        with contextlib.chdir(root), Repo(str(root)) as dvc:
            return {name.split(":")[-1] for name in dvc.status()}
    finally:
        file.write_bytes(original)


def test_dvc_status_after_a_quantizer_edit_lists_no_stage_before_quantize(committed):
    assert _status_after_editing(committed, PT2E) == {"quantize", "compile_benchmark", "search", "report"}


def test_dvc_status_after_a_distillation_loss_edit_spares_the_teacher(committed):
    assert _status_after_editing(committed, DISTILL_LOSS) == {"distill", "search"}


def test_dvc_status_after_editing_quiet_lists_every_stage(committed):
    assert _status_after_editing(committed, "pipelines/core/quiet.py") == set(dvc_stages())
