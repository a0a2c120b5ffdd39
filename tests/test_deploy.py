"""Deploy targets on tiny real models: a real ONNX export, real ONNX Runtime and OpenVINO
sessions, real int8 from onnxruntime.quantization and NNCF, a real AOTInductor package, all
through the one benchmarking routine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from pipelines.compression.quantize.eager import quantize_static
from pipelines.core.config import QuantizeConfig
from pipelines.core.params_base import usable_threads
from pipelines.measurement import benchmark as bm
from pipelines.measurement.accuracy import runtime_accuracy
from pipelines.measurement.deploy import Deployer, DeploySettings, aoti, bf16_missing, export_chain, ort, ov, torchscript
from pipelines.measurement.deploy.export import ExportMismatch, export_onnx
from pipelines.measurement.timing import NoiseLimits
from pipelines.models import CNN

THREADS = usable_threads(2)  # 1 on a pinned xdist worker (conftest._pin_worker)


def _cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return CNN(1, 10, [8, 16], 1).eval()


@pytest.fixture(scope="module")
def calibration() -> list[torch.Tensor]:
    torch.manual_seed(7)
    return [torch.randn(8, 1, 8, 8) for _ in range(2)]


@pytest.fixture(scope="module")
def test_split() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(8)
    return torch.randn(21, 1, 8, 8), torch.randint(0, 10, (21,))


@pytest.fixture(scope="module")
def models(calibration) -> dict[str, nn.Module]:
    fp32 = _cnn(0)
    int8 = quantize_static(fp32, calibration, QuantizeConfig(method="static", calibration_batches=2))
    return {"fp32": fp32, "int8": int8}


@pytest.fixture(scope="module")
def deployer(tmp_path_factory, calibration) -> Deployer:
    return Deployer(DeploySettings(THREADS, calibration, tmp_path_factory.mktemp("deploy")))


RUNTIMES = ["eager", "eager-cpu-bf16", "ort-fp32", "ort-int8", "ov-fp32", "ov-bf16", "ov-int8", "aoti", "ts-int8"]


@pytest.fixture(scope="module")
def rows(models, deployer, test_split) -> list[dict]:
    torch.set_num_threads(THREADS)
    examples = {1: torch.randn(1, 1, 8, 8), 4: torch.randn(4, 1, 8, 8)}
    deploy = bm.DeployInputs(deployer, {"int8": "fp32"}, test_split)
    return bm.benchmark_models(models, examples, RUNTIMES, warmup=1, iters=3, reference="fp32", deploy=deploy,
                               noise=NoiseLimits(retries=0))


def _row(rows, model, runtime, bs=4):
    found = [r for r in rows if (r["model"], r["runtime"], r["batch_size"]) == (model, runtime, bs)]
    assert len(found) == 1, (model, runtime, bs)
    return found[0]


# --- export ---------------------------------------------------------------------------------------


def test_onnx_export_has_a_dynamic_batch_and_matches_pytorch(models, deployer):
    model = models["fp32"]
    path, _, diff = deployer.onnx("fp32", model, torch.randn(4, 1, 8, 8))
    batch = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")  # symbolic, not fixed to the example's 4
    session = ort.Session(path, THREADS)
    for n in (1, 7):
        x = torch.randn(n, 1, 8, 8)
        with torch.inference_mode():
            expected = model(x)
        assert (session(x) - expected).abs().max() <= 1e-4 * (1 + expected.abs().max())
    assert diff <= 1e-4


class Drifting(nn.Module):
    """Python state the exporter bakes in as a constant: the exported graph answers as the model
    did at export time, not as it does now."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Drifting.calls += 1
        return x.flatten(1) * float(Drifting.calls)


def test_an_export_that_computes_something_else_is_refused(tmp_path):
    with pytest.raises(ExportMismatch, match="differs from PyTorch"):
        export_onnx(Drifting().eval(), torch.randn(2, 1, 8, 8), tmp_path / "drift.onnx")


