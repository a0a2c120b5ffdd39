"""Per-layer sensitivity on a model made sensitive on purpose (tests/planted.py): the ranking finds
the culprit, the cheap simulation ranks it first as real PT2E int8 does, and the SQNR of both
engines' debuggers points at the planted tensor."""

from __future__ import annotations

import pytest
from planted import CULPRIT, plant_range, planted_context, trained_once

from pipelines.chain.accuracy_control import control
from pipelines.compression.quantize import pt2e, quantize
from pipelines.core.stats import PairedAccuracy

UPSTREAM = "features.0.0"  # the layer that produces the planted tensor


@pytest.fixture(scope="module")
def ctx():
    return planted_context()


@pytest.fixture(scope="module")
def models(ctx):
    fp32 = trained_once(ctx)
    return fp32, plant_range(fp32, 30.0)


def _val_drop_pp(ctx, fp32, int8) -> float:
    return 100 * PairedAccuracy.of(ctx.correct(fp32, "val").tolist(), ctx.correct(int8, "val").tolist()).difference


def test_planted_culprit_ranks_first_and_real_int8_agrees(ctx, models):
    fp32, planted = models
    assert _val_drop_pp(ctx, fp32, planted) == 0  # planting is exact in fp32
    int8 = quantize(planted, ctx.params.quantize, ctx, engine="pt2e")
    drop = _val_drop_pp(ctx, planted, int8)
    assert drop >= 2.0, f"the planted range problem should cost int8 at least 2 pp, lost {drop:.2f}"
    _, _, metrics = control(ctx, planted, int8, "pt2e", timed=False)
    ranking = metrics["sensitivity"]
    assert [r["rank"] for r in ranking] == list(range(1, len(ranking) + 1))
    assert ranking[0]["layer"] == CULPRIT
    assert ranking[0]["val_accuracy_delta"] > ranking[1]["val_accuracy_delta"]
    # the simulation's ranking against real PT2E int8 with one layer kept fp32 (culprit vs upstream)
    batches, example = ctx.calibration_batches(), ctx.example(2)
    real = {layer: _val_drop_pp(ctx, planted, pt2e.quantize_static(planted, batches, ctx.params.quantize, example,
                                                                    keep=(layer,)))
            for layer in (CULPRIT, UPSTREAM)}
    assert real[CULPRIT] < real[UPSTREAM]
    assert real[CULPRIT] <= drop - 2.0  # keeping the culprit in fp32 gives back what int8 lost


def test_pt2e_sqnr_from_the_numeric_debugger_points_at_the_planted_tensor(ctx, models):
    fp32, planted = models
    rows = {}
    for name, model in (("clean", fp32), ("planted", planted)):
        int8 = quantize(model, ctx.params.quantize, ctx, engine="pt2e")
        _, _, metrics = control(ctx, model, int8, "pt2e", timed=False)
        rows[name] = {r["layer"]: r for r in metrics["sensitivity"]}
        assert pt2e.FLOAT_GRAPH_KEY not in int8.meta  # the float copy is dropped once used
    assert {r["sqnr_source"] for r in rows["planted"].values()} == {"torchao numeric debugger"}
    # the layer whose input is the planted tensor loses >10 dB; the one before it does not
    assert rows["planted"][CULPRIT]["sqnr_db"] < rows["clean"][CULPRIT]["sqnr_db"] - 10
    assert rows["planted"][UPSTREAM]["sqnr_db"] > rows["clean"][UPSTREAM]["sqnr_db"] - 3


def test_eager_sqnr_from_the_numeric_suite(ctx, models):
    """Eager torch.ao quantizes each layer's output inside the layer: the planted tensor is the
    output of the upstream layer there, and its SQNR shows it."""
    fp32, planted = models
    eager = ctx.derive(ctx.params.with_overrides({"quantize.engine": "eager"}))
    rows = {}
    for name, model in (("clean", fp32), ("planted", planted)):
        int8 = quantize(model, eager.params.quantize, eager, engine="eager")
        _, _, metrics = control(eager, model, int8, "eager", timed=False)
        rows[name] = {r["layer"]: r for r in metrics["sensitivity"]}
    assert set(rows["clean"]) == {"features.0.0", "features.1.0", "features.3.0", "features.4.0", "classifier"}
    assert {r["sqnr_source"] for r in rows["clean"].values()} == {"torch.ao numeric suite"}
    # ~6 dB here: the whole tensor's signal is dominated by the planted channel itself
    assert rows["planted"][UPSTREAM]["sqnr_db"] < rows["clean"][UPSTREAM]["sqnr_db"] - 3
    assert rows["planted"]["features.1.0"]["val_accuracy_delta"] > 0  # the simulation still finds the culprit
