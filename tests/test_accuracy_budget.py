"""The accuracy budget on a model made sensitive on purpose (tests/planted.py): the budget brings
the drop within limit by keeping the culprit out of int8, an unmeetable budget is reported (not
hidden), an eager start moves to PT2E to revert, bf16 fallback works or is refused in one line,
and a collapsed model is named."""

from __future__ import annotations

import pytest
import torch
from planted import (CULPRIT, plant_across_add, plant_offset, plant_range, planted_context, trained_mlp, trained_once,
                     trained_residual)

from pipelines.chain.accuracy_control import check_fallback, control, quantize_warnings
from pipelines.compression.quantize import pt2e, quantize
from pipelines.core.collapse import at_chance, collapse_warnings
from pipelines.core.cpu import bf16_missing
from pipelines.core.errors import QuantizeError
from pipelines.core.kinds import is_pt2e
from pipelines.core.stats import Accuracy, PairedAccuracy


OFFSET = 1000.0  # plant_offset: the planted unit's bias shift, far past any unit's usual range (measured: val drop 5.19 pp all-int8, 5.56 with CLE, 2.59 with SmoothQuant)


@pytest.fixture(scope="module")
def planted():
    ctx = planted_context()
    return plant_range(trained_once(ctx), 30.0)


def _ctx(**quantize):
    return planted_context(**quantize)


def test_budget_brings_the_drop_within_limit_on_val_and_test(planted):
    ctx = _ctx(max_accuracy_drop=0.5)
    int8 = quantize(planted, ctx.params.quantize, ctx, engine="pt2e")
    out, engine, m = control(ctx, planted, int8, "pt2e", timed=False)
    assert m["val_drop_before"]["val_drop_pp"] >= 2.0
    assert m["budget_met"] is True
    assert m["fallback_layers"] == [CULPRIT]
    assert m["val_drop_after"]["val_drop_pp"] <= 0.5
    assert m["budget_steps"][0]["layer"] == CULPRIT and m["budget_steps"][0]["accepted"]
    assert engine == "pt2e" and out is not int8
    test = PairedAccuracy.of(ctx.correct(planted, "test").tolist(), ctx.correct(out, "test").tolist())
    # test images were never used to choose: the drop there must not be shown over the budget
    # (the paired interval's low end; 3 of 359 images is already 0.84 pp)
    assert 100 * test.interval[0] <= 0.5 and test.tied(), test.describe("fp32", "int8+fallback")
    assert quantize_warnings(ctx, out, m["val_drop"]["val_drop_pp"]) == []


def test_unmeetable_budget_is_reported_not_hidden(planted, capsys):
    ctx = _ctx(max_accuracy_drop=0.5, max_fallback_layers=0)
    int8 = quantize(planted, ctx.params.quantize, ctx, engine="pt2e")
    out, _, m = control(ctx, planted, int8, "pt2e", timed=False)
    assert m["budget_met"] is False
    assert m["num_fallback_layers"] == 0 and out is int8  # the best found: all int8
    assert "NOT met" in capsys.readouterr().out
    warnings = quantize_warnings(ctx, out, m["val_drop"]["val_drop_pp"])
    assert len(warnings) == 1 and "over the 0.5 pp allowed" in warnings[0]


def test_eager_start_reverts_in_pt2e(planted):
    ctx = _ctx(max_accuracy_drop=0.5, engine="eager")
    int8 = quantize(planted, ctx.params.quantize, ctx, engine="eager")
    out, engine, m = control(ctx, planted, int8, "eager", timed=False)
    assert m["val_drop_before"]["val_drop_pp"] >= 2.0
    assert engine == "pt2e" and is_pt2e(out) and "eager" in m["engine_why"]
    assert m["budget_met"] is True and CULPRIT in m["fallback_layers"]


def test_bf16_fallback_or_one_line_refusal(planted):
    ctx = _ctx(max_accuracy_drop=0.5, fallback="bf16")
    if bf16_missing():
        with pytest.raises(QuantizeError, match="quantize.fallback: bf16 refused: .*avx512_bf16"):
            check_fallback(ctx)
        return
    check_fallback(ctx)
    kept = pt2e.quantize_static(planted, ctx.calibration_batches(), ctx.params.quantize, ctx.example(2),
                                keep=(CULPRIT,), keep_dtype="bf16")
    assert any(n.op == "call_function" and "conv" in str(n.target) and n.meta.get("val") is not None
               and n.meta["val"].dtype == torch.bfloat16 for n in kept.graph.nodes)
    x = ctx.data.val.tensors[0][:32]  # a bf16 conv runs slowly un-compiled: one batch, not the split
    with torch.no_grad():
        assert (kept(x).argmax(1) == planted(x).argmax(1)).float().mean() >= 31 / 32


