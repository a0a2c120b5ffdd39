"""The one benchmarking routine: runtime lists, and benchmark_models on
tiny real models (compiled for real, cold, by Inductor: ~15-30 s on 2 idle cores)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pipelines.core.kinds import is_quantized
from pipelines.measurement import benchmark as bm
from pipelines.measurement import compile as cm
from pipelines.measurement import runtimes as rts
from pipelines.core.config import QuantizeConfig
from pipelines.models import CNN
from pipelines.compression.quantize.eager import quantize_static
from tests.conftest import ROOT, Broken, venv_env

# --- runtime lists (the CUDA autocast path, exercised without a GPU) -------------------------------


def test_runtime_list_adds_autocast_rows_only_with_cuda(monkeypatch):
    base = ["eager", "compile-default", "compile-max-autotune"]
    with_amp = rts.expand_runtimes(base, amp=["fp16", "bf16"])
    assert with_amp == base + ["compile-default-fp16", "compile-default-bf16",
                               "compile-max-autotune-fp16", "compile-max-autotune-bf16"]
    assert rts.expand_runtimes(base, amp=[]) == base
    assert rts.expand_runtimes(["eager"], amp=["fp16"]) == ["eager"]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rts.cuda_amp_dtypes() == []
    assert rts.expand_runtimes(base) == base  # CPU: the rows are simply absent
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert rts.cuda_amp_dtypes() == ["fp16", "bf16"]
    assert "compile-default-bf16" in rts.expand_runtimes(base)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert rts.cuda_amp_dtypes() == ["fp16"]


def test_parse_runtime():
    rt = rts.parse_runtime("compile-reduce-overhead-bf16")
    assert (rt.mode, rt.amp, rt.device) == ("reduce-overhead", torch.bfloat16, "cuda")
    assert rts.parse_runtime("compile-max-autotune").mode == "max-autotune"
    assert rts.parse_runtime("compile-default").device == "cpu"
    assert rts.parse_runtime("eager").mode is None
    with pytest.raises(ValueError, match="unknown runtime"):
        rts.parse_runtime("compile-turbo")


def test_autocast_rows_are_for_float_models_only(int8_model):
    wanted = rts.expand_runtimes(["eager", "compile-default"], amp=["fp16"])
    assert rts.runtimes_for(CNN(1, 10, [4], 1), wanted) == wanted
    assert rts.runtimes_for(int8_model, wanted) == ["eager", "compile-default"]
    assert is_quantized(int8_model) and not is_quantized(CNN(1, 10, [4], 1))


# --- benchmark_models on tiny real models ------------------------------------------------------


def _cnn(channels: list[int], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return CNN(1, 10, channels, 1).eval()


@pytest.fixture(scope="module")
def int8_model() -> nn.Module:
    cfg = QuantizeConfig(method="static", calibration_batches=2)
    return quantize_static(_cnn([4, 8], 1), [torch.randn(4, 1, 8, 8) for _ in range(2)], cfg)


@pytest.fixture(scope="module")
def rows(int8_model) -> list[dict]:
    torch.set_num_threads(2)
    models = {
        # same class and shapes, other weights: dynamo must not let one reuse the other's
        # frozen graph (checked through graphs >= 1 and max_abs_diff_vs_eager per row)
        "teacher": _cnn([4, 8], 0),
        "student": _cnn([4, 8], 1),
        "int8": int8_model,
        "broken": Broken().eval(),
    }
    examples = {1: torch.randn(1, 1, 8, 8), 3: torch.randn(3, 1, 8, 8)}
    return bm.benchmark_models(models, examples, ["eager", "compile-default"], warmup=1, iters=3,
                               reference="teacher")


def _row(rows, model, runtime, bs):
    found = [r for r in rows if (r["model"], r["runtime"], r["batch_size"]) == (model, runtime, bs)]
    assert len(found) == 1, (model, runtime, bs)
    return found[0]


def test_one_row_per_model_runtime_batch(rows):
    keys = [(r["model"], r["runtime"], r["batch_size"]) for r in rows]
    assert len(keys) == len(set(keys)) == 4 * 2 * 2
    assert {r["device"] for r in rows} == {"cpu"}  # no autocast rows without CUDA
    for bs in (1, 3):
        assert _row(rows, "teacher", "eager", bs)["speedup_vs_teacher"] == 1.0


def test_compiled_rows_are_real_compiles(rows):
    for name in ("teacher", "student"):
        for bs in (1, 3):
            row = _row(rows, name, "compile-default", bs)
            assert row["error"] == ""
            assert row["compile_time_s"] > 0 and row["wrapper"] == "python"  # float graphs: auto -> Python
            assert row["graph_breaks"] == 0 and row["graphs"] >= 1  # its own graph, not its twin's
            assert row["max_abs_diff_vs_eager"] < 1e-3
            assert row["latency_ms_p50"] > 0 and row["speedup_vs_teacher"] > 0


def test_eager_int8_row_says_dynamo_falls_back(rows):
    for bs in (1, 3):
        row = _row(rows, "int8", "compile-default", bs)
        assert row["error"] == "" and row["latency_ms_p50"] > 0
        assert row["graphs"] == 0 and row["graph_breaks"] >= 1  # counted, not explain()'s -1
        assert "falls back to eager" in row["note"]
        assert row["break_reasons"]


def test_a_model_that_fails_to_compile_is_a_row_not_a_crash(rows):
    for bs in (1, 3):
        row = _row(rows, "broken", "compile-default", bs)
        assert row["error"] and "latency_ms_p50" not in row and math.isnan(row["compile_time_s"])
        assert _row(rows, "broken", "eager", bs)["latency_ms_p50"] > 0


# --- the C++ wrapper for PT2E int8 graphs ---------------------------------------------------------


@pytest.fixture(scope="module")
def pt2e_model() -> nn.Module:
    from pipelines.compression.quantize import pt2e as qp

    torch.manual_seed(0)
    return qp.quantize_static(_cnn([8, 16], 2), [torch.randn(8, 1, 8, 8)], QuantizeConfig(calibration_batches=1),
                              torch.randn(2, 1, 8, 8))


def test_cpp_wrapper_policy_picks_pt2e_int8_graphs(pt2e_model, int8_model):
    cpu, eager = rts.parse_runtime("compile-default"), rts.parse_runtime("eager")
    fp32 = _cnn([4, 8], 0)
    assert cm.use_cpp_wrapper(pt2e_model, cpu, "auto")
    assert not cm.use_cpp_wrapper(fp32, cpu, "auto") and not cm.use_cpp_wrapper(int8_model, cpu, "auto")
    assert cm.use_cpp_wrapper(fp32, cpu, "always") and not cm.use_cpp_wrapper(pt2e_model, cpu, "never")
    assert not cm.use_cpp_wrapper(pt2e_model, eager, "always")  # nothing to wrap in eager
    assert not cm.use_cpp_wrapper(pt2e_model, rts.parse_runtime("compile-default-bf16"), "auto")
    assert cm.compile_for(pt2e_model, "eager", torch.randn(2, 1, 8, 8)).note == cm.PT2E_REFERENCE_NOTE
    assert cm.compile_for(fp32, "eager", torch.randn(2, 1, 8, 8)).note == ""
    with pytest.raises(ValueError, match="cpp_wrapper"):
        cm.use_cpp_wrapper(fp32, cpu, "sometimes")


def test_pt2e_graph_lowers_to_int8_kernels_with_either_wrapper(pt2e_model):
    """Both wrappers run the same int8 graph: with the Python one the profiler sees the oneDNN int8
    convolution and linear kernels (C++ wrapper calls bypass the profiler's op records)."""
    import torch._dynamo
    from torch.profiler import profile

    x = torch.randn(4, 1, 8, 8)
    with torch.inference_mode():
        reference = pt2e_model(x)
    outs = {}
    for policy in ("never", "auto"):
        torch._dynamo.reset()  # one GraphModule, two compiles: each must build its own code
        comp = cm.compile_for(pt2e_model, "compile-default", x, settings=cm.CompileSettings(policy))
        assert comp.error is None and comp.graphs >= 1
        assert comp.wrapper == ("python" if policy == "never" else "cpp")
        with torch.inference_mode(), profile() as prof:
            outs[policy] = comp.fn(x)
        ops = {e.key for e in prof.key_averages()}
        if policy == "never":
            assert {"onednn::qconv_pointwise", "onednn::qlinear_pointwise"} <= ops
    torch._dynamo.reset()
    for out in outs.values():
        assert (out - reference).abs().max() < 0.05 * (1 + reference.abs().max())
    assert torch.equal(outs["never"].argmax(1), outs["auto"].argmax(1))


_NCHW_PROBE = """
import json, sys, torch
from torch.profiler import profile
from pipelines.core.kinds import is_quantized
from pipelines.measurement import benchmark as bm
from pipelines.measurement import compile as cm
from pipelines.measurement import runtimes as rts
from pipelines.models import CNN
torch.manual_seed(0)
model, x = CNN(1, 10, [4, 8], 1).eval(), torch.randn(2, 1, 8, 8)
settings = cm.CompileSettings(inductor=(("cpp.weight_prepack", False), ("layout_optimization", False)))
cm.warm_compiler("cpu", settings)
comp = cm.compile_for(model, "compile-default", x, settings=settings)
with torch.inference_mode(), profile() as prof:
    out = comp.fn(x)
    diff = float((out - model(x)).abs().max())
print(json.dumps({"error": comp.error, "ops": sorted({e.key for e in prof.key_averages()}), "diff": diff}))
"""


def test_inductor_settings_reach_the_compiled_graph():
    """benchmark.inductor is applied: without weight prepacking and layout optimization Inductor
    calls aten's (NCHW) convolution instead of its prepacked channels-last mkldnn kernel. Run in a
    fresh process: Inductor reads cpp.weight_prepack at the process's first compile."""
    import json
    import subprocess
    import sys

    import torch._dynamo
    from torch.profiler import profile

    done = subprocess.run([sys.executable, "-c", _NCHW_PROBE], cwd=ROOT, env=venv_env(), capture_output=True,
                          text=True, timeout=300, check=True)
    nchw = json.loads(done.stdout.strip().splitlines()[-1])
    assert nchw["error"] is None and nchw["diff"] < 1e-3
    assert "aten::convolution" in nchw["ops"] and "mkldnn::_convolution_pointwise" not in nchw["ops"]

    torch._dynamo.reset()  # and here, with Inductor's defaults: the prepacked kernel
    model, x = _cnn([4, 8], 0), torch.randn(2, 1, 8, 8)
    comp = cm.compile_for(model, "compile-default", x)
    with torch.inference_mode(), profile() as prof:
        comp.fn(x)
    torch._dynamo.reset()
    assert "mkldnn::_convolution_pointwise" in {e.key for e in prof.key_averages()}


# --- runtimes per model, and the runtime a model is judged on -------------------------------------


def test_each_model_can_have_its_own_runtimes():
    """The search times the teacher on eager only (the speedup's reference) beside the trial's runtime."""
    torch.set_num_threads(2)
    models = {"teacher": _cnn([4, 8], 0), "trial": _cnn([4, 8], 1)}
    rows = bm.benchmark_models(models, {2: torch.randn(2, 1, 8, 8)},
                               {"teacher": ["eager"], "trial": ["compile-default"]}, warmup=1, iters=3,
                               reference="teacher")
    assert {(r["model"], r["runtime"]) for r in rows} == {("teacher", "eager"), ("trial", "compile-default")}
    trial = _row(rows, "trial", "compile-default", 2)
    assert trial["error"] == "" and trial["max_abs_diff_vs_eager"] < 1e-3 and trial["speedup_vs_teacher"] > 0


def test_judged_runtime_is_the_deploy_runtime_or_the_fastest():
    from pipelines.measurement.comparison import judged_runtime

    p50 = {"eager": 2.0, "compile-default": 1.0}
    assert judged_runtime(p50) == "compile-default"
    assert judged_runtime(p50, "eager") == "eager"
    assert judged_runtime(p50, "compile-max-autotune") is None  # not measured (or failed its check)
    assert judged_runtime({}) is None


def test_benchmark_summary_judges_on_the_deploy_runtime():
    from pipelines.measurement.comparison import summary_metrics

    rows = [{"model": "m", "runtime": rt, "batch_size": 4, "latency_ms_p50": ms, "latency_ms_p90": ms, "accuracy": 0.9,
             "compile_time_s": 1.0,
             "graphs": 1, "graph_breaks": 0} for rt, ms in (("eager", 2.0), ("compile-default", 1.0))]
    assert summary_metrics(rows, 4)["m"]["best_runtime"] == "compile-default"
    eager = summary_metrics(rows, 4, "eager")["m"]
    assert eager["best_runtime"] == "eager" and eager["best_latency_ms_p50"] == 2.0
    missing = summary_metrics(rows, 4, "compile-max-autotune")["m"]
    assert missing["best_runtime"] == "compile-default" and "deploy_runtime_error" in missing
