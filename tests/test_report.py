"""The report's one-line readings come from the measured numbers, including the unflattering ones."""

from __future__ import annotations

import pytest

from conftest import fast_params

from pipelines.measurement.comparison import summary_metrics
from pipelines.report import deploy_fields, deploy_section, readings


def _summary(pruned_best: float, quant_best: float) -> dict:
    base = {"accuracy": 0.98, "num_params": 1000, "size_mb": 1.0, "size_gzip_mb": 0.9, "sparsity": 0.0}
    return {
        "teacher": {**base, "num_params": 10_000, "latency_ms_p50": 20.0},
        "student": {**base, "latency_ms_p50": 8.0, "speedup_vs_teacher": 2.5},
        "pruned": {**base, "latency_ms_p50": 4.0, "best_latency_ms_p50": pruned_best, "best_runtime": "compile-default"},
        "quantized": {**base, "size_mb": 0.26, "latency_ms_p50": 0.8, "best_latency_ms_p50": quant_best,
                      "best_runtime": "eager"},
    }


def _quant_line(summary: dict, engine: str = "eager", extra_rows: tuple = ()) -> str:
    """The quantization reading over benchmark rows made from ``summary`` (each model's eager and
    best runtime) plus ``extra_rows`` (model, runtime, p50)."""
    params = fast_params(quantize={"method": "static", "engine": engine})
    bs = params.benchmark.batch_size
    timed = [(name, "eager", m["latency_ms_p50"]) for name, m in summary.items()]
    timed += [(name, m["best_runtime"], m["best_latency_ms_p50"]) for name, m in summary.items() if "best_runtime" in m]
    rows = [{"model": name, "runtime": rt, "batch_size": bs, "latency_ms_p50": ms}
            for name, rt, ms in [*timed, *extra_rows]]
    lines = readings(summary, {}, rows, params)
    return next(line for line in lines if line.startswith("**Quantization**"))


def test_int8_reading_compares_with_the_fastest_fp32_runtime():
    line = _quant_line(_summary(pruned_best=2.0, quant_best=0.8))
    assert "int8 on eager runs 5.00x faster than the same model in fp32 eager" in line
    assert "2.50x faster than its fastest fp32 runtime (compile-default)" in line
    assert "size 0.26x of fp32" in line


def test_int8_slower_than_compiled_fp32_is_said_plainly():
    line = _quant_line(_summary(pruned_best=0.5, quant_best=0.8))
    assert "0.62x SLOWER than its fastest fp32 runtime" in line
    assert "too small for int8" in line


def test_runtimes_that_quantize_the_fp32_model_themselves_are_left_to_the_deploy_section():
    """ort-int8/ov-int8 rows of both models time one artifact built from the fp32 model: neither
    is our int8 nor an fp32 runtime (a real run read "1.28x faster than ... ov-int8": the same
    file timed twice)."""
    line = _quant_line(_summary(pruned_best=2.0, quant_best=0.8),
                       extra_rows=(("pruned", "ov-int8", 0.5), ("quantized", "ov-int8", 0.45),
                                   ("quantized", "ort-int8", 0.4)))
    assert "int8 on eager runs 5.00x" in line and "2.50x faster than its fastest fp32 runtime (compile-default)" in line
    assert "ov-int8" not in line and "ort-int8" not in line


def test_pt2e_int8_is_judged_compiled_not_as_its_reference_graph():
    summary = _summary(pruned_best=2.0, quant_best=1.0)
    summary["quantized"].update(latency_ms_p50=7.0, best_runtime="compile-default")
    line = _quant_line(summary, "pt2e")
    assert "int8 on compile-default runs 4.00x faster than the same model in fp32 eager" in line
    assert "2.00x faster than its fastest fp32 runtime" in line
    assert "reference form" in line and "7.000 ms" in line