def test_budget_off_and_budget_held_change_nothing():
    ctx = _ctx(max_accuracy_drop=100.0)
    model = trained_once(ctx)
    int8 = quantize(model, ctx.params.quantize, ctx, engine="pt2e")
    out, engine, m = control(ctx, model, int8, "pt2e", timed=False)
    assert out is int8 and m["budget_met"] is True and m["fallback_layers"] == []
    assert "budget_steps" not in m and len(m["sensitivity"]) == 5


def test_chance_and_drop_warnings():
    assert at_chance(Accuracy(36, 359), 10) and not at_chance(Accuracy(300, 359), 10)
    lines = collapse_warnings("quantized", Accuracy(36, 359), 10, drop_pp=89.0, max_drop_pp=2.0)
    assert len(lines) == 2 and "chance" in lines[0] and "89.00 pp" in lines[1]
    assert collapse_warnings("quantized", Accuracy(350, 359), 10, drop_pp=1.0) == []


def test_cle_lowers_the_planted_range_problem_before_any_revert(planted):
    from pipelines.chain.quantize import quantize_model

    ctx = _ctx(equalize="auto")
    out, m = quantize_model(ctx, planted, stage=True)
    drops = m["equalize_val_drop"]
    # measured here: 2.59 pp without, 1.11 pp with CLE, 0.74 with SmoothQuant (the rest is for the budget)
    assert drops["none"]["val_drop_pp"] >= 2.0 and drops["cle"]["val_drop_pp"] < drops["none"]["val_drop_pp"]
    assert drops["smoothquant"]["val_drop_pp"] < drops["none"]["val_drop_pp"]
    assert m["equalize_applied"] is True and "features.0.0 -> features.1.0" in m["equalize_pairs"]
    method = m["equalize_method"]  # auto: the lower of the two
    assert drops[method]["val_drop_pp"] == min(drops[k]["val_drop_pp"] for k in ("cle", "smoothquant"))
    assert m["val_drop"]["val_drop_pp"] == drops[method]["val_drop_pp"]  # the model kept is the equalized one


def test_a_range_problem_across_a_residual_add_is_left_to_the_budget():
    """The planted channel sits in the stem's output, which feeds both the block and the add: no
    equalizable pair touches it, so CLE cannot lower the drop (auto leaves it off); the ranking
    points at the layers that read the planted tensors, and the budget reverts them."""
    from pipelines.chain.quantize import quantize_model

    ctx = _ctx(equalize="auto", max_accuracy_drop=0.5)
    model = plant_across_add(trained_residual(ctx), 30.0)
    out, m = quantize_model(ctx, model, stage=True)
    drops = m["equalize_val_drop"]
    # measured here: 7.41 pp without CLE, 7.78 pp with it; 0.37 pp with branch_a.0 and classifier in fp32
    assert drops["none"]["val_drop_pp"] >= 2.0 and drops["cle"]["val_drop_pp"] >= 2.0
    assert m["equalize_applied"] is False
    assert not any(pair.startswith("stem.0 ") for pair in m["equalize_pairs"])  # two consumers: never rescaled
    readers = {"branch_a.0", "branch_b.0", "classifier"}  # the layers whose inputs carry the planted channel
    assert m["sensitivity"][0]["layer"] in readers
    assert m["budget_met"] is True and m["val_drop"]["val_drop_pp"] <= 0.5
    assert set(m["fallback_layers"]) <= readers
    test = PairedAccuracy.of(ctx.correct(model, "test").tolist(), ctx.correct(out, "test").tolist())
    assert 100 * test.interval[0] <= 0.5, test.describe("fp32", "int8+fallback")


