"""The README's "Compress your own model" example, exactly as printed: its params sections, written
short (only the keys they change), replace those of the committed params.yaml and the whole chain
runs. Cheap by design: DVC checks every stage's params the way it does when it records a stage it
ran, and the first stage really runs through `dvc repro` (train.epochs 0 there: no training)."""

from __future__ import annotations

import contextlib
import re

import pytest
import torch
import yaml
from conftest import ROOT, STAGES, copy_project, init_repo, run_cmd, stages_ran

from pipelines.core.config import validate
from pipelines.models import build_model

HEADING = "## Compress your own model"


def readme_example() -> dict:
    """The first ```yaml block under the README's own-model heading, parsed."""
    text = (ROOT / "README.md").read_text()
    assert f"\n{HEADING}\n" in text, f"README.md has no '{HEADING}' section"
    section = re.split(r"\n## ", text.split(f"\n{HEADING}\n", 1)[1], maxsplit=1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, f"no ```yaml block under '{HEADING}'"
    return yaml.safe_load(block.group(1))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh clone whose params.yaml has the README's sections in place of its own, with the
    images and the two weight files the README's commands would have made."""
    root = copy_project(tmp_path_factory.mktemp("own_model"))
    env = init_repo(root)
    example = readme_example()
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw.update(example)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = validate(raw)
    with contextlib.chdir(root):  # the README's paths are relative to the project root
        from examples.digits_folder import main as digits_folder

        digits_folder([params.data.root, "--size", "28"])
        for section in ("teacher", "student"):  # state_dicts of the architectures named, as trained elsewhere
            cfg = getattr(params, section)
            if cfg.weights:
                model = build_model(cfg, params.data.channels, 10, 28, key=section)
                torch.save(model.state_dict(), cfg.weights)
    return root, env, example


def test_every_stage_records_its_params(project):
    """What stopped `dvc repro` at search ("Parameters 'student.dropout, ...' are missing"): DVC
    hashes each stage's params after running it, and a key dvc.yaml names must be in the file."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    root, _, _ = project
    with contextlib.chdir(root), Repo(str(root)) as dvc:
        stages = {stage.name: stage for stage in dvc.index.stages}
        assert set(stages) == set(STAGES)
        for stage in stages.values():
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    dep.get_hash()  # raises MissingParamsError for a missing key


def test_dvc_repro_runs_and_records_the_first_stage(project):
    root, env, _ = project
    ran = run_cmd(["dvc", "repro", "train_baseline"], root, env)  # train.epochs 0: the teacher evaluated
    assert stages_ran(ran) == ["train_baseline"]
    metrics = yaml.safe_load((root / "metrics" / "train_baseline.json").read_text())
    assert metrics["classes"] == [str(i) for i in range(10)] and 0 <= metrics["accuracy"] <= 1
    status = run_cmd(["dvc", "status", "train_baseline"], root, env)
    assert "changed" not in status, status  # recorded: params hashed, nothing left to re-run
