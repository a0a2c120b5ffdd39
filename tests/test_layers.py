"""The package's structure: imports point one way, and DVC knows every file a stage runs."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
import yaml
from conftest import ROOT, venv_env
from dvc_deps import code_deps, declared_code_deps, dvc_stages

from pipelines.stage import SECTIONS


def test_import_linter_layer_contract_is_kept():
    """pyproject.toml's layers contract, checked by import-linter itself."""
    proc = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT,
                          env=venv_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout


def test_no_import_cycle_in_pipelines():
    graph = grimp.build_graph("pipelines", include_external_packages=False, cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            # a package imports its own submodules (re-exports); a submodule importing a sibling is fine
            if imported.startswith(module + ".") or module.startswith(imported + "."):
                continue
            if graph.chain_exists(importer=imported, imported=module):
                cycles.append(f"{module} <-> {imported}")
    assert cycles == []


@pytest.mark.parametrize("stage", list(SECTIONS))
def test_dvc_code_deps_are_exactly_what_the_stage_imports(stage):
    declared = declared_code_deps(dvc_stages()[stage])
    assert declared == code_deps(stage), "run `.venv/bin/python tests/dvc_deps.py --write`"


@pytest.mark.parametrize("stage", list(SECTIONS))
def test_dvc_params_are_the_sections_the_stage_logs(stage):
    assert dvc_stages()[stage]["params"] == SECTIONS[stage]


def test_dvc_params_name_whole_sections():
    """DVC refuses a key-by-key param the file lacks: a section written short (only the keys it
    changes) must still run every stage (tests/test_readme_example.py runs the README's)."""
    from pipelines.core.config import Params

    named = {key for keys in SECTIONS.values() for key in keys}
    assert named <= set(Params.model_fields), named - set(Params.model_fields)


def test_every_stage_entry_point_is_a_dvc_stage():
    tools = {"__init__", "promote", "ui", "compare", "plots"}  # make promote|ui|compare|plots, not DVC stages
    entry_points = {p.stem for p in (ROOT / "stages").glob("*.py")} - tools
    assert entry_points == set(dvc_stages()) == set(SECTIONS)


def test_editing_any_imported_module_makes_dvc_status_list_the_stage(committed):
    """In a repo whose stages DVC recorded (stand-in outputs, see conftest.py; `dvc status` compares
    hashes as after a real `dvc repro`): touch a pipelines module's content, and `dvc status` must
    list every stage that imports it (and only those). One module per distinct set of importing
    stages (the first by path): DVC answers from dvc.yaml's deps, so modules with the same set
    would repeat the same question (each `dvc status` is ~0.6 s; all ~100 modules took 67 s of
    the suite). That the deps are each stage's import closure is the test above's."""
    from dvc.repo import Repo

    root = committed
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    users: dict[str, set[str]] = {}
    for name, stage in stages.items():
        for dep in declared_code_deps(stage):
            users.setdefault(dep, set()).add(name)
    with contextlib.chdir(root), Repo(str(root)) as dvc:
        assert dvc.status() == {}, "the repo must start up to date"
    wrong = {}
    asked: set[frozenset[str]] = set()
    for path, expected in sorted(users.items()):
        if not path.startswith("pipelines/") or frozenset(expected) in asked:
            continue
        asked.add(frozenset(expected))
        file = root / path
        original = file.read_bytes()
        try:
            file.write_bytes(original + b"\n# edited\n")
            with contextlib.chdir(root), Repo(str(root)) as dvc:
                changed = {name.split(":")[-1] for name in dvc.status()}
        finally:
            file.write_bytes(original)
        if changed != expected:
            wrong[path] = (sorted(expected), sorted(changed))
    assert wrong == {} and len(asked) >= 5, (wrong, asked)
