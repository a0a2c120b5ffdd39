"""int8 on both engines with real kernels: eager torch.ao (dynamic/static/qat) and PT2E
(torch.export + torchao X86InductorQuantizer). A small CNN is trained for a few seconds on the
bundled digits so "close to fp32" is judged on real predictions."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
import torch
from conftest import agreement, fast_params
from torch import nn

from pipelines.compression.quantize import eager as qz
from pipelines.compression.quantize import program
from pipelines.compression.quantize import pt2e as qp
from pipelines.compression.checkpoint import load_model, save_model
from pipelines.core.config import QuantizeConfig
from pipelines.compression.quantize import recipe
from pipelines.core.kinds import is_eager_int8, is_pt2e
from pipelines.core.pt2e_graph import CONV_LINEAR
from pipelines.training.context import Context, train
from pipelines.workflow import quantize_model

SPEC_KEYS = ("method", "engine", "observer", "per_channel")


@pytest.fixture(scope="module")
def ctx() -> Context:
    return Context(fast_params(tracking={"enabled": False}, student={"channels": [16, 32], "depth": 1},
                               quantize={"calibration_batches": 2, "qat_epochs": 1}))


@pytest.fixture(scope="module")
def fp32(ctx) -> nn.Module:
    model = ctx.new_model("student")
    train(ctx, model, 3, 3e-3, "fp32 for quantize tests")
    return model.cpu().eval()


@pytest.fixture(scope="module")
def quantized(ctx, fp32):
    """quantize_model per (engine, method), each computed once for the whole module."""
    cache: dict[tuple[str, str], tuple[nn.Module, dict]] = {}

    def get(engine: str, method: str):
        if (engine, method) not in cache:
            c = ctx.derive(ctx.params.with_overrides({"quantize.engine": engine, "quantize.method": method}))
            cache[(engine, method)] = quantize_model(c, fp32)
        return cache[(engine, method)]

    return get


def _weight_dequant_ops(model: torch.fx.GraphModule) -> set[str]:
    """Which dequantize op feeds each conv/linear weight in a converted PT2E graph."""
    ops = set()
    for node in model.graph.nodes:
        if node.op == "call_function" and node.target in CONV_LINEAR:
            ops.add(str(node.args[1].target))
    return ops


# --- eager (torch.ao) -----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["dynamic", "static", "qat"])
def test_eager_int8_is_int8_and_close_to_fp32(ctx, fp32, quantized, method):
    model, metrics = quantized("eager", method)
    assert is_eager_int8(model)
    assert agreement(ctx, model, fp32) >= 0.9
    assert abs(metrics["accuracy"] - metrics["accuracy_fp32"]) <= 0.05
    # dynamic int8 has Linear kernels only: the convolutions stay fp32 and are reported as such
    assert metrics["fp32_layers"] == (["features.0.0", "features.2.0"] if method == "dynamic" else [])
    if method != "dynamic":
        assert metrics["size_ratio_vs_fp32"] < 0.6  # int8 weights; tiny model, so qparams weigh in


# --- pt2e -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["static", "qat"])
def test_pt2e_int8_graph_is_quantized_and_close_to_fp32(ctx, fp32, quantized, method):
    model, metrics = quantized("pt2e", method)  # qat: fit ran on the exported graph (train()/eval())
    assert is_pt2e(model) and model.eval() is model
    ops = qp.quantize_ops(model)
    assert ops.get("quantize_per_tensor", 0) >= 3 and ops.get("dequantize_per_channel", 0) == 3  # 2 conv + linear
    assert metrics["fp32_layers"] == [] and metrics["pt2e_export"] == "strict"
    assert agreement(ctx, model, fp32) >= 0.9
    assert abs(metrics["accuracy"] - metrics["accuracy_fp32"]) <= 0.05
    # convert_pt2e's leftover fp32 weights are stripped: int8 weights + scales + biases only
    assert metrics["size_ratio_vs_fp32"] < 0.5
    assert not any(t.dtype == torch.float32 and t.dim() >= 2 for t in model.state_dict().values())
    assert metrics["num_params"] >= sum(p.numel() for p in fp32.classifier.parameters())


def test_pt2e_dynamic_quantizes_linear_with_torchao(ctx, fp32, quantized):
    model, metrics = quantized("pt2e", "dynamic")
    assert not is_eager_int8(model) and not is_pt2e(model)
    assert type(model.classifier.weight).__name__ == "Int8Tensor"
    assert metrics["fp32_layers"] == ["features.0.0", "features.2.0"]
    assert agreement(ctx, model, fp32) >= 0.95


def test_per_channel_changes_the_weight_qscheme(ctx, fp32):
    batches = [ctx.example(32)]
    example = ctx.example(2)
    for per_channel, pt2e_op, eager_schemes in [
        (True, "quantized_decomposed.dequantize_per_channel.default", {torch.per_channel_symmetric,
                                                                       torch.per_channel_affine}),
        (False, "quantized_decomposed.dequantize_per_tensor.default", {torch.per_tensor_symmetric,
                                                                       torch.per_tensor_affine}),
    ]:
        cfg = QuantizeConfig(per_channel=per_channel, calibration_batches=1)
        assert _weight_dequant_ops(qp.quantize_static(fp32, batches, cfg, example)) == {pt2e_op}
        eager = qz.quantize_static(fp32, batches, cfg)
        assert eager.features[0][0].weight().qscheme() in eager_schemes


@pytest.mark.parametrize("observer, cls", [("minmax", "MinMaxObserver"), ("histogram", "HistogramObserver")])
def test_observer_choice_is_honoured(ctx, fp32, observer, cls):
    cfg = QuantizeConfig(observer=observer)
    prepared, _ = qp.prepare(fp32, ctx.example(2), cfg)
    pt2e_acts = {type(m).__name__ for n, m in prepared.named_modules() if n.startswith("activation_post_process")}
    assert cls in pt2e_acts and pt2e_acts <= {cls, "PerChannelMinMaxObserver"}
    eager = qz.prepare(fp32, observer, True, qat=False)
    assert type(eager.quant.activation_post_process).__name__ == cls


def test_eager_activation_bits_follow_the_cpu_and_are_recorded(ctx, fp32, tmp_path, monkeypatch):
    """quantize.eager_activation_bits: 7 calibrates activations to codes 0..127 (torch.ao's x86
    default), 8 to 0..255: the input's scale halves on the same calibration batch. auto is 8 on a
    CPU with int8 dot products and 7 without; 8 without them is refused in one line; the checkpoint
    records the bits and loading an 8-bit model on a CPU without int8 dot products warns."""
    from pipelines.compression import quantize as quantize_pkg
    from pipelines.core.cpu import has_int8_dot
    from pipelines.core.errors import QuantizeError

    batches = [ctx.example(32)]
    scale = {bits: float(qz.quantize_static(fp32, batches, QuantizeConfig(calibration_batches=1, observer="minmax",
                                                                           eager_activation_bits=bits)).quant.scale)
             for bits in (7, "auto")}
    assert qz.activation_bits("auto") == (8 if has_int8_dot() else 7) and qz.activation_bits(7) == 7
    assert scale["auto"] == pytest.approx(scale[7] * (127 / 255 if has_int8_dot() else 1.0), rel=1e-3)
    cfg = QuantizeConfig(eager_activation_bits="auto")
    assert recipe(cfg, "eager")["activation_bits"] == qz.activation_bits("auto")
    assert "activation_bits" not in recipe(cfg, "pt2e")
    model = qz.quantize_static(fp32, batches, QuantizeConfig(calibration_batches=1, eager_activation_bits="auto"))
    path = save_model(tmp_path / "q.pt", model, ctx.spec("student"), quant={**recipe(cfg, "eager"), "activation_bits": 8})
    monkeypatch.setattr(qz, "has_int8_dot", lambda: False)  # a CPU without VNNI / AMX int8
    monkeypatch.setattr(quantize_pkg, "has_int8_dot", lambda: False)
    assert qz.activation_bits("auto") == 7
    with pytest.raises(QuantizeError, match=r"^quantize.eager_activation_bits: 8 refused: .*int8 dot products"):
        qz.activation_bits(8)
    with pytest.warns(UserWarning, match="8-bit activations"):
        load_model(path)


# --- checkpoints ----------------------------------------------------------------------------------

@pytest.mark.parametrize("engine, method", [("eager", "static"), ("pt2e", "static"), ("pt2e", "qat"),
                                            ("pt2e", "dynamic")])
def test_checkpoint_round_trip_is_exact_and_safe(ctx, quantized, tmp_path, engine, method):
    model, _ = quantized(engine, method)
    cfg = ctx.params.quantize.model_copy(update={"engine": engine, "method": method})
    path = save_model(tmp_path / "quantized.pt", model, ctx.spec("student"), quant=recipe(cfg))
    payload = torch.load(path, weights_only=True)  # no pickled code anywhere
    assert ("program" in payload) == (engine == "pt2e" and method != "dynamic")
    loaded = load_model(path)
    x = ctx.example(64)
    with torch.inference_mode():
        assert torch.equal(loaded.model(x), model(x))
        assert loaded.model(x[:1]).shape == (1, 10)  # batch dimension stays dynamic
    assert {k: loaded.quant[k] for k in SPEC_KEYS} == {"method": method, "engine": engine,
                                                       "observer": cfg.observer, "per_channel": cfg.per_channel}
    if is_pt2e(model):  # a loaded PT2E model saves again
        again = load_model(save_model(tmp_path / "again.pt", loaded.model, ctx.spec("student"))).model
        with torch.inference_mode():
            assert torch.equal(again(x), model(x))


def test_program_with_pickled_entries_is_refused(quantized):
    model, _ = quantized("pt2e", "static")
    blob = program.program_bytes(model)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(blob)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("_weights_config.json"):
                config = json.loads(data)
                next(iter(config["config"].values()))["use_pickle"] = True
                data = json.dumps(config).encode()
            dst.writestr(info, data)
    with pytest.raises(ValueError, match="pickled"):
        program.load_program(out.getvalue())


# --- bigger graphs and the fp32 report ------------------------------------------------------------

def test_fp32_layer_report_lists_float_compute():
    from pipelines.models import CNN

    model = CNN(1, 10, [8, 16]).eval()
    graph = qp.export(model, torch.randn(2, 1, 8, 8))
    names = qp.fp32_layers(graph)  # nothing quantized: every conv and the linear
    assert len(names) == 3 and names[-1].startswith("classifier")


def test_resnet18_quantizes_on_pt2e_without_partition_error():
    import torchvision

    from pipelines.core.config import ModelConfig
    from pipelines.models import build_model

    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    cfg = QuantizeConfig(calibration_batches=1)
    model = build_model(ModelConfig(arch="resnet18"), 3, 10).eval()
    q = qp.quantize_static(model, [x], cfg.model_copy(update={"convs_as_linear": False}), x)
    assert q.meta[qp.REPORT_KEY]["skipped_patterns"] == []
    assert qp.fp32_layers(q) == []
    assert qp.quantize_ops(q)["dequantize_per_channel"] == 21  # 20 conv + fc
    with torch.inference_mode():
        assert torch.allclose(q(x), model(x), atol=0.1)
    # layer4's 3x3 convs run on 1x1 maps: as int8 linears (quantize.convs_as_linear); the last
    # block's residual add then has no conv to fuse with and adds in fp32 (a 64x512 elementwise op)
    q = qp.quantize_static(model, [x], cfg, x)
    assert q.meta[qp.REPORT_KEY]["convs_as_linear"] == [f"layer4.{b}.conv{c}" for b in (0, 1) for c in (1, 2)]
    assert qp.fp32_layers(q) == ["layer4.1 (add_7)"]
    assert qp.quantize_ops(q)["dequantize_per_channel"] == 21
    with torch.inference_mode():
        assert torch.allclose(q(x), model(x), atol=0.1)

    # torchvision's plain BasicBlock calls one ReLU twice; exported non-strict the conv+add+relu
    # annotator refuses it. The fallback skips that pattern and still quantizes every conv.
    plain = torchvision.models.resnet18(num_classes=10).eval()
    with pytest.warns(RuntimeWarning, match="refused a pattern"):
        q = qp.quantize_static(plain, [x], cfg, x, strict=False)
    report = q.meta[qp.REPORT_KEY]
    assert report["export"] == "non-strict" and report["skipped_patterns"]
    assert qp.quantize_ops(q)["dequantize_per_channel"] == 21
    assert all("add" in name for name in qp.fp32_layers(q))
