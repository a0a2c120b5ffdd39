import re

import mlflow
import pytest
import torch

from pipelines.models import CNN
from pipelines.stage import SECTIONS
from pipelines.tracking import (child_run, close_pipeline, experiment_id, link_model_metrics, params_hash,
                                register_final, stage_run)
from tests.conftest import fast_params


def _client(uri):
    return mlflow.MlflowClient(uri)


def test_stage_runs_share_one_parent_until_report_closes_it(mlflow_store):
    params = fast_params(tracking={"experiment": "t"})
    with stage_run(params, "train_baseline", SECTIONS["train_baseline"]) as run:
        run.log_metrics({"accuracy": 0.9, "method": "not-a-number"})
    with stage_run(params, "distill", ["distill"]) as run2:
        run2.log_history([{"epoch": 1, "val_accuracy": 0.5}, {"epoch": 2, "val_accuracy": 0.7}])
    close_pipeline(params)
    with stage_run(params, "quantize", ["quantize"]) as run3:
        pass

    client = _client(mlflow_store)
    exp = client.get_experiment_by_name("t")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    first, second, third = (client.get_run(r.run_id) for r in (run, run2, run3))
    parent = first.data.tags["mlflow.parentRunId"]
    assert second.data.tags["mlflow.parentRunId"] == parent
    assert third.data.tags["mlflow.parentRunId"] != parent  # a new pipeline execution
    assert client.get_run(parent).info.status == "FINISHED"
    assert first.data.tags["stage"] == "train_baseline"
    assert first.data.tags["params_hash"] == params_hash(params)
    assert "git_commit" in first.data.tags and "torch.version" in first.data.tags
    assert first.data.params["teacher.channels"] == "[16, 32]"
    assert first.data.params["seed"] == "0"
    assert first.data.metrics == {"accuracy": 0.9}
    history = client.get_metric_history(run2.run_id, "val_accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.7)]


def test_failed_stage_is_marked_failed(mlflow_store):
    params = fast_params(tracking={"experiment": "t"})
    with pytest.raises(RuntimeError):
        with stage_run(params, "prune", ["prune"]) as run:
            raise RuntimeError("boom")
    assert _client(mlflow_store).get_run(run.run_id).info.status == "FAILED"


def test_child_runs_nest_and_record_state(mlflow_store):
    params = fast_params(tracking={"experiment": "t"})
    with stage_run(params, "search", ["search"]) as parent:
        with child_run(parent, "trial 0") as ok:
            ok.log_metrics({"accuracy": 1.0})
        with pytest.raises(ValueError):
            with child_run(parent, "trial 1") as bad:
                raise ValueError("nope")
    client = _client(mlflow_store)
    assert client.get_run(ok.run_id).info.status == "FINISHED"
    assert client.get_run(bad.run_id).info.status == "FAILED"
    assert client.get_run(bad.run_id).data.tags["mlflow.parentRunId"] == parent.run_id


def test_model_is_logged_with_a_signature(mlflow_store):
    params = fast_params(tracking={"experiment": "t"})
    with stage_run(params, "distill", []) as run:
        run.log_model(CNN(1, 10, [4, 8]).eval(), torch.randn(2, 1, 8, 8))
    models = mlflow.search_logged_models(experiment_ids=[_client(mlflow_store).get_experiment_by_name("t")
                                                         .experiment_id], output_format="list")
    assert len(models) == 1 and models[0].source_run_id == run.run_id
    info = mlflow.models.get_model_info(models[0].model_uri)
    assert info.signature is not None and info.signature.inputs is not None


def test_disabled_tracking_writes_no_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    with stage_run(fast_params(tracking={"enabled": False}), "x", ["data"]) as run:
        run.log_metrics({"a": 1})
    assert not (tmp_path / "mlflow.db").exists()


# --- the pipeline parent, logged models, the registry, datasets (a real sqlite store) -----------

def _logged(params, name, tmp_path, metrics):
    """One stage run that saves a checkpoint and logs it as model ``name`` (as stage.write_outputs does)."""
    from pipelines.compression.checkpoint import save_model
    from pipelines.training.context import Context

    model = CNN(1, 10, [4, 8]).eval()
    path = save_model(tmp_path / f"{name}.pt", model, Context(params).spec("student"))
    with stage_run(params, name, ["data"]) as run:
        model_id = run.log_model(model, torch.randn(2, 1, 8, 8), name=name, checkpoint=path, metrics=metrics)
    return run, model_id, path


def test_pipeline_parent_is_named_by_params_hash_and_time_and_carries_every_section(mlflow_store):
    params = fast_params(tracking={"experiment": "t"})
    with stage_run(params, "train_baseline", SECTIONS["train_baseline"]) as run:
        pass
    parent = _client(mlflow_store).get_run(run.parent_id)
    assert parent.info.run_name.startswith(f"params {params_hash(params)[:8]} ")
    assert re.fullmatch(r"params \w{8} \d\d-\d\d \d\d:\d\d:\d\d", parent.info.run_name)
    logged = set(parent.data.params)
    assert {"seed", "distill.temperature", "prune.amount", "quantize.method", "benchmark.batch_size",
            "search.min_speedup", "tracking.registered_model"} <= logged


def test_pipeline_parent_is_named_by_the_dvc_experiment(mlflow_store, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "ruddy-bobs")
    with stage_run(fast_params(tracking={"experiment": "t"}), "distill", ["distill"]) as run:
        pass
    parent = _client(mlflow_store).get_run(run.parent_id)
    assert parent.info.run_name.startswith("ruddy-bobs ") and parent.data.tags["dvc_exp"] == "ruddy-bobs"


def test_parent_gets_headline_metrics_and_the_summary_as_description(mlflow_store):
    params = fast_params(tracking={"experiment": "t"})
    with stage_run(params, "report", ["benchmark"]) as run:
        run.pipeline.log_metrics({"acc": 0.97, "runtime": "eager", "search": {"trial": 3}})
        run.pipeline.set_description("# Compression report\n\n" + "x" * 9000)
    parent = _client(mlflow_store).get_run(run.parent_id)
    assert parent.data.metrics == {"acc": 0.97, "search.trial": 3.0}
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("# Compression report") and len(note) <= 8000 and "cut: see summary.md" in note


def test_stage_models_are_named_and_later_measurements_link_to_them(mlflow_store, tmp_path):
    params = fast_params(tracking={"experiment": "t"})
    run, model_id, path = _logged(params, "pruned", tmp_path, {"accuracy": 0.9, "size_mb": 0.1})
    assert link_model_metrics(params, path, {"latency_ms_p50": 1.5, "speedup_vs_teacher": 4.0}) == model_id
    model = _client(mlflow_store).get_logged_model(model_id)
    assert model.name == "pruned" and model.source_run_id == run.run_id
    assert {m.key: m.value for m in model.metrics} == {"accuracy": 0.9, "size_mb": 0.1, "latency_ms_p50": 1.5,
                                                       "speedup_vs_teacher": 4.0}
    # the measurement lands on the run that logged the model: one value per name per run
    assert _client(mlflow_store).get_run(run.run_id).data.metrics["latency_ms_p50"] == 1.5


def test_an_unlogged_checkpoint_links_nothing(mlflow_store, tmp_path):
    params = fast_params(tracking={"experiment": "t"})
    _logged(params, "pruned", tmp_path, {"accuracy": 0.9})
    other = tmp_path / "other.pt"
    other.write_bytes(b"not the logged checkpoint")
    assert link_model_metrics(params, other, {"latency_ms_p50": 1.0}) is None


def _outcomes(wrong: int, n: int = 359) -> tuple[bool, ...]:
    return (False,) * wrong + (True,) * (n - wrong)


def test_champion_alias_moves_only_to_a_version_that_improves_on_its_holder(mlflow_store, tmp_path):
    from pipelines.core.decision import SideBySide
    from pipelines.core.stats import LatencyRatio

    params = fast_params(tracking={"experiment": "t", "registered_model": "final"})
    head = {"acc": 357 / 359, "speedup": 10.0, "speedup_ci_low": 9.0, "speedup_ci_high": 11.0, "mb": 0.4}
    paths = []

    def register(wrong, side=None, **changes):  # each version its own model (another random init)
        (folder := tmp_path / f"v{len(paths)}").mkdir()
        paths.append(_logged(params, "quantized", folder, {"accuracy": 0.9})[2])
        return register_final(params, paths[-1], {**head, **changes}, test_digest="d1",
                              test_correct=_outcomes(wrong), side_by_side=side)

    first = register(2)
    worse = register(20, acc=339 / 359)                                        # shown less accurate
    tied = register(3, acc=356 / 359, speedup=10.5)                            # one image, overlapping speedups
    together = register(2, side=lambda holder: SideBySide(_outcomes(2), _outcomes(2),
                                                          LatencyRatio(0.5, 0.45, 0.55, 40)))  # timed: 2x faster
    assert (first.version, first.champion) == ("1", True)
    assert (worse.version, worse.champion) == ("2", False) and "does not improve on version 1" in worse.reason
    assert "worse" in worse.reason and "McNemar" in worse.reason
    assert (tied.version, tied.champion) == ("3", False) and "tied" in tied.reason  # a tie keeps the holder
    assert together.champion and "side by side" in together.reason and "new/v1 = 0.500" in together.reason
    client = _client(mlflow_store)
    assert str(client.get_model_version_by_alias("final", "champion").version) == "4"
    v2 = client.get_model_version("final", "2")
    assert float(v2.tags["acc"]) == pytest.approx(339 / 359) and v2.tags["champion_decision"] == worse.reason
    assert v2.tags["test_digest"] == "d1" and v2.tags["test_correct"].startswith("359:")
    assert "vs_champion_latency_ratio" in client.get_model_version("final", "4").tags
    # the holder's own checkpoint registered again (a re-run that rebuilt the same bytes): tied, not
    # measured again (a side_by_side that would call it 2x faster is never asked)
    again = register_final(params, paths[-1], {**head, "speedup": 99.0}, test_digest="d1",
                           test_correct=_outcomes(0), side_by_side=lambda holder: 1 / 0)
    assert not again.champion and "same model as version 4" in again.reason
    assert str(client.get_model_version_by_alias("final", "champion").version) == "4"


def test_a_model_for_other_test_images_gets_its_own_registered_name(mlflow_store, tmp_path):
    params = fast_params(tracking={"experiment": "t", "registered_model": "final"})
    _, _, path = _logged(params, "quantized", tmp_path, {"accuracy": 0.9})
    digits = register_final(params, path, {"acc": 0.99, "speedup": 37.0, "mb": 0.4}, test_digest="a" * 64,
                            test_correct=_outcomes(3))
    folder = register_final(params, path, {"acc": 0.97, "speedup": 2.0, "mb": 40.0}, test_digest="b" * 64,
                            test_correct=_outcomes(3, n=100))
    assert digits.name == "final" and folder.name == "final-bbbbbbbb"
    assert folder.champion and folder.reason == "first version"  # never judged against the digits model
    assert str(_client(mlflow_store).get_model_version_by_alias("final", "champion").version) == "1"


def test_noisy_latency_never_moves_the_champion(mlflow_store, tmp_path):
    params = fast_params(tracking={"experiment": "t", "registered_model": "final"})
    _, _, path = _logged(params, "quantized", tmp_path, {"accuracy": 0.9})
    register_final(params, path, {"acc": 0.90, "speedup": 5.0, "mb": 0.4})
    busy = register_final(params, path, {"acc": 0.99, "speedup": 50.0, "mb": 0.1, "noisy": True})
    assert not busy.champion and "noisy" in busy.reason
    assert str(_client(mlflow_store).get_model_version_by_alias("final", "champion").version) == "1"


def test_training_data_is_logged_as_a_dataset_input(mlflow_store):
    from pipelines.stage import data_source, log_training_data
    from pipelines.training.context import Context

    params = fast_params(tracking={"experiment": "t"})
    ctx = Context(params)
    with stage_run(params, "distill", ["distill"]) as run:
        log_training_data(ctx, run)
    inputs = _client(mlflow_store).get_run(run.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert dataset.name == "digits-train" and len(dataset.digest) >= 8
    assert str(data_source(params)) in dataset.source and data_source(params).exists()
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"


def test_benchmark_rows_are_a_table_artifact(mlflow_store, tmp_path):
    rows = [{"model": "teacher", "runtime": "eager", "latency_ms_p50": 2.0},
            {"model": "quantized", "runtime": "eager", "latency_ms_p50": 0.5, "error": None}]
    with stage_run(fast_params(tracking={"experiment": "t"}), "compile_benchmark", ["benchmark"]) as run:
        run.log_table(rows, "benchmark_table.json")
    table = _client(mlflow_store).load_table(experiment_id("t"), "benchmark_table.json", run_ids=[run.run_id])
    assert list(table["model"]) == ["teacher", "quantized"] and list(table["latency_ms_p50"]) == [2.0, 0.5]


def test_make_ui_prints_the_training_runs_url_and_serves_on_mlflow_port(mlflow_store, tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.conftest import venv_env

    exp_id = experiment_id("compression-lab")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "stages.ui"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                            env=venv_env(MLFLOW_PORT=str(port), MLFLOW_TRACKING_URI=mlflow_store))
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs" in line
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the UI did not come up"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # mlflow ui runs its server in child processes
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


def test_a_registered_int8_version_loads_back_weights_only_from_the_checkpoint_it_was_logged_with(
        mlflow_store, tmp_path):
    """The champion alias is judged by measuring the holder again: an eager int8 version must load
    (MLflow's pickle of a torch.ao int8 model does not), through the chain's weights-only loader."""
    from pipelines.compression import checkpoint as chain_checkpoint
    from pipelines.compression.quantize import quantize, recipe
    from pipelines.core.config import QuantizeConfig
    from pipelines.tracking import version_checkpoint

    params = fast_params(tracking={"experiment": "t", "registered_model": "final"})
    torch.manual_seed(0)
    cfg = QuantizeConfig(method="dynamic", engine="eager")
    int8 = quantize(CNN(1, 10, [8, 16]).eval(), cfg, ctx=None)
    spec = {"model": {"arch": "cnn", "channels": [8, 16], "depth": 1, "dropout": 0.0}, "in_channels": 1,
            "num_classes": 10}
    path = chain_checkpoint.save_model(tmp_path / "quantized.pt", int8, spec, quant=recipe(cfg))
    with stage_run(params, "quantize", ["data"]) as run:
        run.log_model(int8, torch.randn(2, 1, 8, 8), name="quantized", checkpoint=path)
    registered = register_final(params, path, {"acc": 0.9, "speedup": 3.0, "mb": 0.1})
    got = version_checkpoint(registered.name, registered.version, tmp_path / "down")
    assert got is not None and got.read_bytes() == path.read_bytes()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(chain_checkpoint.load_model(got).model(x), int8(x))
    assert version_checkpoint(registered.name, "99", tmp_path / "none") is None  # no such version: None
