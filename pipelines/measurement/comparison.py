"""Put the chain's models side by side: accuracy and size per model, latency per runtime and
batch size (one measurement in rotating blocks), and every ratio against the teacher."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from pipelines.core.config import FASTEST, BenchmarkConfig
from pipelines.core.cpu import isa_summary
from pipelines.core.stats import LatencyRatio
from pipelines.measurement.accuracy import with_intervals
from pipelines.measurement.benchmark import DeployInputs, benchmark_models
from pipelines.measurement.compile import CompileSettings
from pipelines.measurement.runtimes import parse_runtime
from pipelines.measurement.size import size_metrics
from pipelines.measurement.timing import NoiseLimits, set_threads

CHAIN = ["teacher", "student", "pruned", "quantized"]
# What each model's measurement adds to its MLflow logged model (names as in compile_benchmark.json),
# and the few of them the compile_benchmark run keeps as flat ``<model>.<name>`` metrics; the
# full table is the run's ``benchmark_table.json`` artifact.
MODEL_METRICS = ("latency_ms_p50", "latency_ms_p90", "throughput_sps", "speedup_vs_teacher", "best_latency_ms_p50",
                 "best_speedup_vs_teacher", "size_ratio_vs_teacher", "noisy")
RUN_METRICS = ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "latency_ms_p50", "throughput_sps",
               "speedup_vs_teacher", "best_latency_ms_p50", "best_latency_ms_p50_ci_low", "best_latency_ms_p50_ci_high",
               "best_speedup_vs_teacher", "best_speedup_vs_teacher_ci_low", "best_speedup_vs_teacher_ci_high",
               "size_ratio_vs_teacher", "noisy")


def shipped(models: Mapping[str, Any]) -> str:
    """The model the chain ships: the last of :data:`CHAIN` present (the int8 model)."""
    return next((name for name in reversed(CHAIN) if name in models), list(models)[-1])


def runtimes_per_model(models: Mapping[str, Any], runtimes: Sequence[str]) -> dict[str, list[str]]:
    """Every model on the PyTorch runtimes; the deploy targets (ONNX Runtime, OpenVINO, AOTInductor
    packages) only for the model that ships (:func:`shipped`): they are how *it* is served, and an
    int8 conversion of the fp32 teacher is another model, not the teacher (it made the report
    credit the teacher with OpenVINO int8's speed), at seconds of conversion per model."""
    final = shipped(models)
    return {name: [r for r in runtimes if name == final or not parse_runtime(r).deploy] for name in models}


def compare(models: dict[str, nn.Module], accuracy: dict[str, float], examples: dict[int, Any],
            cfg: BenchmarkConfig, deploy: DeployInputs | None = None,
            checkpoints: dict[str, Path] | None = None) -> list[dict[str, Any]]:
    """Every row's accuracy is the one measured in its runtime when ``deploy.test`` is given, else
    the model's own (``accuracy``, PyTorch eager); drops are against the teacher's eager accuracy.
    PyTorch rows ship the model's checkpoint (``checkpoints``), deploy rows their artifact."""
    set_threads(cfg.num_threads)
    sizes = {name: size_metrics(model) for name, model in models.items()}
    final = shipped(models)
    rows = benchmark_models(models, examples, runtimes_per_model(models, cfg.runtimes), cfg.warmup, cfg.iters,
                            reference="teacher", settings=CompileSettings.of(cfg), noise=NoiseLimits.of(cfg),
                            deploy=deploy, kernels={final})
    teacher_size, teacher_acc = sizes["teacher"]["size_mb"], accuracy["teacher"]
    isa = isa_summary()
    n_test = len(deploy.test[1]) if deploy is not None and deploy.test is not None else None
    for row in rows:
        name = row["model"]
        row["cpu_isa"] = isa
        measured = row.pop("accuracy", accuracy[name])
        row.update(with_intervals({"accuracy": measured}, n_test) if n_test else {"accuracy": measured}, **sizes[name])
        if not parse_runtime(row["runtime"]).deploy and name in (checkpoints or {}):
            row.update(artifact=str(checkpoints[name]), artifact_mb=checkpoints[name].stat().st_size / 1e6)
        row["size_ratio_vs_teacher"] = sizes[name]["size_mb"] / teacher_size
        row["accuracy_drop_vs_teacher"] = 100 * (teacher_acc - measured)
    return rows


LatencyLike = float | Sequence[Any]  # a p50, (p50, ci_low, ci_high), or (p50, ci_low, ci_high, per-round block medians)
TIE_RULE = ("the runtime with the lowest median, over the measurement's rounds, of its block's p50 over "
            "the fastest block of that round (every round times each runtime once, at one machine speed); "
            "runtimes the data does not tell apart from the pick (the 95% interval of their paired per-round ratio "
            "includes 1) are named as tied with it")
LEGACY_TIE_RULE = ("runtimes whose p50 intervals overlap the fastest's are tied with it (no measurable difference); "
                   "a tie goes to the runtime listed first in benchmark.runtimes")


def _interval(value: LatencyLike) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value), float(value)
    p50, low, high = (float(v) for v in value[:3])
    return p50, low, high


