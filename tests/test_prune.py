import pytest
import torch

from pipelines.compression.checkpoint import load_model, save_model
from pipelines.core.config import PruneConfig
from pipelines.models import CNN, count_params
from pipelines.compression.prune import prune_model, sparsity_table, step_amount


def _model():
    torch.manual_seed(0)
    return CNN(1, 10, [16, 32, 64], depth=1).eval()


def _run(method, amount=0.5, steps=2):
    model = _model()
    calls = []
    result = prune_model(model, PruneConfig(method=method, amount=amount, steps=steps),
                         torch.randn(2, 1, 8, 8), lambda m, step: calls.append(step), lambda m: 0.5)
    return result, calls


def test_step_amount_compounds_to_the_target():
    for amount, steps in [(0.5, 1), (0.5, 3), (0.9, 4)]:
        assert 1 - (1 - step_amount(amount, steps)) ** steps == pytest.approx(amount)


def test_l1_unstructured_reaches_global_sparsity_and_masks_are_permanent():
    result, calls = _run("l1_unstructured", 0.6, 3)
    assert calls == [1, 2, 3] and len(result.steps) == 3
    table = sparsity_table(result.model)
    total = sum(r["params"] for r in table)
    zeros = sum(r["zeros"] for r in table)
    assert zeros / total == pytest.approx(0.6, abs=0.01)
    names = [n for n, _ in result.model.named_parameters()] + [n for n, _ in result.model.named_buffers()]
    assert not any(n.endswith(("weight_orig", "weight_mask")) for n in names)


def test_ln_structured_zeroes_whole_channels_but_keeps_shapes_and_classes():
    result, _ = _run("ln_structured", 0.5, 1)
    rows = {r["layer"]: r for r in sparsity_table(result.model)}
    assert rows["features.0.0"]["zero_channels"] == 8
    assert rows["classifier"]["zero_channels"] == 0
    assert count_params(result.model) == count_params(_model())


def test_channel_pruning_physically_shrinks_and_checkpoints_round_trip(tmp_path):
    base = count_params(_model())
    result, _ = _run("channel", 0.5, 2)
    model = result.model
    assert count_params(model) < 0.4 * base
    assert model.classifier.out_features == 10
    x = torch.randn(4, 1, 8, 8)
    spec = {"model": {"arch": "cnn", "channels": [16, 32, 64], "depth": 1, "dropout": 0.0},
            "in_channels": 1, "num_classes": 10}
    path = save_model(tmp_path / "pruned.pt", model, spec)
    loaded = load_model(path).model
    assert count_params(loaded) == count_params(model)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
