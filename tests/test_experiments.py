"""Comparing experiments with real DVC, as a user does after `make repro`: `dvc exp run -S` leaves
params.yaml alone but for the set lines, and the default run and an experiment can be compared with
`dvc exp show` (`make compare`), `dvc metrics diff`, `dvc params diff` and `dvc plots diff`
(rendered offline).

The experiment runs in a copy of the session's `repo` (one real `dvc repro`, shortened epochs, never
changed: every test reads it), its outputs committed as DVC's convention for `cache: false` files
expects. The experiment is also the check that a params change re-runs only the stages downstream
of it. One experiment, not two: each costs a cold `compile_benchmark`, the suite's dearest step."""

from __future__ import annotations

import asyncio
import csv
import difflib
import io
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pipelines.promote import promote
from tests.conftest import ROOT, require_chromium, run_cmd, stages_ran, venv_env
from tests.headless import Browser

HEADLINE = ("acc", "drop_pp", "size_ratio", "p50_ms", "p50_ms_bs1", "speedup")
SETTINGS = {"quantize.method": "dynamic", "prune.amount": 0.3}  # one experiment sets both


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
        "-temperature: 4.0", "+temperature: 2.5", "-- ort-int8", "-- ov-int8", "-- ts-int8",
        "-max_latency_ms:", "+max_latency_ms: 5.0"]
    assert "# empty: no absolute latency ceiling" in changed[-1]  # the comment stays on its line

    promoted = tmp_path / "promoted.yaml"
    promoted.write_text(before)
    best = tmp_path / "best.yaml"
    best.write_text("distill.temperature: 2.5\nsearch.max_latency_ms: 5.0\nbenchmark.runtimes: [eager, compile-default]\n")
    promote(best, promoted)
    assert promoted.read_text() == after  # `make promote` writes what `dvc exp run -S` writes


@dataclass
class Experiments:
    """The session's pipeline repo, copied, its outputs committed as the default run (``main``),
    then one `dvc exp run` with every SETTINGS entry: what it ran, and what a plain `dvc repro`
    ran right after it."""

    root: Path
    env: dict[str, str]
    exp: str  # the experiment's name
    ran: list[str]  # the stages its `dvc exp run` ran
    then: list[str]  # the stages a `dvc repro` right after it ran
    quantized: dict  # metrics/quantize.json after it

    main = "HEAD"  # the default run's commit: experiments are refs beside it, HEAD stays there

    @property
    def revs(self) -> list[str]:
        return [self.main, self.exp]


@pytest.fixture(scope="module")
def experiments(repo, tmp_path_factory) -> Experiments:
    source, env, _ = repo  # read only: the copy is ours to change
    root = tmp_path_factory.mktemp("experiments") / "project"
    shutil.copytree(source, root, symlinks=True)
    run_cmd(["git", "add", "-A"], root, env)
    run_cmd(["git", "commit", "-qm", "default run: dvc.lock and the cache: false outputs"], root, env)
    out = run_cmd(["dvc", "exp", "run", *(arg for k, v in SETTINGS.items() for arg in ("-S", f"{k}={v}"))], root, env)
    exp = re.search(r"Ran experiment\(s\): (\S+)", out).group(1)
    then = stages_ran(run_cmd(["dvc", "repro"], root, env))  # the workspace holds the experiment
    quantized = json.loads((root / "metrics" / "quantize.json").read_text())
    return Experiments(root, env, exp, stages_ran(out), then, quantized)


def test_changing_params_reruns_only_downstream_then_nothing(experiments):
    """Each stage reads only its own params sections: `prune.amount` and `quantize.method` re-run
    prune and what follows it (the search, which starts from the teacher, and everything before
    prune stay); a second `dvc repro` runs nothing."""
    assert experiments.ran == ["prune", "quantize", "compile_benchmark", "report"]
    assert experiments.quantized["method"] == "dynamic"
    assert experiments.then == []


def test_outputs_that_describe_a_run_are_in_git_and_models_are_not(experiments):
    root, env = experiments.root, experiments.env
    tracked = set(run_cmd(["git", "ls-files"], root, env).split())
    assert {"metrics/summary.json", "metrics/compile_benchmark.json", "plots/pareto.json", "plots/distill.json",
            "reports/summary.md", "reports/benchmark.csv", "reports/search/pareto.json"} <= tracked
    assert not any(path.startswith(("models/", "reports/search_plots/")) for path in tracked)


def test_exp_show_has_numeric_headline_for_main_and_the_experiment(experiments):
    root, env = experiments.root, experiments.env
    rows = list(csv.DictReader(io.StringIO(run_cmd(["dvc", "exp", "show", "--csv"], root, env))))
    main = [r for r in rows if r["typ"] == "baseline" and r["rev"] != "workspace"]
    exps = [r for r in rows if r["Experiment"] == experiments.exp]
    assert len(main) == 1 and len(exps) == 1
    for row in [*main, *exps]:
        for key in HEADLINE:
            float(row[key])  # numeric, not "!" or "-"
    assert (main[0]["quantize.method"], float(main[0]["prune.amount"])) == ("static", 0.5)
    assert exps[0]["quantize.method"] == "dynamic"
    assert float(exps[0]["prune.amount"]) == 0.3


