"""Comparing experiments with real DVC, as a user does after `make repro`: `dvc exp run -S` leaves
params.yaml alone but for the set line, and two experiments can be compared with `dvc exp show`
(`make compare`), `dvc metrics diff`, `dvc params diff` and `dvc plots diff` (rendered offline).

The experiments run in a copy of the session's `repo` (one real `dvc repro`, shortened epochs), its
outputs committed as DVC's convention for `cache: false` files expects."""

from __future__ import annotations

import asyncio
import csv
import difflib
import io
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.promote import promote
from tests.conftest import ROOT, require_chromium, run_cmd, venv_env
from tests.headless import Browser

HEADLINE = ("acc", "drop_pp", "size_ratio", "p50_ms", "p50_ms_bs1", "speedup")
SETTINGS = {"quantize.method": "dynamic", "prune.amount": 0.3}  # one experiment each


def _init(root: Path, env: dict[str, str]) -> None:
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                ["git", "config", "user.name", "t"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "init"]):
        run_cmd(cmd, root, env)


def _changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_set_param_rewrites_only_its_own_lines_and_promote_writes_the_same(tmp_path):
    """The real params.yaml through a real `dvc exp run -S` (a one-line stage that reads the keys)."""
    env = venv_env()
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"show": {
        "cmd": f"{sys.executable} -c \"print('ran')\"",
        "params": ["distill.temperature", "search.max_latency_ms", "benchmark.runtimes"]}}}))
    _init(tmp_path, env)
    before = (tmp_path / "params.yaml").read_text()
    run_cmd(["dvc", "exp", "run", "-S", "distill.temperature=2.5", "-S", "search.max_latency_ms=5.0",
             "-S", "benchmark.runtimes=[eager,compile-default]"], tmp_path, env)
    after = (tmp_path / "params.yaml").read_text()
    changed = _changed_lines(before, after)
    assert [line[0] + line[1:].split("#")[0].strip() for line in changed] == [
        "-temperature: 4.0", "+temperature: 2.5", "-- ort-int8", "-- ov-int8",
        "-max_latency_ms:", "+max_latency_ms: 5.0"]
    assert "# empty: no absolute latency ceiling" in changed[-1]  # the comment stays on its line

    promoted = tmp_path / "promoted.yaml"
    promoted.write_text(before)
    best = tmp_path / "best.yaml"
    best.write_text("distill.temperature: 2.5\nsearch.max_latency_ms: 5.0\nbenchmark.runtimes: [eager, compile-default]\n")
    promote(best, promoted)
    assert promoted.read_text() == after  # `make promote` writes what `dvc exp run -S` writes


@pytest.fixture(scope="module")
def experiments(repo, tmp_path_factory):
    """The pipeline repo with its outputs committed, plus one `dvc exp run -S` per SETTINGS entry:
    ``(root, env, {setting: experiment name})``."""
    source, env, _ = repo
    root = tmp_path_factory.mktemp("experiments") / "project"
    shutil.copytree(source, root, symlinks=True)
    run_cmd(["git", "checkout", "--", "params.yaml"], root, env)  # another test may have edited it
    run_cmd(["dvc", "repro"], root, env)  # nothing to do unless it had
    run_cmd(["git", "add", "-A"], root, env)
    run_cmd(["git", "commit", "-qm", "default run: dvc.lock and the cache: false outputs"], root, env)
    names = {}
    for key, value in SETTINGS.items():
        out = run_cmd(["dvc", "exp", "run", "-S", f"{key}={value}"], root, env)
        names[key] = re.search(r"Ran experiment\(s\): (\S+)", out).group(1)
        run_cmd(["git", "checkout", "--", "params.yaml"], root, env)  # the next one starts from main's params
    return root, env, names


def test_outputs_that_describe_a_run_are_in_git_and_models_are_not(experiments):
    root, env, _ = experiments
    tracked = set(run_cmd(["git", "ls-files"], root, env).split())
    assert {"metrics/summary.json", "metrics/compile_benchmark.json", "plots/pareto.json", "plots/distill.json",
            "reports/summary.md", "reports/benchmark.csv", "reports/search/pareto.json"} <= tracked
    assert not any(path.startswith(("models/", "reports/search_plots/")) for path in tracked)