def test_the_deploy_targets_take_the_same_budget(planted, tmp_path):
    """ort-int8 leaves the layer the budget kept in fp32 out of its quantization too (mapped from
    the PyTorch module path to the ONNX node, checked in the written file); ov-int8 runs NNCF's
    accuracy control with the same budget on the same validation images. Plain PTQ in either
    runtime loses over twice the budget on the planted model; the budgeted builds end within it.
    ts-int8 runs torch.ao's own accuracy control and ends within it too."""
    import onnx

    from pipelines.measurement.accuracy import runtime_accuracy
    from pipelines.measurement.deploy import DeployBudget, Deployer, DeploySettings
    from pipelines.measurement.deploy.budget import layer_nodes

    ctx = _ctx(max_accuracy_drop=0.5)
    images, labels = val = ctx.split_tensors("val")
    x = ctx.example(16)
    budget = DeployBudget(0.5, val, (f"{CULPRIT} (conv2d_1)",))  # as fp32_layers names a PT2E graph's layer
    budgeted = Deployer(DeploySettings(2, ctx.calibration_batches(), tmp_path / "budget", budget))
    plain = Deployer(DeploySettings(2, ctx.calibration_batches(), tmp_path / "plain"))
    onnx_fp32 = budgeted.onnx("fp32", planted, x)[0]
    mapped, unmapped = layer_nodes(onnx_fp32, [CULPRIT, "classifier", "features.9.0"])
    assert sorted(mapped) == sorted([CULPRIT, "classifier"]) and len(mapped[CULPRIT]) == 1
    assert unmapped == ["features.9.0 (no ONNX node)"]

    def drop_pp(deployed) -> float:
        assert deployed.error == "" and not deployed.skipped, deployed.error or deployed.skipped
        return 100 * (float((planted(images).argmax(1) == labels).float().mean())
                      - runtime_accuracy(deployed.fn, images, labels, 64))

    says = {"ort-int8": "excluded here as ONNX nodes", "ov-int8": "NNCF accuracy control"}
    for runtime in ("ort-int8", "ov-int8"):
        before = plain.build(runtime, "int8", planted, x, int8_model=True, source=("fp32", planted))
        after = budgeted.build(runtime, "int8", planted, x, int8_model=True, source=("fp32", planted))
        assert drop_pp(before) > 1.0, runtime  # twice the budget and more (PyTorch PTQ: >= 2 pp)
        assert drop_pp(after) <= 0.5, (runtime, after.note)
        assert says[runtime] in after.note
    # ts-int8 (torch.ao eager int8 on fbgemm): its own accuracy control (the stage's loop, on its own
    # int8 model, the same images), as NNCF's for ov-int8. Eager mode quantizes a kept layer's input at
    # its producer, so the planted tensor needs both of its layers kept; measured here (8-bit
    # activations): 2 kept, 0.74 pp (2 of 270 images), so the row validates the written archive and
    # says whether the budget held rather than claim it
    before = plain.build("ts-int8", "int8", planted, x, int8_model=True, source=("fp32", planted))
    after = budgeted.build("ts-int8", "int8", planted, x, int8_model=True, source=("fp32", planted))
    assert "torch.ao's own accuracy control" in after.note and "layer(s) kept in fp32" in after.note
    said = float(after.note.split("val drop ")[1].split(" pp")[0])
    assert said == pytest.approx(drop_pp(after), abs=0.01) and drop_pp(after) < drop_pp(before) - 1.0
    assert (", met;" if said <= 0.5 else ", NOT met;") in after.note
    graph = onnx.load(str(budgeted.ort_int8("fp32", planted, x, budgeted=True)[0])).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    culprit = next(n for n in graph.node if n.name == mapped[CULPRIT][0])
    others = [n for n in graph.node if n.op_type == "Conv" and n.name != culprit.name]
    # its weight stays fp32 in ONNX Runtime too; every other conv's weight is int8 (QDQ)
    assert producers.get(culprit.input[1]) != "DequantizeLinear"
    assert others and all(producers.get(n.input[1]) == "DequantizeLinear" for n in others)


def test_bias_correction_puts_the_int8_weights_mean_output_back(planted):
    """quantize.bias_correction: on the calibration batches, the first layer's output with int8
    weights and the corrected bias has the fp32 layer's per-channel mean (it did not before); the
    stage quantizes both and reports what the correction bought against the model as given."""
    import torch.nn.functional as F

    from pipelines.chain.quantize import quantize_model
    from pipelines.compression.quantize.bias_correction import corrected
    from pipelines.compression.quantize.simulate import fake_weight, compute_layers, folded

    ctx = _ctx(bias_correction="on")
    batches = ctx.calibration_batches()
    fixed, sizes = corrected(planted, batches, per_channel=False)  # per tensor: a visible rounding error
    assert set(sizes) == set(compute_layers(folded(planted))) and max(sizes.values()) > 0
    before, after = compute_layers(folded(planted))["features.0.0"], compute_layers(folded(fixed))["features.0.0"]
    x = torch.cat(list(batches))

    def mean(layer, weight):
        return F.conv2d(x, weight, layer.bias, layer.stride, layer.padding).mean((0, 2, 3))

    fp32 = mean(before, before.weight)
    int8_plain = mean(before, fake_weight(before.weight, False))
    int8_fixed = mean(after, fake_weight(after.weight, False))
    assert torch.allclose(int8_fixed, fp32, atol=1e-5) and not torch.allclose(int8_plain, fp32, atol=1e-5)
    out, m = quantize_model(ctx, planted, stage=True)
    assert set(m["bias_correction_val_drop"]) == {"none", "on"} and m["bias_correction_applied"] is True
    # the drop is against the model as given, not the corrected one
    assert m["val_drop"]["val_drop_pp"] == m["bias_correction_val_drop"]["on"]["val_drop_pp"]
    from pipelines.reporting.sensitivity import sensitivity_section

    assert any(line.startswith("**Bias correction** (on, applied)") for line in sensitivity_section(m))


