"""Put the chain's models side by side: accuracy and size per model, latency per runtime and
batch size (one interleaved measurement), and every ratio against the teacher."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from pipelines.core.config import FASTEST, BenchmarkConfig
from pipelines.core.cpu import isa_summary
from pipelines.measurement.benchmark import benchmark_models
from pipelines.measurement.compile import CompileSettings
from pipelines.measurement.size import size_metrics
from pipelines.measurement.timing import NoiseLimits, set_threads

CHAIN = ["teacher", "student", "pruned", "quantized"]
# What each model's measurement adds to its MLflow logged model (names as in compile_benchmark.json),
# and the few of them the compile_benchmark run keeps as flat ``<model>.<name>`` metrics; the
# full table is the run's ``benchmark_table.json`` artifact.
MODEL_METRICS = ("latency_ms_p50", "latency_ms_p90", "throughput_sps", "speedup_vs_teacher", "best_latency_ms_p50",
                 "best_speedup_vs_teacher", "size_ratio_vs_teacher", "noisy")
RUN_METRICS = ("latency_ms_p50", "throughput_sps", "speedup_vs_teacher", "best_latency_ms_p50",
               "best_speedup_vs_teacher", "size_ratio_vs_teacher", "noisy")


def compare(models: dict[str, nn.Module], accuracy: dict[str, float], examples: dict[int, Any],
            cfg: BenchmarkConfig) -> list[dict[str, Any]]:
    set_threads(cfg.num_threads)
    sizes = {name: size_metrics(model) for name, model in models.items()}
    rows = benchmark_models(models, examples, list(cfg.runtimes), cfg.warmup, cfg.iters, reference="teacher",
                            settings=CompileSettings.of(cfg), noise=NoiseLimits.of(cfg))
    teacher_size, teacher_acc = sizes["teacher"]["size_mb"], accuracy["teacher"]
    isa = isa_summary()
    for row in rows:
        name = row["model"]
        row["cpu_isa"] = isa
        row.update(accuracy=accuracy[name], **sizes[name])
        row["size_ratio_vs_teacher"] = sizes[name]["size_mb"] / teacher_size
        row["accuracy_drop_vs_teacher"] = 100 * (teacher_acc - accuracy[name])
    return rows


def judged_runtime(p50_ms: Mapping[str, float], deploy: str = FASTEST) -> str | None:
    """The runtime a model is judged on, from its measured ``{runtime: p50 ms}``: ``deploy``
    (``benchmark.deploy_runtime``) if it was measured, the fastest one for ``fastest``; None
    when there is nothing to judge (no runtime measured, or ``deploy`` failed to run). The one
    rule the benchmark summary, the report and the search use."""
    if deploy != FASTEST:
        return deploy if deploy in p50_ms else None
    return min(p50_ms, key=lambda rt: p50_ms[rt]) if p50_ms else None


def summary_metrics(rows: list[dict[str, Any]], batch_size: int, deploy: str = FASTEST) -> dict[str, dict[str, Any]]:
    """Per model: its eager row at ``batch_size`` plus the runtime it is judged on
    (:func:`judged_runtime`; ``best_*``)."""
    out: dict[str, dict[str, Any]] = {}
    at_bs = [r for r in rows if r["batch_size"] == batch_size and "latency_ms_p50" in r]
    for name in dict.fromkeys(r["model"] for r in at_bs):
        by_runtime = {r["runtime"]: r for r in at_bs if r["model"] == name}
        p50 = {rt: r["latency_ms_p50"] for rt, r in by_runtime.items()}
        judged = judged_runtime(p50, deploy)
        best = by_runtime[judged or judged_runtime(p50)]
        eager, mine = by_runtime["eager"], list(by_runtime.values())
        keep = ("accuracy", "latency_ms_p50", "latency_ms_p90", "throughput_sps", "size_mb", "size_gzip_mb",
                "num_params", "nonzero_params", "sparsity", "speedup_vs_teacher", "size_ratio_vs_teacher",
                "accuracy_drop_vs_teacher")
        entry = {k: eager[k] for k in keep if k in eager}
        entry["best_runtime"] = best["runtime"]
        entry["best_latency_ms_p50"] = best["latency_ms_p50"]
        entry["best_speedup_vs_teacher"] = best.get("speedup_vs_teacher")
        if judged is None:
            entry["deploy_runtime_error"] = f"{deploy} did not run; judged on the fastest measured runtime instead"
        entry["noisy"] = any(r.get("noisy") for r in rows if r["model"] == name and "latency_ms_p50" in r)
        compiled = [r for r in mine if r["runtime"] != "eager"]
        if compiled:
            entry["compile_time_s"] = max(r["compile_time_s"] for r in compiled)
            breaks = [r["graph_breaks"] for r in compiled if isinstance(r["graph_breaks"], int)]
            if breaks:
                entry["graph_breaks"] = max(breaks)
            entry["compiled_graphs"] = min(r["graphs"] for r in compiled)  # 0: dynamo ran it eager
        out[name] = entry
    return out


def pick(summary: dict[str, dict[str, Any]], keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``summary`` with only ``keys`` per model."""
    return {name: {k: m[k] for k in keys if k in m} for name, m in summary.items()}
