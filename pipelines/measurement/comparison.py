"""Put the chain's models side by side: accuracy and size per model, latency per runtime and
batch size (one interleaved measurement), and every ratio against the teacher."""

from __future__ import annotations

from typing import Any

from torch import nn

from pipelines.core.config import BenchmarkConfig
from pipelines.core.cpu import isa_summary
from pipelines.measurement.benchmark import benchmark_models
from pipelines.measurement.compile import CompileSettings
from pipelines.measurement.size import size_metrics
from pipelines.measurement.timing import NoiseLimits, set_threads

CHAIN = ["teacher", "student", "pruned", "quantized"]


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


def summary_metrics(rows: list[dict[str, Any]], batch_size: int) -> dict[str, dict[str, Any]]:
    """Per model: its eager row at ``batch_size`` plus the fastest runtime found for it."""
    out: dict[str, dict[str, Any]] = {}
    at_bs = [r for r in rows if r["batch_size"] == batch_size and "latency_ms_p50" in r]
    for name in dict.fromkeys(r["model"] for r in at_bs):
        mine = [r for r in at_bs if r["model"] == name]
        eager = next(r for r in mine if r["runtime"] == "eager")
        best = min(mine, key=lambda r: r["latency_ms_p50"])
        keep = ("accuracy", "latency_ms_p50", "latency_ms_p90", "throughput_sps", "size_mb", "size_gzip_mb",
                "num_params", "nonzero_params", "sparsity", "speedup_vs_teacher", "size_ratio_vs_teacher",
                "accuracy_drop_vs_teacher")
        entry = {k: eager[k] for k in keep if k in eager}
        entry["best_runtime"] = best["runtime"]
        entry["best_latency_ms_p50"] = best["latency_ms_p50"]
        entry["best_speedup_vs_teacher"] = best.get("speedup_vs_teacher")
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