def test_every_chain_model_is_exported_an_int8_one_from_its_source(models, deployer):
    exports = export_chain(deployer, models, {"int8": "fp32"}, torch.randn(4, 1, 8, 8))
    assert exports["fp32"]["file"].endswith("fp32.onnx") and exports["fp32"]["max_abs_diff"] <= 1e-4
    assert exports["int8"]["file"].endswith("fp32.int8.onnx") and exports["int8"]["from"] == "fp32"
    assert all(Path(e["file"]).stat().st_size > 0 for e in exports.values())


# --- each runtime in its serving configuration ------------------------------------------------------


def test_onnx_runtime_sessions_use_the_thread_count_and_spin_only_when_serving(models, deployer):
    path, _, _ = deployer.onnx("fp32", models["fp32"], torch.randn(4, 1, 8, 8))
    for spinning, entry in ((False, "0"), (True, "1")):
        session = ort.Session(path, THREADS, spinning=spinning)
        assert session.options.intra_op_num_threads == THREADS and session.options.inter_op_num_threads == 1
        for key in ort.NO_SPIN:
            assert session.options.get_session_config_entry(key) == entry
        assert f"spinning {'on' if spinning else 'off'}" in session.serving(1)


def test_openvino_uses_the_thread_count_without_pinning_and_a_hint_per_batch_size(models, deployer):
    path, _, _ = deployer.onnx("fp32", models["fp32"], torch.randn(4, 1, 8, 8))
    compiled = ov.Compiled(ov.read_onnx(path), "f32", THREADS)
    for hint in ov.HINTS:
        assert compiled.property("INFERENCE_NUM_THREADS", hint) == THREADS
        assert compiled.property("ENABLE_CPU_PINNING", hint) is False
        assert str(compiled.property("INFERENCE_PRECISION_HINT", hint)) == "<Type: 'float32'>"
        assert str(compiled.property("PERFORMANCE_HINT", hint)) == hint
        assert compiled.property("NUM_STREAMS", hint) == 1
    assert "PERFORMANCE_HINT=LATENCY" in compiled.serving(1) and "PERFORMANCE_HINT=THROUGHPUT" in compiled.serving(4)
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(compiled(x[:1]), compiled(x)[:1], rtol=1e-4, atol=1e-5)  # both hints, same model


def test_every_row_states_its_serving_configuration(rows):
    for row in rows:
        if row["error"] or row["skipped"]:
            continue
        runtime, note = row["runtime"], row["note"]
        if runtime.startswith("ort-"):
            assert f"ONNX Runtime: {THREADS} intra-op threads" in note and "spinning on" in note
        elif runtime.startswith("ov-"):
            hint = "LATENCY" if row["batch_size"] == 1 else "THROUGHPUT"
            assert f"OpenVINO: {THREADS} threads, PERFORMANCE_HINT={hint}" in note
        else:
            assert f"PyTorch: {THREADS} intra-op threads" in note


def test_foreign_runtimes_leave_pytorchs_thread_count_alone(rows):
    assert torch.get_num_threads() == THREADS  # after every session above was built and timed


# --- rows ------------------------------------------------------------------------------------------


def test_fp32_deploy_rows_compute_what_pytorch_computes(rows):
    for runtime in ("ort-fp32", "ov-fp32", "aoti"):
        for bs in (1, 4):
            row = _row(rows, "fp32", runtime, bs)
            assert row["error"] == "" and row["latency_ms_p50"] > 0, row
            assert row["max_abs_diff_vs_eager"] <= 1e-3
            assert row["accuracy"] == _row(rows, "fp32", "eager", bs)["accuracy"]