def _rounds(value: LatencyLike) -> tuple[float, ...]:
    return () if isinstance(value, (int, float)) or len(value) < 4 else tuple(float(v) for v in value[3])


def round_regrets(p50_ms: Mapping[str, LatencyLike]) -> dict[str, float] | None:
    """Per runtime, the median over the measurement's rounds of its block p50 over the fastest
    block of that round among ``p50_ms``; None unless every runtime has the same rounds."""
    rounds = {rt: _rounds(v) for rt, v in p50_ms.items()}
    counts = {len(r) for r in rounds.values()}
    if len(counts) != 1 or 0 in counts:
        return None
    n = counts.pop()
    best = [min(r[i] for r in rounds.values()) for i in range(n)]
    return {rt: statistics.median(r[i] / best[i] for i in range(n) if best[i] > 0) for rt, r in rounds.items()}


def judged_runtime(p50_ms: Mapping[str, LatencyLike], deploy: str = FASTEST) -> str | None:
    """The runtime a model is judged on, from its measured ``{runtime: (p50, ci_low, ci_high,
    rounds)}`` (in ``benchmark.runtimes`` order): ``deploy`` (``benchmark.deploy_runtime``) if it
    was measured; for ``fastest``, :data:`TIE_RULE`: the lowest median of per-round ratios to the
    round's fastest (:func:`round_regrets`), the first listed on equal ones; None when there is
    nothing to judge (no runtime measured, or ``deploy`` failed to run). Without rounds (bare p50s
    or intervals), :data:`LEGACY_TIE_RULE`. The one rule the benchmark summary, the report and the
    search use.

    Why per-round ratios (``bench/pick_rules.py``, docs/serving.md): this machine's phases reorder
    runtimes within 10% of each other, and the p50 intervals (from every call, calls of one block
    being alike) overlap or not by chance; judged on the measurements that followed, the interval
    rule's "first listed" tie-break picked a runtime within 1.1x of the later fastest 77% of the
    time when three runtimes were that close, and got worse with more data (61% over four
    measurements: more ties, more first-listed), while per-round ratios reached 82% from one
    measurement and 84% from four, the best any fixed choice did (97% for both rules on a
    model whose fastest runtime stands out)."""
    if deploy != FASTEST:
        return deploy if deploy in p50_ms else None
    if not p50_ms:
        return None
    if (regrets := round_regrets(p50_ms)) is not None:
        return min(regrets, key=regrets.get)
    iv = {rt: _interval(v) for rt, v in p50_ms.items()}
    best = min(iv, key=lambda rt: iv[rt][0])
    return next(rt for rt in iv if iv[rt][1] <= iv[best][2])


def tied_with(p50_ms: Mapping[str, LatencyLike], judged: str) -> list[str]:
    """The runtimes the data does not tell apart from ``judged``: the 95% interval of their paired
    per-round p50 ratio includes 1 (the lab's latency rule, :mod:`pipelines.core.decision`), or,
    without rounds, their 95% p50 intervals overlap. On a machine whose phases reorder runtimes
    this close (docs/serving.md), any of them may be the fastest in another phase. (The p50
    intervals alone, from every call of blocks whose calls are alike, are a few microseconds wide
    at batch 1: ONNX Runtime 0.043 [0.043, 0.043] and ``ts-int8`` 0.044 [0.044, 0.044] read as
    apart, and alone, right after, ``ts-int8`` was the faster.)"""
    if judged not in p50_ms:
        return []
    _, low, high = _interval(p50_ms[judged])
    mine = _rounds(p50_ms[judged])

    def tied(value: LatencyLike) -> bool:
        theirs = _rounds(value)
        if mine and len(theirs) == len(mine):
            return LatencyRatio.of(theirs, mine).tied()
        return _interval(value)[1] <= high and _interval(value)[2] >= low

    return [rt for rt, v in p50_ms.items() if rt != judged and tied(v)]


def timed(row: dict[str, Any]) -> LatencyLike:
    """A benchmark row's latency as :func:`judged_runtime` reads it: p50, its interval and the
    per-round block p50s (``latency_rounds_ms``) where the row has them."""
    p50 = float(row["latency_ms_p50"])
    low, high = row.get("latency_ms_p50_ci_low"), row.get("latency_ms_p50_ci_high")
    try:
        interval = (p50, float(low), float(high))
    except (TypeError, ValueError):
        return p50
    rounds = row.get("latency_rounds_ms")
    return (*interval, tuple(rounds)) if isinstance(rounds, (list, tuple)) and rounds else interval