def test_metrics_and_params_diff_between_main_and_the_experiment(experiments):
    root, env = experiments.root, experiments.env
    a, b = experiments.revs
    metrics = json.loads(run_cmd(["dvc", "metrics", "diff", a, b, "--json"], root, env))
    headline = metrics["metrics/summary.json"]
    for key in ("acc", "p50_ms", "speedup", "size_ratio"):
        assert isinstance(headline[key]["old"], float) and isinstance(headline[key]["new"], float)
    params = json.loads(run_cmd(["dvc", "params", "diff", a, b, "--json"], root, env))["params.yaml"]
    assert params["quantize.method"] == {"old": "static", "new": "dynamic"}
    assert (params["prune.amount"]["old"], params["prune.amount"]["new"]) == (0.5, 0.3)


def test_plots_diff_overlays_main_and_the_experiment_on_real_axes(experiments):
    root, env, revs = experiments.root, experiments.env, experiments.revs
    plots = json.loads(run_cmd(["dvc", "plots", "diff", *revs, "--json"], root, env))["data"]
    pareto = next(v[0]["content"] for k, v in plots.items() if k.startswith("Accuracy vs latency"))
    points = pareto["data"]["values"]
    for exp in revs:
        mine = [p for p in points if p["rev"] == exp]
        assert sorted(p["model"] for p in mine) == ["pruned", "quantized", "student", "teacher"]
        assert all(p["best_latency_ms_p50"] > 0 and 0 <= p["accuracy"] <= 1 for p in mine)
    ranked = {k: v[0]["content"] for k, v in plots.items() if k.startswith("Quantization sensitivity")}
    assert len(ranked) == 2  # one bar per layer: the layer names on y, a number on x
    for title, spec in ranked.items():  # static PTQ is ranked; the experiment's dynamic int8 has no ranking
        values = spec["data"]["values"]
        assert {v["rev"] for v in values} == {revs[0]} and all(isinstance(v["layer"], str) for v in values), title
    curves = {k: v[0]["content"] for k, v in plots.items()
              if not k.startswith(("Accuracy vs latency", "Quantization sensitivity"))}
    assert len(curves) == 3
    for title, spec in curves.items():
        x = spec["encoding"]["x"]["field"]
        y = spec["layer"][0]["encoding"]["y"]["field"]  # dvc_inferred_y_value: several fields on one chart
        assert x in ("epoch", "step") and y not in ("epoch", "step"), (title, x, y)  # not step against step
        values = spec["data"]["values"]
        assert {v["rev"] for v in values} == set(revs)
        assert all(isinstance(v[x], int) and isinstance(v[y], float) for v in values), title


def test_make_compare_fits_120_columns(experiments):
    root, env = experiments.root, experiments.env
    out = run_cmd([sys.executable, "-m", "stages.compare"], root, {**env, "COLUMNS": "120"})
    lines = out.splitlines()
    assert lines and max(len(line) for line in lines) <= 120, out
    header = next(line for line in lines if "Experiment" in line).split()
    assert [name for name in header if name != "noisy"] == ["Experiment", "acc", "mb", "p50_ms", "speedup",
                                                            "prune.amount", "quantize.method"], out
    assert "…" not in out  # nothing cut


def test_make_plots_renders_without_a_network(experiments, tmp_path):
    binary = require_chromium()
    root, env = experiments.root, experiments.env
    run_cmd([sys.executable, "-m", "stages.plots", *experiments.revs], root, env)
    page = root / "dvc_plots" / "index.html"
    html = page.read_text()
    assert "<script src=" not in html and "cdn." not in html  # everything inline

    async def look() -> tuple[int, int]:
        async with Browser(binary, tmp_path / "chromium") as browser:
            await browser.open(page.as_uri())
            count = "document.querySelectorAll('.vega-embed').length"
            drawn = "document.querySelectorAll('.vega-embed canvas, .vega-embed svg.marks').length"
            # all six embedded and drawn: vega-embed inserts them one by one, and `count > 0` once
            # let the check run with 5 of 6 on the page (a race seen once in the full suite)
            await browser.wait_for(f"{count} === 6 && {drawn} === {count}", timeout=60)
            await browser.screenshot(root / "reports" / "ui" / "dvc_plots.png")
            return await browser.js(count), await browser.js(drawn)

    embeds, drawn = asyncio.run(look())
    assert embeds == drawn == 6  # dvc.yaml's six plots: three curves, two sensitivity bars, the Pareto scatter
