import mlflow
import pytest
import torch

from pipelines.models import CNN
from pipelines.stage import SECTIONS
from pipelines.tracking import child_run, close_pipeline, params_hash, stage_run
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
