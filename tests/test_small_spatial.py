"""Convolutions on 1x1 outputs as linear layers (``quantize.convs_as_linear``): exact in fp32,
quantized as int8 linear layers that Inductor lowers to oneDNN's int8 GEMM, and close to fp32 on
real digits predictions. The model ends on a 1x1 map the way ResNet-18 does on 32x32 images."""

from __future__ import annotations

import collections

import pytest
import torch
from conftest import agreement, fast_params
from torch import nn

from pipelines.compression.quantize import pt2e as qp
from pipelines.compression.quantize.small_spatial import convs_as_linear
from pipelines.core.config import QuantizeConfig
from pipelines.measurement.compile import compile_for
from pipelines.measurement.kernels import onednn_execution, onednn_executions
from pipelines.training.context import Context, train
from pipelines.workflow import quantize_model

TAIL = ["tail.0", "tail.3"]  # 2x2 -> 1x1 (stride 2) and 1x1 -> 1x1: both smaller as matrices


def block(cin: int, cout: int, **kw) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, **kw), nn.BatchNorm2d(cout), nn.ReLU()]


class TinyMaps(nn.Module):
    """8x8 digits -> 4x4 -> 2x2 -> 1x1, every conv followed by batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(*block(1, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2))
        self.tail = nn.Sequential(*block(32, 32, stride=2), *block(32, 32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.tail(self.head(x)).flatten(1))


@pytest.fixture(scope="module")
def ctx() -> Context:
    return Context(fast_params(tracking={"enabled": False}, quantize={"calibration_batches": 2}))


@pytest.fixture(scope="module")
def fp32(ctx) -> nn.Module:
    torch.manual_seed(0)
    model = TinyMaps()
    train(ctx, model, 3, 3e-3, "tiny maps fp32")
    return model.cpu().eval()


def _convs(graph: torch.fx.GraphModule) -> int:
    return sum(n.target is torch.ops.aten.conv2d.default for n in graph.graph.nodes)


def test_rewrite_is_exact_for_any_batch_and_leaves_larger_maps_alone(ctx, fp32):
    graph = qp.export(fp32, ctx.example(2))
    assert convs_as_linear(graph) == TAIL
    assert _convs(graph) == 2  # the 8x8 and 4x4 convs: as matrices they would be bigger than their kernels
    with torch.no_grad():
        for n in (1, 5, 64):
            x = ctx.example(n)
            torch.testing.assert_close(graph(x), fp32(x), atol=1e-4, rtol=1e-4)


def test_growth_limit_leaves_the_graph_untouched(ctx, fp32):
    graph = qp.export(fp32, ctx.example(2))
    code = graph.code
    assert convs_as_linear(graph, max_growth=0.1) == []  # the 2x2 -> 1x1 matrix is 0.44x its kernel
    assert graph.code == code


def test_pt2e_runs_the_rewritten_layers_as_int8_linear_kernels(ctx, fp32):
    cfg = QuantizeConfig(method="static", calibration_batches=2)
    batches = ctx.calibration_batches()
    on = qp.quantize_static(fp32, batches, cfg, ctx.example(2))
    off = qp.quantize_static(fp32, batches, cfg.model_copy(update={"convs_as_linear": False}), ctx.example(2))
    assert on.meta[qp.REPORT_KEY]["convs_as_linear"] == TAIL
    assert off.meta[qp.REPORT_KEY]["convs_as_linear"] == []
    assert (_convs(on), _convs(off)) == (2, 4)
    assert qp.fp32_layers(on) == []
    assert agreement(ctx, on, fp32) >= 0.95
    assert agreement(ctx, on, off) >= 0.95

    x = ctx.example(16)
    compiled = compile_for(on, "compile-default", x)
    assert compiled.error is None
    lines = onednn_executions(lambda: compiled.fn(x))  # C++ wrapper: the profiler does not see its ops
    kinds = collections.Counter(onednn_execution(line)[0] for line in lines)
    assert kinds["matmul"] + kinds["inner_product"] == 3, kinds  # two rewritten convs + fc
    assert kinds["convolution"] == 2, kinds
    assert all("src:u8" in line and "wei:s8" in line for line in lines if ",convolution," in line or ",matmul," in line)
    got = compiled.fn(x)
    with torch.inference_mode():
        assert (got.argmax(1) == on(x).argmax(1)).float().mean().item() >= 0.9


def test_qat_keeps_its_convolutions(ctx, fp32):
    cfg = QuantizeConfig(method="qat", calibration_batches=1, qat_epochs=1)
    prepared, report = qp.prepare(fp32, ctx.example(2), cfg, qat=True)
    assert report["convs_as_linear"] == []
    assert _convs(prepared) == 4


def test_quantize_stage_metrics_name_the_rewritten_layers(ctx, fp32):
    c = ctx.derive(ctx.params.with_overrides({"quantize.engine": "pt2e"}))
    _, metrics = quantize_model(c, fp32)
    assert metrics["pt2e_convs_as_linear"] == TAIL
    assert metrics["fp32_layers"] == []
