import pytest
import torch

from pipelines.checkpoint import CheckpointError, load_model, save_model
from pipelines.io import atomic_write, write_json
from pipelines.models import CNN

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


def test_missing_checkpoint_says_which_stage(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pt")


def test_failed_write_leaves_previous_file_intact(tmp_path):
    target = write_json(tmp_path / "metrics.json", {"accuracy": 0.9})

    def explode(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, explode)
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
