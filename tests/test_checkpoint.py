import pytest
import torch

from pipelines.core.errors import CheckpointError
from pipelines.core.io import atomic_write, write_dir, write_json
from pipelines.models import CNN
from pipelines.models.checkpoint import load_model, save_model

SPEC = {"model": {"arch": "cnn", "channels": [8, 16], "depth": 1, "dropout": 0.0}, "in_channels": 1,
        "num_classes": 10}


def test_round_trip_is_exact_and_weights_only(tmp_path):
    torch.manual_seed(0)
    model = CNN(1, 10, [8, 16]).eval()
    path = save_model(tmp_path / "m.pt", model, SPEC, extra={"stage": "x"})
    torch.load(path, weights_only=True)  # loads without any pickled code
    loaded = load_model(path)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert loaded.extra == {"stage": "x"}


def test_the_fp32_loader_refuses_an_int8_checkpoint_and_the_chain_loader_rebuilds_it(tmp_path):
    """distill and prune load through pipelines.models.checkpoint, which imports no quantizer: an
    int8 checkpoint there is one line naming the loader that rebuilds it."""
    from pipelines.compression import checkpoint as chain_checkpoint
    from pipelines.compression.quantize import quantize, recipe
    from pipelines.core.config import QuantizeConfig

    torch.manual_seed(0)
    cfg = QuantizeConfig(method="dynamic", engine="eager")
    int8 = quantize(CNN(1, 10, [8, 16]).eval(), cfg, ctx=None)
    path = chain_checkpoint.save_model(tmp_path / "q.pt", int8, SPEC, quant=recipe(cfg))
    with pytest.raises(CheckpointError, match=r"q\.pt: holds an int8 model \(eager/dynamic\).*"
                                              r"pipelines\.compression\.checkpoint\.load_model"):
        load_model(path)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(chain_checkpoint.load_model(path).model(x), int8(x))


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = save_model(tmp_path / "m.pt", CNN(1, 10, [8, 16]), SPEC)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="m.pt: not a readable checkpoint"):
        load_model(path)


def test_mismatched_checkpoint_names_the_file(tmp_path):
    spec = {**SPEC, "num_classes": 3}
    path = save_model(tmp_path / "m.pt", CNN(1, 10, [8, 16]), spec, shapes={})
    with pytest.raises(CheckpointError, match="m.pt: weights do not fit"):
        load_model(path)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt.*not found"):
        load_model(tmp_path / "nope.pt")


@pytest.mark.parametrize(("model", "stage"), [("teacher", "train_baseline"), ("student", "distill"),
                                              ("pruned", "prune"), ("quantized", "quantize")])
def test_missing_chain_model_says_which_stage_writes_it(in_tmp, model, stage):
    from pipelines import stage as stage_io
    from pipelines.training.context import Context
    from tests.conftest import fast_params

    with pytest.raises(CheckpointError, match=rf"models/{model}\.pt.*dvc repro {stage}"):
        stage_io.load(Context(fast_params(tracking={"enabled": False})), model)


def test_failed_write_leaves_previous_file_intact(tmp_path):
    target = write_json(tmp_path / "metrics.json", {"accuracy": 0.9})

    def explode(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, explode)
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_outputs_get_the_mode_a_plain_write_would(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = write_json(tmp_path / "metrics.json", {"accuracy": 0.9})
    folder = write_dir(tmp_path / "deploy", lambda d: [write_json(d / "a.json", {})])[0].parent
    assert written.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 != 0o600
    (tmp_path / "sub").mkdir()
    assert folder.stat().st_mode & 0o777 == (tmp_path / "sub").stat().st_mode & 0o777