def test_each_row_accuracy_is_measured_in_its_own_runtime(rows, test_split):
    """Re-open each int8 artifact with the runtime's own API and count: the row says the same."""
    images, labels = test_split
    ort_row, ov_row = _row(rows, "int8", "ort-int8"), _row(rows, "int8", "ov-int8")
    session = onnxruntime.InferenceSession(ort_row["artifact"], providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    ort_pred = session.run(None, {name: images.numpy()})[0].argmax(1)
    assert ort_row["accuracy"] == pytest.approx(float(np.mean(ort_pred == labels.numpy())))
    compiled = ov.core().compile_model(ov.read_ir(ov_row["artifact"]), "CPU")
    ov_pred = compiled(images.numpy())[0].argmax(1)
    assert ov_row["accuracy"] == pytest.approx(float(np.mean(ov_pred == labels.numpy())))
    ts_row = _row(rows, "int8", "ts-int8")
    with torch.inference_mode():
        ts_pred = torchscript.load(ts_row["artifact"])(images).argmax(1)
    assert ts_row["accuracy"] == pytest.approx(float((ts_pred == labels).float().mean()))


def test_int8_rows_of_an_int8_model_start_from_its_fp32_source(rows):
    for runtime in ("ort-int8", "ov-int8", "ts-int8"):
        mine, source = _row(rows, "int8", runtime), _row(rows, "fp32", runtime)
        assert mine["artifact"] == source["artifact"] and "PTQ of fp32" in mine["note"]
        assert mine["artifact_mb"] == pytest.approx(Path(mine["artifact"]).stat().st_size / 1e6, rel=0.5)
        assert mine["latency_ms_p50"] > 0 and mine["error"] == ""
    present = {r["runtime"] for r in rows if r["model"] == "int8"}
    assert present == {"eager", "ort-int8", "ov-int8", "aoti", "ts-int8"}  # no fp32/bf16 rows for an int8 model


def test_ort_int8_is_static_qdq_with_per_channel_weights(rows):
    graph = onnx.load(_row(rows, "fp32", "ort-int8")["artifact"]).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    scales = {init.name: init for init in graph.initializer}
    weight_dq = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in scales
                 and len(scales[n.input[0]].dims) == 4]  # dequantize of a conv weight
    assert weight_dq and all(list(scales[n.input[1]].dims) == [scales[n.input[0]].dims[0]] for n in weight_dq)


def test_ov_int8_is_quantized_by_nncf(rows):
    xml = Path(_row(rows, "fp32", "ov-int8")["artifact"]).read_text()
    assert "FakeQuantize" in xml and "nncf" in xml.lower()


def test_ts_int8_is_a_frozen_torchscript_archive_of_fbgemm_int8_kernels_that_loads_anywhere(rows, models, tmp_path):
    """The archive holds int8 ops with weights packed ahead of time (no float conv left), computes
    what torch.ao's own int8 model of the same weights computes, and a fresh process that loads it
    with another quantized engine selected still gets fbgemm's weights and the same logits."""
    import subprocess
    import sys

    row = _row(rows, "fp32", "ts-int8")
    assert row["error"] == "" and row["latency_ms_p50"] > 0 and "TorchScript" in row["note"]
    archive = torchscript.load(row["artifact"])
    code = archive.code
    assert "quantized.conv2d_relu" in code and "quantized.linear" in code and "_convolution" not in code
    x = torch.randn(5, 1, 8, 8)
    with torch.inference_mode():
        here = archive(x)
        with torchscript.quantized_engine("fbgemm"):
            reference = quantize_static(models["fp32"], deployer_calibration(), QuantizeConfig(calibration_batches=2),
                                        engine="fbgemm")(x)
    assert (here - reference).abs().max() <= 1e-5 * (1 + reference.abs().max())
    torch.save(x, tmp_path / "x.pt")
    script = ("import sys, torch; torch.backends.quantized.engine = 'x86'; "
              "from pipelines.measurement.deploy import torchscript; "
              f"m = torchscript.load({row['artifact']!r}); x = torch.load({str(tmp_path / 'x.pt')!r}); "
              f"torch.save(m(x), {str(tmp_path / 'y.pt')!r}); "
              "assert torch.backends.quantized.engine == 'x86'")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).resolve().parents[1])
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), here)


def deployer_calibration() -> list[torch.Tensor]:
    torch.manual_seed(7)  # the calibration fixture's batches
    return [torch.randn(8, 1, 8, 8) for _ in range(2)]


def test_ts_int8_needs_an_eager_quantizable_model_and_says_so(deployer):
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    built = deployer.build("ts-int8", "plain", plain, torch.randn(4, 1, 8, 8))
    assert built.fn is None and "QuantStub" in built.skipped and built.error == ""


