"""The one benchmarking routine.

Latency is only comparable when measured side by side: every variant of a comparison is
warmed up, then timed *interleaved* (one call of each in turn, the order rotating every
round) so that machine drift hits all of them alike. We report the median (p50) and p90 of
per-call wall times at a fixed thread count, and ratios against a reference measured in the
same loop.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

RUNTIME_MODES = {
    "compile-default": "default",
    "compile-reduce-overhead": "reduce-overhead",
    "compile-max-autotune": "max-autotune",
}


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p90_ms: float
    mean_ms: float
    iters: int

    def throughput(self, batch_size: int) -> float:
        return batch_size / (self.p50_ms / 1e3)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_interleaved(fns: dict[str, Callable[[], Any]], warmup: int = 10, iters: int = 50) -> dict[str, Latency]:
    """Time each zero-argument callable ``iters`` times, interleaved, after ``warmup`` calls each."""
    names = list(fns)
    with torch.inference_mode():
        for name in names:
            for _ in range(warmup):
                fns[name]()
        _sync()
        samples: dict[str, list[float]] = {n: [] for n in names}
        for i in range(iters):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                fns[name]()
                _sync()
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {n: Latency(statistics.median(s), _percentile(s, 0.9), statistics.fmean(s), len(s))
            for n, s in samples.items()}


def set_threads(n: int) -> None:
    torch.set_num_threads(n)


@dataclass
class Compiled:
    fn: Callable[[torch.Tensor], Any]
    compile_time_s: float
    graph_breaks: int
    break_reasons: list[str]
    error: str | None = None


def graph_breaks(model: nn.Module, example: torch.Tensor) -> tuple[int, list[str]]:
    """Dynamo's own account of where it had to split the graph, and why."""
    import torch._dynamo

    # explain() resets dynamo's caches: call it before compiling anything that is to be timed.
    with torch.inference_mode():
        explained = torch._dynamo.explain(model)(example)
    reasons = [getattr(r, "reason", str(r)).splitlines()[0] for r in explained.break_reasons]
    return explained.graph_break_count, reasons


def compile_for(model: nn.Module, runtime: str, example: torch.Tensor,
                breaks: tuple[int, list[str]] = (0, [])) -> Compiled:
    """``runtime`` is ``eager`` or ``compile-<mode>``; the compile is forced (and timed) by two
    calls on ``example`` so later timed calls hit the cached code."""
    if runtime == "eager":
        return Compiled(model, 0.0, 0, [])
    try:
        compiled = torch.compile(model, mode=RUNTIME_MODES[runtime], dynamic=False)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(example)
            compiled(example)
        _sync()
        return Compiled(compiled, time.perf_counter() - start, breaks[0], breaks[1])
    except Exception as exc:  # noqa: BLE001 - a model the compiler refuses is a result, not a crash
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) else type(exc).__name__
        return Compiled(model, float("nan"), 0, [], error=reason)


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def benchmark_models(models: dict[str, nn.Module], examples: dict[int, torch.Tensor], runtimes: list[str],
                     warmup: int, iters: int, reference: str | None = None) -> list[dict[str, Any]]:
    """One row per (model, runtime, batch_size). All variants at one batch size are timed
    together, interleaved; ``speedup_vs_<reference>`` is the eager reference's p50 over the row's."""
    compiled_runtimes = [r for r in runtimes if r != "eager"]
    breaks: dict[str, tuple[int, list[str]]] = {}
    if compiled_runtimes:
        first = examples[min(examples)]
        for name, model in models.items():
            try:
                breaks[name] = graph_breaks(model, first)
            except Exception as exc:  # noqa: BLE001 - recorded with the row below
                breaks[name] = (0, [f"explain failed: {_error_line(exc)}"])
    rows: list[dict[str, Any]] = []
    for batch_size, example in examples.items():
        variants: dict[tuple[str, str], Compiled] = {}
        for name, model in models.items():
            for runtime in runtimes:
                variants[(name, runtime)] = compile_for(model, runtime, example, breaks.get(name, (0, [])))
        runnable = {key: (lambda c=c: c.fn(example)) for key, c in variants.items() if c.error is None}
        timings = time_interleaved(runnable, warmup, iters)
        ref = timings.get((reference, "eager")) if reference else None
        for (name, runtime), comp in variants.items():
            row: dict[str, Any] = {"model": name, "runtime": runtime, "batch_size": batch_size,
                                   "compile_time_s": comp.compile_time_s, "graph_breaks": comp.graph_breaks,
                                   "break_reasons": " | ".join(comp.break_reasons), "error": comp.error or ""}
            lat = timings.get((name, runtime))
            if lat is not None:
                row.update(latency_ms_p50=lat.p50_ms, latency_ms_p90=lat.p90_ms,
                           throughput_sps=lat.throughput(batch_size))
                if ref is not None:
                    row["speedup_vs_teacher"] = ref.p50_ms / lat.p50_ms
            rows.append(row)
    return rows
