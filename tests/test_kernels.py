"""Kernel time vs call time (pipelines.measurement.kernels) on real kernels: fp32 oneDNN
convolutions, eager int8 and a compiled PT2E int8 graph behind Inductor's C++ wrapper."""

from __future__ import annotations

import math

import torch
from conftest import fast_params

from pipelines.compression.quantize import eager as qz
from pipelines.core.config import QuantizeConfig
from pipelines.engines import measure_engines
from pipelines.measurement.compile import compile_for
from pipelines.measurement.kernels import kernel_profile, onednn_exec_ms, profile_ops
from pipelines.models import CNN
from pipelines.training.context import Context


def _model_and_input():
    torch.manual_seed(0)
    return CNN(1, 10, [32, 64]).eval(), torch.randn(16, 1, 8, 8)


def test_fp32_kernels_are_part_of_the_call_and_named_by_onednn(capfd):
    model, x = _model_and_input()
    fn = lambda: model(x)  # noqa: E731
    with torch.inference_mode():
        fn()
    prof = kernel_profile(fn, iters=5, timed_iters=10)
    assert 0 < prof.kernel_ms < prof.profiled_call_ms
    assert any(op == "aten::mkldnn_convolution" for op, _ in prof.top_ops), prof.top_ops
    assert any(name.startswith("convolution:") for name in prof.primitives), prof.primitives
    assert prof.overhead_ratio(2 * prof.kernel_ms) == 2.0
    assert 0 < prof.call_p50_ms < prof.profiled_call_ms  # timed alone, right before, without the profiler
    assert prof.overhead_ratio() == prof.call_p50_ms / prof.kernel_ms
    assert math.isnan(kernel_profile(fn, iters=2).overhead_ratio())  # no timing asked for: nothing to divide
    out, err = capfd.readouterr()
    assert "onednn_verbose" not in out and "profiler_start" not in err  # the C-level logs are captured


def test_a_model_without_compute_ops_has_no_kernel_time():
    x = torch.randn(64, 64)
    kernel_ms, call_ms, _ = profile_ops(lambda: torch.relu(x) + 1, iters=5)
    assert kernel_ms == 0 < call_ms
    assert onednn_exec_ms(lambda: torch.relu(x), iters=2) == {}
    assert math.isnan(kernel_profile(lambda: torch.relu(x), iters=2).overhead_ratio(1.0))  # nothing to divide by


def test_int8_kernels_are_found_eager_and_behind_the_cpp_wrapper():
    model, x = _model_and_input()
    cfg = QuantizeConfig(method="static", calibration_batches=2)
    eager_int8 = qz.quantize_static(model, [x, x], cfg)
    from pipelines.compression.quantize import pt2e as qp

    compiled = compile_for(qp.quantize_static(model, [x, x], cfg, x[:2]), "compile-default", x)
    assert compiled.wrapper == "cpp" and compiled.error is None
    for fn in (lambda: eager_int8(x), lambda: compiled.fn(x)):
        with torch.inference_mode():
            fn()
        prof = kernel_profile(fn, iters=5)
        assert 0 < prof.kernel_ms < prof.profiled_call_ms, prof


def test_auto_engine_is_the_one_that_measures_faster():
    ctx = Context(fast_params(tracking={"enabled": False}, quantize={"calibration_batches": 1},
                              benchmark={"warmup": 2, "iters": 10, "batch_size": 16}))
    model = ctx.new_model("student").eval()
    choice = measure_engines(ctx, model)
    p50 = choice["p50_ms"]
    assert set(p50) == {"eager", "pt2e"} and min(p50.values()) > 0
    # pt2e only when its ratio's 95% interval excludes 1 (shown faster); a tie keeps eager
    assert (choice["engine"] == "pt2e") == (choice["ratio_ci_high"] < 1 and not choice["noisy"])
    assert f"pt2e {p50['pt2e']:.3f} ms vs eager {p50['eager']:.3f} ms" in choice["why"]
    assert choice["cpu_isa"]


_LIMITED_PROBE = """
import json, torch
from pipelines.compression.quantize import eager as qz
from pipelines.core.config import QuantizeConfig
from pipelines.core.cpu import isa_summary
from pipelines.measurement.kernels import onednn_execution, onednn_executions
from pipelines.models import CNN
torch.manual_seed(0)
model, x = CNN(1, 10, [32, 64]).eval(), torch.randn(16, 1, 8, 8)
int8 = qz.quantize_static(model, [x], QuantizeConfig(method="static", calibration_batches=1))
with torch.inference_mode():
    int8(x)
impls = sorted({onednn_execution(line)[1] for line in onednn_executions(lambda: int8(x))})
print(json.dumps({"isa": isa_summary(), "impls": impls}))
"""


def test_onednn_isa_limit_is_obeyed_and_recorded():
    """ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI (how to time a VNNI-only CPU on an AMX one): oneDNN's
    int8 convolutions run without AMX, and the cpu_isa every row and run records says so."""
    import json
    import subprocess
    import sys

    from conftest import ROOT, venv_env

    done = subprocess.run([sys.executable, "-c", _LIMITED_PROBE], cwd=ROOT, capture_output=True, text=True,
                          env={**venv_env(), "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, timeout=300, check=True)
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["isa"].endswith(" onednn<=avx512_core_vnni"), probe
    assert probe["impls"] and not any("amx" in impl for impl in probe["impls"]), probe