def test_eager_int8_has_no_aoti_row_and_says_why(rows):
    row = _row(rows, "int8", "aoti")
    assert "cannot be exported" in row["skipped"] and "latency_ms_p50" not in row and row["error"] == ""


def test_a_pt2e_int8_graph_as_aoti_package_is_static_per_batch_size_and_computes_what_the_graph_does(
        models, calibration, deployer):
    """One static package per served batch size, compiled under no_grad so Inductor's int8 fusion
    runs (the dynamic-batch int8 package computed wrong logits, see deploy/aoti.py): it must agree
    with the PT2E graph at its own batch size and, padded or split, at others; the row says so."""
    from pipelines.compression.quantize import pt2e

    cfg = QuantizeConfig(method="static", calibration_batches=2)
    graph = pt2e.quantize_static(models["fp32"], calibration, cfg, calibration[0][:2])
    built = deployer.build("aoti", "pt2e-int8", graph, calibration[0][:4], int8_model=True)
    assert built.error == "" and built.fn is not None and "static shape" in built.note
    assert built.artifact.endswith("pt2e-int8.bs4.pt2")
    assert isinstance(built.fn.fn, aoti.Direct)  # the C++ runner called with the flat input, no pytree per call
    for n in (4, 1, 7):
        x = torch.randn(n, 1, 8, 8)
        with torch.inference_mode():
            expected, got = graph(x), built.fn(x)
        assert got.shape == expected.shape
        assert (got - expected).abs().max() <= 5e-2 * (1 + expected.abs().max())  # int8 rounding, same function


def test_bf16_rows_run_where_the_cpu_has_bf16_and_are_skipped_with_the_reason_elsewhere(rows):
    for runtime in ("eager-cpu-bf16", "ov-bf16"):
        row = _row(rows, "fp32", runtime)
        if bf16_missing():
            assert row["skipped"] and "latency_ms_p50" not in row
        else:
            assert row["skipped"] == "" and row["latency_ms_p50"] > 0 and row["accuracy"] >= 0
            assert row["max_abs_diff_vs_eager"] < 5e-2 * (1 + 10)  # bf16 rounding, same function


def test_runtime_accuracy_pads_the_last_batch_for_static_shapes():
    seen: list[int] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10).float()

    labels = torch.tensor([0, 0, 1, 0, 2])
    assert runtime_accuracy(fn, torch.randn(5, 1, 8, 8), labels, 4) == pytest.approx(3 / 5)
    assert seen == [4, 4]


def test_int8_rows_quantize_the_range_fixed_source_when_the_quantize_stage_fixed_it(models, calibration, test_split,
                                                                                   tmp_path):
    """With ``fixed_sources`` (the quantize stage's range fixes applied again), the deploy targets'
    own PTQ starts from that model: the int8 artifact computes what the fixed model computes, and the
    row says which fixes."""
    from pipelines.compression.quantize.equalize import equalized

    fixed, found = equalized(models["fp32"])
    assert found and any(not torch.equal(a, b) for a, b in zip(fixed.state_dict().values(),
                                                             models["fp32"].state_dict().values()))
    deployer = Deployer(DeploySettings(THREADS, calibration, tmp_path))
    deploy = bm.DeployInputs(deployer, {"int8": "fp32"}, test_split,
                             {"fp32": (fixed, "with the quantize stage's range fixes (cross-layer equalization)")})
    rows = bm.benchmark_models({"int8": models["int8"]}, {4: torch.randn(4, 1, 8, 8)}, ["ts-int8"], warmup=1, iters=3,
                               deploy=deploy, noise=NoiseLimits(retries=0))
    row = _row(rows, "int8", "ts-int8")
    assert row["error"] == "" and "fp32 with the quantize stage's range fixes (cross-layer equalization)" in row["note"]
    expected = torchscript.script(fixed, calibration, torch.randn(4, 1, 8, 8))  # the fixed model, quantized alike
    x = test_split[0]
    with torch.inference_mode():
        torch.testing.assert_close(torchscript.load(row["artifact"])(x), expected(x))