def test_exp_show_has_numeric_headline_for_main_and_each_experiment(experiments):
    root, env, names = experiments
    rows = list(csv.DictReader(io.StringIO(run_cmd(["dvc", "exp", "show", "--csv"], root, env))))
    main = [r for r in rows if r["typ"] == "baseline" and r["rev"] != "workspace"]
    exps = {r["Experiment"]: r for r in rows if r["Experiment"] in names.values()}
    assert len(main) == 1 and set(exps) == set(names.values())
    for row in [*main, *exps.values()]:
        for key in HEADLINE:
            float(row[key])  # numeric, not "!" or "-"
    assert exps[names["quantize.method"]]["quantize.method"] == "dynamic"
    assert float(exps[names["prune.amount"]]["prune.amount"]) == 0.3


def test_metrics_and_params_diff_between_two_experiments(experiments):
    root, env, names = experiments
    a, b = names["quantize.method"], names["prune.amount"]
    metrics = json.loads(run_cmd(["dvc", "metrics", "diff", a, b, "--json"], root, env))
    headline = metrics["metrics/summary.json"]
    for key in ("acc", "p50_ms", "speedup", "size_ratio"):
        assert isinstance(headline[key]["old"], float) and isinstance(headline[key]["new"], float)
    params = json.loads(run_cmd(["dvc", "params", "diff", a, b, "--json"], root, env))["params.yaml"]
    assert params["quantize.method"] == {"old": "dynamic", "new": "static"}
    assert (params["prune.amount"]["old"], params["prune.amount"]["new"]) == (0.5, 0.3)


def test_plots_diff_overlays_experiments_on_real_axes(experiments):
    root, env, names = experiments
    plots = json.loads(run_cmd(["dvc", "plots", "diff", *names.values(), "--json"], root, env))["data"]
    pareto = next(v[0]["content"] for k, v in plots.items() if k.startswith("Accuracy vs latency"))
    points = pareto["data"]["values"]
    for exp in names.values():
        mine = [p for p in points if p["rev"] == exp]
        assert sorted(p["model"] for p in mine) == ["pruned", "quantized", "student", "teacher"]
        assert all(p["best_latency_ms_p50"] > 0 and 0 <= p["accuracy"] <= 1 for p in mine)
    curves = {k: v[0]["content"] for k, v in plots.items() if not k.startswith("Accuracy vs latency")}
    assert len(curves) == 3
    for title, spec in curves.items():
        x = spec["encoding"]["x"]["field"]
        y = spec["layer"][0]["encoding"]["y"]["field"]  # dvc_inferred_y_value: several fields on one chart
        assert x in ("epoch", "step") and y not in ("epoch", "step"), (title, x, y)  # not step against step
        values = spec["data"]["values"]
        assert {v["rev"] for v in values} == set(names.values())
        assert all(isinstance(v[x], int) and isinstance(v[y], float) for v in values), title


def test_make_compare_fits_120_columns(experiments):
    root, env, _ = experiments
    out = run_cmd([sys.executable, "-m", "stages.compare"], root, {**env, "COLUMNS": "120"})
    lines = out.splitlines()
    assert lines and max(len(line) for line in lines) <= 120, out
    header = next(line for line in lines if "Experiment" in line).split()
    assert [name for name in header if name != "noisy"] == ["Experiment", "acc", "mb", "p50_ms", "speedup",
                                                            "prune.amount", "quantize.method"], out
    assert "…" not in out  # nothing cut


def test_make_plots_renders_without_a_network(experiments, tmp_path):
    binary = require_chromium()
    root, env, names = experiments
    run_cmd([sys.executable, "-m", "stages.plots", *names.values()], root, env)
    page = root / "dvc_plots" / "index.html"
    html = page.read_text()
    assert "<script src=" not in html and "cdn." not in html  # everything inline

    async def look() -> tuple[int, int]:
        async with Browser(binary, tmp_path / "chromium") as browser:
            await browser.open(page.as_uri())
            count = "document.querySelectorAll('.vega-embed').length"
            drawn = "document.querySelectorAll('.vega-embed canvas, .vega-embed svg.marks').length"
            await browser.wait_for(f"{count} > 0 && {drawn} === {count}", timeout=60)
            await browser.screenshot(root / "reports" / "ui" / "dvc_plots.png")
            return await browser.js(count), await browser.js(drawn)

    embeds, drawn = asyncio.run(look())
    assert embeds == drawn == 4
