"""The default pipeline through a real `dvc repro` in a temporary git repo (shortened epochs).

The session's `repo` is read here, never changed (so the tests pass in any order); what a params
change re-runs is checked on a copy, by the experiments of tests/test_experiments.py."""

import csv
import json
from pathlib import Path

import mlflow
import pytest

from pipelines.measurement.comparison import RUN_METRICS
from tests.conftest import METRIC_STAGES, STAGES
from tests.conftest import run_cmd as _run
from tests.conftest import stages_ran as _ran

# `repo` (one real `dvc repro` per session, shared with test_ui_mlflow.py) lives in session_repo.py.


def test_repro_runs_every_stage_and_writes_outputs(repo):
    root, _, first = repo
    ran = _ran(first)
    assert sorted(ran) == sorted(STAGES) and ran[-1] == "report"
    assert ran.index("train_baseline") < ran.index("search")
    for stage in METRIC_STAGES:
        assert json.loads((root / "metrics" / f"{stage}.json").read_text())
    for path in ["models/teacher.pt", "models/student.pt", "models/pruned.pt", "models/quantized.pt",
                 "reports/benchmark.csv", "reports/summary.md", "reports/pareto.png",
                 "reports/search/pareto.json"]:
        assert (root / path).stat().st_size > 0, path
    front = json.loads((root / "reports/search/pareto.json").read_text())
    # best_params.yaml exists exactly when the (tiny, 1-trial) search found a feasible trial
    assert (root / "reports/search/best_params.yaml").exists() == bool(front["trials"])
    assert "| quantized (final) |" in first  # the summary table is printed at the end
    assert "## Search" in (root / "reports" / "summary.md").read_text()


def test_metrics_show_lists_every_stage(repo):
    root, env, _ = repo
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], root, env))
    files = next(iter(shown.values()))["data"]
    assert {f"metrics/{s}.json" for s in METRIC_STAGES} <= set(files)
    bench = files["metrics/compile_benchmark.json"]["data"]
    assert set(bench) == {"teacher", "student", "pruned", "quantized"}
    assert bench["teacher"]["speedup_vs_teacher"] == pytest.approx(1.0)


def test_one_mlflow_run_per_stage_under_one_parent(repo):
    root, _, _ = repo
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("compression-lab")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    stage_runs = [r for r in runs if "stage" in r.data.tags]
    assert sorted(r.data.tags["stage"] for r in stage_runs) == sorted(STAGES)
    parents = {r.data.tags["mlflow.parentRunId"] for r in stage_runs}
    assert len(parents) == 1
    parent = client.get_run(parents.pop())
    assert parent.data.tags["role"] == "pipeline" and parent.info.status == "FINISHED"
    by_stage = {r.data.tags["stage"]: r for r in stage_runs}
    assert "accuracy" in by_stage["quantize"].data.metrics
    assert by_stage["distill"].data.params["distill.temperature"] == "4.0"