def test_bias_correction_reaches_where_equalization_cannot():
    """On the residual model CLE cannot touch, bias correction (auto) lowers the drop by at least
    3 validation images and is kept (measured here: 7.41 -> 1.85 pp in a fresh process, 3.33 ->
    1.85 pp in a suite worker, whose training of the same model ran after other tests)."""
    from pipelines.chain.accuracy_control import range_fix

    ctx = _ctx(equalize="auto", bias_correction="auto")
    model = plant_across_add(trained_residual(ctx), 30.0)
    _, int8, info = range_fix(ctx, model, "pt2e")
    drops = info["bias_correction_val_drop"]
    assert info["equalize_applied"] is False and info["bias_correction_applied"] is True
    assert drops["none"]["val_drop_pp"] >= 2.0, drops
    assert drops["on"]["val_drop_pp"] <= drops["none"]["val_drop_pp"] - 1.0, drops
    assert int8 is not None


def test_smoothquant_is_exact_in_fp32_and_flattens_the_measured_ranges():
    from pipelines.compression.quantize.simulate import compute_layers, folded
    from pipelines.compression.quantize.smoothquant import input_ranges, smoothed

    ctx = _ctx()
    model = plant_offset(trained_mlp(ctx), OFFSET)
    batches = ctx.calibration_batches()
    out, found = smoothed(model, batches, 0.5)
    assert ["features.0.0", "features.1.0"] in found
    x = ctx.example(64)
    with torch.no_grad():
        torch.testing.assert_close(out(x), model(x), rtol=1e-4, atol=1e-3)

    def spread(m) -> float:  # the planted tensor's widest channel over its median channel
        f = folded(m)
        r = input_ranges(f, compute_layers(f), ["features.1.0"], batches)["features.1.0"]
        return float(r.max() / r.median())

    assert spread(model) > 10 and spread(out) < spread(model) / 3, (spread(model), spread(out))


def test_smoothquant_reaches_a_range_made_by_a_bias_where_cle_cannot():
    """The planted unit's range comes from its bias: CLE (weight ranges only) leaves it, SmoothQuant
    (the activation range measured on the calibration batches) moves it into the weights; auto keeps
    SmoothQuant, and the report says which fix was applied and what each bought."""
    from pipelines.chain.accuracy_control import range_fix
    from pipelines.reporting.sensitivity import sensitivity_section

    ctx = _ctx(equalize="auto")
    model = plant_offset(trained_mlp(ctx), OFFSET)
    _, int8, info = range_fix(ctx, model, "pt2e")
    drops = {k: v["val_drop_pp"] for k, v in info["equalize_val_drop"].items()}
    image = 100 / len(ctx.data.val)
    assert drops["none"] >= 2.0, drops
    assert drops["smoothquant"] <= drops["none"] - 3 * image and drops["smoothquant"] < drops["cle"], drops
    assert info["equalize_method"] == "smoothquant" and info["equalize_applied"] is True and int8 is not None
    lines = sensitivity_section(info)
    assert any(line.startswith("**Range equalization** (auto, applied: SmoothQuant)") for line in lines), lines


def test_the_range_fixes_the_stage_kept_are_rebuilt_the_same_for_the_deploy_targets(planted):
    """compile_benchmark rebuilds the float model the quantize stage quantized from its metrics
    (``reapplied``), so the deploy targets' own PTQ starts where PT2E did."""
    from pipelines.chain.accuracy_control import range_fix
    from pipelines.compression.quantize.range_fixes import reapplied

    ctx = _ctx(equalize="smoothquant", bias_correction="on")
    source, _, info = range_fix(ctx, planted, "pt2e")
    rebuilt, how = reapplied(planted, info, ctx.params.quantize, ctx.calibration_batches())
    assert how == "with the quantize stage's range fixes (SmoothQuant (alpha 0.5), bias correction)"
    for (name, a), b in zip(source.state_dict().items(), rebuilt.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    same, nothing = reapplied(planted, {}, ctx.params.quantize, ctx.calibration_batches())
    assert same is planted and nothing == ""