def fastest(rows: list[dict[str, Any]], model: str, batch_size: int, accuracy_slack: float = 0.0,
            deploy: str = FASTEST) -> dict[str, Any] | None:
    """The row ``model`` is judged on at ``batch_size`` (:func:`judged_runtime`, from the rows' per-round
    block p50s) among its timed rows whose accuracy (measured in their own runtime) is at most
    ``accuracy_slack`` below the model's PyTorch eager row at that batch size: a runtime that is
    fast because it computes something else is not a deploy choice."""
    mine = [r for r in rows if r["model"] == model and r["batch_size"] == batch_size and "latency_ms_p50" in r]
    eager = next((r for r in mine if r["runtime"] == "eager"), None)
    floor = eager["accuracy"] - accuracy_slack - 1e-9 if eager is not None else float("-inf")
    ok = {r["runtime"]: r for r in mine if r["accuracy"] >= floor}
    judged = judged_runtime({rt: timed(r) for rt, r in ok.items()}, deploy)
    return ok.get(judged) if judged else None


def summary_metrics(rows: list[dict[str, Any]], batch_size: int, deploy: str = FASTEST,
                    accuracy_slack: float = 0.0) -> dict[str, dict[str, Any]]:
    """Per model: its eager row at ``batch_size``, plus the runtime it is judged on at
    ``batch_size`` (``best_*``) and at batch 1 (``best_*_bs1``): ``benchmark.deploy_runtime``, or
    the fastest among those within ``accuracy_slack`` of eager's accuracy (:func:`fastest`), with
    the artifact it ships."""
    out: dict[str, dict[str, Any]] = {}
    at_bs = [r for r in rows if r["batch_size"] == batch_size and "latency_ms_p50" in r]
    for name in dict.fromkeys(r["model"] for r in at_bs):
        mine = [r for r in at_bs if r["model"] == name]
        eager = next(r for r in mine if r["runtime"] == "eager")
        keep = ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "accuracy_n", "latency_ms_p50",
                "latency_ms_p50_ci_low", "latency_ms_p50_ci_high", "latency_ms_p90", "throughput_sps", "size_mb", "size_gzip_mb",
                "num_params", "nonzero_params", "sparsity", "speedup_vs_teacher", "speedup_vs_teacher_ci_low",
                "speedup_vs_teacher_ci_high", "size_ratio_vs_teacher", "accuracy_drop_vs_teacher")
        entry = {k: eager[k] for k in keep if k in eager}
        for bs, suffix in ((batch_size, ""), (1, "_bs1")):
            best = fastest(rows, name, bs, accuracy_slack, deploy)
            if best is None and deploy != FASTEST:
                entry[f"deploy_runtime_error{suffix}"] = (f"{deploy} did not run; judged on the fastest measured "
                                                          "runtime instead")
                best = fastest(rows, name, bs, accuracy_slack)
            base = next((r for r in rows if (r["model"], r["runtime"], r["batch_size"]) == (name, "eager", bs)
                         and "latency_ms_p50" in r), None)
            if best is None or base is None:
                continue
            if suffix:
                entry["latency_ms_p50_bs1"] = base["latency_ms_p50"]
                entry["latency_ms_p50_bs1_ci_low"] = base.get("latency_ms_p50_ci_low")
                entry["latency_ms_p50_bs1_ci_high"] = base.get("latency_ms_p50_ci_high")
            latencies = {r["runtime"]: timed(r) for r in rows if r["model"] == name and r["batch_size"] == bs
                     and "latency_ms_p50" in r and r["accuracy"] >= best["accuracy"] - accuracy_slack - 1e-9}
            entry[f"best_tied_with{suffix}"] = ", ".join(tied_with(latencies, best["runtime"]))
            entry.update({f"best_runtime{suffix}": best["runtime"],
                          f"best_latency_ms_p50{suffix}": best["latency_ms_p50"],
                          f"best_latency_ms_p50{suffix}_ci_low": best.get("latency_ms_p50_ci_low"),
                          f"best_latency_ms_p50{suffix}_ci_high": best.get("latency_ms_p50_ci_high"),
                          f"best_speedup_vs_teacher{suffix}_ci_low": best.get("speedup_vs_teacher_ci_low"),
                          f"best_speedup_vs_teacher{suffix}_ci_high": best.get("speedup_vs_teacher_ci_high"),
                          f"best_latency_ms_p90{suffix}": best["latency_ms_p90"],
                          f"best_accuracy{suffix}": best["accuracy"],
                          f"best_artifact{suffix}": best.get("artifact", ""),
                          f"best_artifact_mb{suffix}": best.get("artifact_mb", float("nan")),
                          f"best_speedup_vs_eager{suffix}": base["latency_ms_p50"] / best["latency_ms_p50"],
                          f"best_speedup_vs_teacher{suffix}": best.get("speedup_vs_teacher")})
        entry["noisy"] = any(r.get("noisy") for r in rows if r["model"] == name and "latency_ms_p50" in r)
        compiled = [r for r in mine if parse_runtime(r["runtime"]).mode]
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