def _first_pipeline(root):
    """The store, and the runs of the first pipeline execution (the session's `dvc repro`) by stage."""
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("compression-lab")
    runs = client.search_runs([exp.experiment_id], max_results=200)
    parent = min((r for r in runs if r.data.tags.get("role") == "pipeline"), key=lambda r: r.info.start_time)
    stages = {r.data.tags["stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    return client, exp, parent, stages


def test_mlflow_parent_carries_headline_params_and_report(repo):
    root, env, _ = repo
    _, _, parent, _ = _first_pipeline(root)
    for key in ("acc", "drop_pp", "size_ratio", "p50_ms", "p50_ms_bs1", "speedup", "mb"):
        assert key in parent.data.metrics, key
    assert {"seed", "teacher.channels", "distill.alpha", "prune.method", "quantize.method", "benchmark.runtimes",
            "search.objectives", "tracking.experiment"} <= set(parent.data.params)
    assert parent.info.run_name.startswith("params ")
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("# Compression report")
    assert f"](http://127.0.0.1:{env['MLFLOW_PORT']}/get-artifact?path=pareto.png&run_uuid=" in note  # drawn by the UI


def test_mlflow_stage_models_registry_and_dataset(repo):
    root, _, _ = repo
    client, exp, parent, stages = _first_pipeline(root)
    models = {m.source_run_id: m for m in client.search_logged_models([exp.experiment_id])}
    for stage, name in [("train_baseline", "teacher"), ("distill", "student"), ("prune", "pruned"),
                        ("quantize", "quantized")]:
        model = models[stages[stage].info.run_id]
        assert model.name == name
        linked = {m.key for m in model.metrics}
        assert {"accuracy", "size_mb", "latency_ms_p50", "speedup_vs_teacher", "size_ratio_vs_teacher",
                "throughput_sps"} <= linked, (name, linked)
        inputs = stages[stage].inputs.dataset_inputs
        assert [i.dataset.name for i in inputs] == ["digits-train"]
    reports = [r for r in client.search_runs([exp.experiment_id], "tags.stage = 'report'")]
    versions = client.search_model_versions("name = 'compression-lab'")
    assert len(versions) == len(reports) >= 1  # one version per pipeline run
    first = min(versions, key=lambda v: int(v.version))
    assert first.run_id == stages["quantize"].info.run_id and float(first.tags["acc"]) == parent.data.metrics["acc"]
    # every version says why the alias did or did not move; a run timed on a busy machine (noisy) never
    # takes it, nor one that warned (this cheap student can lose more than 2 pp: a collapse warning)
    decisions = [v.tags["champion_decision"] for v in versions]
    # (search_model_versions leaves aliases out: read each version)
    holders = [v.version for v in versions if "champion" in client.get_model_version(v.name, v.version).aliases]
    if all("noisy" in d or "the run warned" in d for d in decisions):
        assert holders == [], decisions
    else:
        assert len(holders) == 1, (holders, decisions)


def test_mlflow_benchmark_is_a_table_plus_a_few_metrics_per_model(repo):
    root, _, _ = repo
    client, _, _, stages = _first_pipeline(root)
    bench = stages["compile_benchmark"]
    # MLflow's system metrics and the machine's speed on the reference workload aside
    names = {n for n in bench.data.metrics if not n.startswith(("system/", "machine."))}
    assert {"quantized.size_ratio_vs_teacher", "quantized.throughput_sps", "teacher.latency_ms_p50"} <= names
    assert len(names) <= 4 * len(RUN_METRICS) and not any(".bs" in n for n in names)  # the full table is an artifact
    assert {"machine.ref_int8_ms", "machine.ref_fp32_ms", "machine.speed_change"} <= set(bench.data.metrics)
    assert "benchmark_table.json" in {a.path for a in client.list_artifacts(bench.info.run_id)}
    summary = json.loads((root / "metrics" / "compile_benchmark.json").read_text())
    assert bench.data.metrics["quantized.throughput_sps"] == pytest.approx(summary["quantized"]["throughput_sps"])


def test_default_run_deploys_the_final_model_on_onnx_runtime_and_openvino(repo):
    root, _, _ = repo
    # the deploy targets serve the model that ships: its fp32 source is exported, not the teacher
    assert (root / "models" / "deploy" / "pruned.onnx").stat().st_size > 0
    assert not (root / "models" / "deploy" / "teacher.onnx").exists()
    every = list(csv.DictReader((root / "reports" / "benchmark.csv").open()))
    assert not {r["runtime"] for r in every if r["model"] != "quantized"} & {"ort-int8", "ov-int8"}
    rows = [r for r in every if r["model"] == "quantized"]
    timed = {(r["runtime"], int(r["batch_size"])): r for r in rows if r["latency_ms_p50"]}
    for runtime in ("ort-int8", "ov-int8"):
        for bs in (1, 64):
            assert float(timed[(runtime, bs)]["accuracy"]) > 0.5, runtime  # measured in that runtime
    headline = json.loads((root / "metrics" / "summary.json").read_text())
    assert headline["deploy_runtime_bs1"] in {r for r, _ in timed} and headline["deploy_artifact_mb_bs1"] > 0
    assert "## Deploy" in (root / "reports" / "summary.md").read_text()
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("compression-lab")
    run = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("stage") == "compile_benchmark")
    logged = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "onnx")}
    assert "pruned.int8.onnx" in logged and "teacher.onnx" not in logged