def test_compile_reading_names_the_wrapper_and_flags_slower_runs():
    def row(model, runtime, ms, **extra):
        return {"model": model, "runtime": runtime, "batch_size": 64, "latency_ms_p50": ms, "graphs": 1,
                "graph_breaks": 0, "compile_time_s": 9.0, **extra}

    rows = [row("pruned", "eager", 4.0), row("pruned", "compile-default", 8.0, wrapper="python"),
            row("quantized", "eager", 2.0), row("quantized", "compile-default", 0.8, wrapper="cpp")]
    line = next(r for r in readings({}, {}, rows, fast_params()) if r.startswith("**torch.compile**"))
    assert "pruned 0.50x (slower: keep eager)" in line
    assert "README, 'When torch.compile is slower than eager'" in line and "Inductor settings" not in line
    tuned = fast_params(benchmark={"inductor": {"layout_optimization": False}})
    line = next(r for r in readings({}, {}, rows, tuned) if r.startswith("**torch.compile**"))
    assert "Inductor settings: layout_optimization=False." in line
    assert "quantized 2.50x (compile-default, 0 graph breaks, compiled in 9.0 s, C++ wrapper)" in line


def test_search_section_shows_val_and_test_accuracy_pruned_trials_and_the_starting_point():
    from pipelines.report import search_section

    def record(number, val, test, ms):
        return {"number": number, "overrides": {"prune.amount": 0.1 * number},
                "metrics": {"val_accuracy": val, "accuracy": test, "latency_ms_p50": ms, "speedup_vs_teacher": 9.0,
                            "size_mb": 0.4}}

    front = {"study": "s", "pruner": "hyperband", "best_trial": 3, "selection_rule": "rule",
             "counts": {"trials": 6, "pruned": 2, "failed": 0, "feasible": 3, "front": 1},
             "constraints": {"max_accuracy_drop_pp": 1.0},
             "trials": [record(3, 0.99, 0.98, 0.5)], "current_trial": record(0, 0.985, 0.99, 0.6)}
    front["trials"][0]["metrics"].update(val_accuracy_ci_low=0.97, val_accuracy_ci_high=0.997)
    front["accuracy_resolution"] = {"images": 270, "one_image_pp": 0.37, "undetectable_pp": 1.39,
                                    "detectable_images": 5, "detectable_pp": 1.85}
    text = "\n".join(search_section(front))
    assert "2 pruned (pruner hyperband)" in text and "judged on validation accuracy" in text
    assert "| 3 | 0.9900 [0.9700, 0.9970] | n/a | 0.9800 | 0.500 |" in text
    assert "| 0 (current) | 0.9850 | n/a | 0.9900 | 0.600 |" in text  # off the front, still shown
    assert "270 validation images, one image is 0.37 pp" in text and "from 5 images" in text


def test_two_models_that_disagree_on_2_of_360_images_are_reported_as_tied():
    from pipelines.report import headline, markdown

    n = 360
    teacher = (True,) * n
    final = (False, False) + (True,) * (n - 2)  # the teacher gets 2 images right that the final model misses
    outcomes = {"teacher": teacher, "student": teacher, "pruned": teacher, "quantized": final}
    summary = _summary(2.0, 0.5)
    summary["teacher"].update(size_ratio_vs_teacher=1.0, accuracy_drop_vs_teacher=0.0)
    summary["quantized"].update(size_ratio_vs_teacher=0.26, accuracy_drop_vs_teacher=0.56, speedup_vs_teacher=25.0,
                                best_speedup_vs_teacher=40.0, best_speedup_vs_teacher_ci_low=35.0,
                                best_speedup_vs_teacher_ci_high=44.0, best_latency_ms_p50_ci_low=0.45,
                                best_latency_ms_p50_ci_high=0.55)
    params = fast_params(quantize={"method": "static", "engine": "eager"})
    rows = [{"model": name, "runtime": "eager", "batch_size": params.benchmark.batch_size,
             "latency_ms_p50": m["latency_ms_p50"]} for name, m in summary.items()]
    text = markdown(summary, {}, rows, params, None, outcomes)
    line = next(ln for ln in text.splitlines() if ln.startswith("**Final vs teacher"))
    assert "not distinguishable (2 of 360 images differ" in line and "McNemar p=0.5" in line
    assert "no measurable loss" in line and "a loss of up to 2.0" in line  # what the split could have missed
    head = headline(summary, rows, None, outcomes)
    assert head["acc"] == pytest.approx(358 / 360) and head["acc_n"] == 360
    assert head["acc_ci_low"] < head["acc"] < head["acc_ci_high"]
    assert head["drop_pp_ci_low"] < 0 < head["drop_pp_ci_high"] and head["drop_discordant"] == 2
    assert (head["speedup_ci_low"], head["speedup_ci_high"]) == (35.0, 44.0)
    assert "`acc` 0.9944 [" in text and "`speedup` 40 [35, 44]" in text
    quant = next(ln for ln in text.splitlines() if ln.startswith("- **Quantization**"))
    assert "int8 vs fp32: not distinguishable (2 of 360 images differ" in quant


