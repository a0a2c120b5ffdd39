"""benchmark.compiled_call: a compiled CPU graph is called without Dynamo at the input it was
compiled for, and through torch.compile's guards for every other input."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch.profiler import profile

from pipelines.compression.quantize import pt2e as qp
from pipelines.core.config import QuantizeConfig
from pipelines.measurement.compile import CompileSettings, compile_for
from pipelines.measurement.graph_break_demo import variants
from pipelines.models import CNN

DYNAMO_EVENTS = {"TorchDynamo Cache Lookup", "Torch-Compiled Region"}


def _events(fn, x: torch.Tensor, grad: bool = False) -> tuple[set[str], torch.Tensor]:
    """The profiler's event names of one call of ``fn(x)``, and its output."""
    mode = torch.enable_grad() if grad else torch.inference_mode()
    with mode, profile() as prof:
        out = fn(x)
    return {e.name.split(":")[0] for e in prof.events()}, out


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def cnn() -> CNN:
    torch.manual_seed(0)
    return CNN(1, 10, [8, 16], 1).eval()


def test_direct_call_skips_dynamo_and_gives_the_guarded_output(cnn):
    x = torch.randn(4, 1, 8, 8)
    direct = compile_for(cnn, "compile-default", x)
    guarded = compile_for(cnn, "compile-default", x, settings=CompileSettings(call="dynamo"))
    assert (direct.error, guarded.error, direct.call, guarded.call) == (None, None, "direct", "dynamo")
    seen_direct, out_direct = _events(direct.fn, x)
    seen_guarded, out_guarded = _events(guarded.fn, x)
    assert not seen_direct & DYNAMO_EVENTS and DYNAMO_EVENTS <= seen_guarded
    assert torch.equal(out_direct, out_guarded)
    with torch.inference_mode():
        torch.testing.assert_close(out_direct, cnn(x), atol=1e-4, rtol=1e-4)


def test_other_inputs_and_modes_go_through_dynamo(cnn):
    x = torch.randn(4, 1, 8, 8)
    comp = compile_for(cnn, "compile-default", x)
    others = {"another batch": torch.randn(3, 1, 8, 8),
              "another layout": torch.randn(4, 8, 8, 1).permute(0, 3, 1, 2)}
    for why, other in others.items():
        seen, out = _events(comp.fn, other)
        assert DYNAMO_EVENTS <= seen, why
        with torch.inference_mode():
            torch.testing.assert_close(out, cnn(other), atol=1e-4, rtol=1e-4)
    seen, out = _events(comp.fn, x, grad=True)  # autograd on: not the inference graph
    assert DYNAMO_EVENTS <= seen and out.requires_grad
    cnn.train()
    try:
        seen, _ = _events(comp.fn, x)
        assert DYNAMO_EVENTS <= seen
    finally:
        cnn.eval()


def test_a_graph_break_keeps_the_guarded_call():
    models = variants(dim=16, hidden=32)
    x = torch.rand(4, 16) + 0.1
    branchy = compile_for(models["branchy"], "compile-default", x)
    fixed = compile_for(models["torch.where"], "compile-default", x)
    assert (branchy.error, branchy.call, fixed.call) == (None, "dynamo", "direct")
    with torch.inference_mode():
        torch.testing.assert_close(branchy.fn(x), models["branchy"](x))


def test_pt2e_int8_graph_runs_direct_with_the_same_output():
    torch.manual_seed(1)
    model = CNN(1, 10, [8, 16], 1).eval()
    x = torch.randn(8, 1, 8, 8)
    int8 = qp.quantize_static(model, [torch.randn(8, 1, 8, 8)], QuantizeConfig(calibration_batches=1), x[:2])
    direct = compile_for(int8, "compile-default", x)
    torch._dynamo.reset()
    guarded = compile_for(int8, "compile-default", x, settings=CompileSettings(call="dynamo"))
    assert (direct.call, direct.wrapper, guarded.call) == ("direct", "cpp", "dynamo")
    seen, out = _events(direct.fn, x)
    assert not seen & DYNAMO_EVENTS
    with torch.inference_mode():
        assert torch.equal(out, guarded.fn(x))


def test_a_pt2e_int8_graph_called_at_another_batch_size_recompiles_into_int8_kernels():
    """Dynamo's recompile for a new batch size is built under the compile's own Inductor settings
    (freezing): its convolutions run as oneDNN int8 primitives (u8 input). Before, that recompile
    ran without freezing: fp32 convolutions outside oneDNN, 2.5-4x slower than the first graph."""
    from pipelines.measurement.kernels import onednn_execution, onednn_executions

    torch.manual_seed(2)
    model = CNN(1, 10, [8, 16], 1).eval()
    int8 = qp.quantize_static(model, [torch.randn(8, 1, 8, 8)], QuantizeConfig(calibration_batches=1),
                              torch.randn(2, 1, 8, 8))
    comp = compile_for(int8, "compile-default", torch.randn(8, 1, 8, 8))
    other = torch.randn(3, 1, 8, 8)
    with torch.inference_mode():
        comp.fn(other)  # the recompile
    lines = onednn_executions(lambda: comp.fn(other))
    convs = [line for line in lines if onednn_execution(line)[0] == "convolution"]
    assert convs and all("src:u8" in line for line in convs), lines