def test_a_loss_the_data_shows_is_never_called_no_loss():
    from pipelines.core.stats import PairedAccuracy
    from pipelines.reporting.intervals import versus

    n = 360
    final = (False,) * 12 + (True,) * (n - 12)
    text = versus(PairedAccuracy.of(final, (True,) * n), "final", "teacher")
    assert "a measurable loss, -3.33 pp" in text and "no measurable loss" not in text


def _bench_row(runtime: str, bs: int, ms: float, accuracy: float, artifact: str = "") -> dict:
    return {"model": "quantized", "runtime": runtime, "batch_size": bs, "latency_ms_p50": ms,
            "latency_ms_p90": 1.2 * ms, "accuracy": accuracy, "artifact": artifact, "artifact_mb": 0.4,
            "speedup_vs_teacher": 10.0, "compile_time_s": 1.0, "skipped": "", "error": "", "note": ""}


def test_deploy_choice_is_the_fastest_runtime_that_keeps_the_accuracy():
    rows = [_bench_row("eager", 1, 0.40, 0.99, "models/quantized.pt"),
            _bench_row("ort-int8", 1, 0.05, 0.99, "models/deploy/pruned.int8.onnx"),
            _bench_row("ov-int8", 1, 0.03, 0.90, "models/deploy/pruned.int8.xml"),  # fast, but wrong answers
            _bench_row("eager", 64, 0.50, 0.99, "models/quantized.pt"),
            _bench_row("ov-int8", 64, 0.45, 0.985, "models/deploy/pruned.int8.xml")]  # within one sample
    summary = summary_metrics(rows, 64, accuracy_slack=0.01)
    m = summary["quantized"]
    assert (m["best_runtime_bs1"], m["best_runtime"]) == ("ort-int8", "ov-int8")
    assert m["best_speedup_vs_eager_bs1"] == pytest.approx(8.0)
    text = "\n".join(deploy_section(summary, rows, 64))
    assert "- batch 1: **ort-int8**" in text and "ship `models/deploy/pruned.int8.onnx`" in text
    assert "- batch 64: **ov-int8**" in text and "8.00x PyTorch eager" in text
    assert deploy_fields(summary)["deploy_runtime_bs1"] == "ort-int8"


def test_the_search_section_sets_the_pipelines_trial_beside_compile_benchmark():
    from pipelines.reporting.search import search_section

    params = fast_params(prune={"amount": 0.5})
    trial = {"number": 0, "overrides": {"prune.amount": 0.5},
             "metrics": {"val_accuracy": 0.98, "speedup_vs_teacher": 30.0, "speedup_vs_teacher_ci_low": 28.0,
                         "speedup_vs_teacher_ci_high": 33.0}}
    front = {"study": "s", "best_trial": 0, "counts": {}, "constraints": {"max_accuracy_drop_pp": 1.0},
             "trials": [trial], "current_trial": trial}
    agree = "\n".join(search_section(front, {"speedup": 37.0, "speedup_ci_low": 35.0, "speedup_ci_high": 39.0},
                                     params))
    assert "Trial 0 measured this pipeline's configuration at speedup 30.00x [28.00, 33.00]" in agree
    assert "37.00x [35.00, 39.00]: they agree (within 1.3x)" in agree
    apart = "\n".join(search_section(front, {"speedup": 60.0}, params))
    assert "they DISAGREE by 2.00x" in apart
    busy = "\n".join(search_section(front, {"speedup": 60.0, "noisy": True}, params))
    assert "not compared: `compile_benchmark`'s timing was disturbed (noisy)" in busy and "DISAGREE" not in busy
    other = "\n".join(search_section(front, {"speedup": 37.0}, fast_params(prune={"amount": 0.3})))
    assert "measured this pipeline's configuration" not in other  # another configuration ran
