"""Where a call's time goes: the compute kernels (oneDNN / fbgemm / MKL convolutions and matrix
products) against everything else (quantize/dequantize, pooling, reorders, allocation, the
wrapper, guards, Python).

:func:`kernel_profile` runs a callable under ``torch.profiler`` and sums, per call, the *self* time
of the innermost compute operator of each convolution or matmul (``aten::mkldnn_convolution``,
``quantized::conv2d_relu``, ``onednn::qconv_pointwise``, ``aten::addmm``, ...: the op that runs
the primitive, not the ``aten::conv2d`` -> ``aten::convolution`` wrappers around it). The
difference between a variant's call p50 (timed without the profiler, see
:mod:`pipelines.measurement.timing`) and its kernel time is its overhead, as a number: the part
a better runtime could remove, where the kernel time is the limit it cannot go below.

Inductor's C++ wrapper calls oneDNN through its C shim, which skips the dispatcher and so the
profiler's op records; for such a graph the kernels are timed with oneDNN's own verbose log
(``ONEDNN_VERBOSE=profile_exec``, :func:`onednn_exec_ms`), which times every primitive execution.
``source`` says which of the two a number comes from.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from pipelines.measurement.timing import NoiseLimits, time_blocks

# Operators whose own time is a convolution / matrix-product primitive.
_COMPUTE = re.compile(r"conv|linear|addmm|(^|::)b?mm\b|matmul|_pointwise")
# ... and those that only forward to one (their self time is dispatch, not compute).
_FORWARDERS = {"aten::conv2d", "aten::convolution", "aten::_convolution", "aten::linear", "aten::matmul",
               "aten::conv1d", "aten::conv3d"}


@dataclass
class KernelProfile:
    kernel_ms: float                   # per call: compute primitives only
    profiled_call_ms: float            # per call, in the pass the kernel time came from (inflated by its logging)
    source: str                        # "profiler" or "onednn-verbose"
    top_ops: list[tuple[str, float]] = field(default_factory=list)  # (op, self ms per call), biggest first
    primitives: dict[str, float] = field(default_factory=dict)      # oneDNN primitive/impl -> ms per call
    call_p50_ms: float = float("nan")  # the call's p50 without the profiler, timed right before it

    def overhead_ratio(self, call_p50_ms: float | None = None) -> float:
        """A call p50 (default: the one timed right before the profile) over the kernel time: 1.0
        would be a call that is nothing but kernels."""
        call = self.call_p50_ms if call_p50_ms is None else call_p50_ms
        return call / self.kernel_ms if self.kernel_ms > 0 else float("nan")


_KINETO_LINE = re.compile(r"^(USDT|INFO|WARNING|ERROR):\d{4}-\d\d-\d\d .*\.cpp:\d+\]")


@contextmanager
def _fd_captured(fd: int) -> Iterator[list[str]]:
    """Point the C-level file descriptor ``fd`` at a temp file for the block; the list it yields
    holds the lines written there, once the block is done."""
    lines: list[str] = []
    stream = sys.stdout if fd == 1 else sys.stderr
    with tempfile.TemporaryFile(mode="w+") as log:
        stream.flush()
        saved = os.dup(fd)
        os.dup2(log.fileno(), fd)
        try:
            yield lines
        finally:
            stream.flush()
            os.dup2(saved, fd)
            os.close(saved)
            log.seek(0)
            lines.extend(log)


def _is_kernel(name: str) -> bool:
    return name not in _FORWARDERS and bool(_COMPUTE.search(name))


def _profiled(fn: Callable[[], Any], iters: int) -> tuple[float, float, int, list[tuple[str, float]]]:
    """(kernel ms, profiled call ms, compute-op executions, top ops) per call of ``fn``, from
    ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with _fd_captured(2) as log:  # kineto's C++ logger prints a line per start/stop
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(iters):
                with record_function("call"):
                    fn()
    for line in log:
        if not _KINETO_LINE.match(line):
            sys.stderr.write(line)
    selfs: dict[str, float] = defaultdict(float)
    call_us = kernel_us = 0.0
    kernels = 0
    for ev in prof.events():
        if ev.name == "call":
            call_us += ev.cpu_time_total
            continue
        selfs[ev.name] += ev.self_cpu_time_total
        if _is_kernel(ev.name):
            kernel_us += ev.self_cpu_time_total
            kernels += 1
    top = sorted(((k, v / iters / 1e3) for k, v in selfs.items()), key=lambda kv: -kv[1])[:8]
    return kernel_us / iters / 1e3, call_us / iters / 1e3, kernels, top


def profile_ops(fn: Callable[[], Any], iters: int) -> tuple[float, float, list[tuple[str, float]]]:
    """(kernel ms, profiled call ms, top ops) per call of ``fn`` from ``torch.profiler``."""
    kernel_ms, call_ms, _, top = _profiled(fn, iters)
    return kernel_ms, call_ms, top


_VERBOSE_EXEC = re.compile(r"^onednn_verbose,(?:[^,]*,)*?exec,cpu,([^,]+),([^,]+),.*,([0-9.]+)\s*$")


def _verbose_pass(fn: Callable[[], Any], iters: int) -> tuple[list[str], list[float]]:
    """oneDNN's verbose execution lines over ``iters`` calls of ``fn``, and each call's wall ms."""
    calls: list[float] = []
    with _fd_captured(1) as log:
        with torch.inference_mode(), torch.backends.mkldnn.verbose(1):  # 1: every execution, timed
            for _ in range(iters):
                started = time.perf_counter()
                fn()
                calls.append((time.perf_counter() - started) * 1e3)
    return [line for line in log if _VERBOSE_EXEC.match(line)], calls


def onednn_executions(fn: Callable[[], Any], iters: int = 1) -> list[str]:
    """oneDNN's verbose line for every primitive execution in ``iters`` calls of ``fn``
    (primitive, implementation, data types and layouts, shapes, ms).

    The log goes to the process's stdout (C level), so fd 1 is pointed at a temp file meanwhile
    (what Python prints in the block goes there too and is dropped)."""
    return _verbose_pass(fn, iters)[0]


def onednn_execution(line: str) -> tuple[str, str, float]:
    """(primitive kind, implementation, ms) of one line :func:`onednn_executions` returned, e.g.
    ``("convolution", "brg_conv_fwd:avx10_1_512_amx", 0.11)``."""
    kind, impl, ms = _VERBOSE_EXEC.match(line).groups()
    return kind, impl, float(ms)


def _runs(lines: list[str]) -> dict[str, list[float]]:
    """``primitive:implementation`` -> the ms of each of its executions in ``lines``."""
    runs: dict[str, list[float]] = defaultdict(list)
    for line in lines:
        kind, impl, ms = onednn_execution(line)
        runs[f"{kind}:{impl}"].append(ms)
    return runs


def _per_call(runs: dict[str, list[float]], iters: int) -> dict[str, float]:
    """``primitive:implementation`` -> its executions per call times their median, biggest first.
    The median, not the mean: one execution that creates or JITs a primitive took 11.9 ms against
    1.2 ms for a whole call, and a mean over 30 calls kept it."""
    totals = {k: statistics.median(v) * len(v) / iters for k, v in runs.items()}
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def onednn_exec_ms(fn: Callable[[], Any], iters: int) -> dict[str, float]:
    """oneDNN's own timing of every primitive execution in ``iters`` calls of ``fn``, per call, for
    each ``primitive:implementation`` (empty when nothing ran through oneDNN); see :func:`_per_call`."""
    return _per_call(_runs(onednn_executions(fn, iters)), iters)


def _is_dnn_compute(primitive: str) -> bool:
    return bool(_COMPUTE.search(primitive.split(":")[0])) or "matmul" in primitive or "inner_product" in primitive


def kernel_profile(fn: Callable[[], Any], iters: int = 30, timed_iters: int = 0) -> KernelProfile:
    """Kernel time per call of ``fn`` (see the module docstring); ``fn`` is warmed up by the caller.

    ``timed_iters`` > 0 first times ``fn`` alone, without the profiler (``call_p50_ms``), so the
    call / kernel ratio comes from one moment: on a shared VM whose speed drifts by 2x within a
    minute, a p50 from an earlier loop over a kernel time profiled later mixes two machines.

    The profiler's numbers are used unless oneDNN executed compute primitives the profiler did not
    record (Inductor's C++ wrapper); then the kernel time is oneDNN's and the call time is the same
    verbose pass's mean wall time, so both come from the same calls. Which source is chosen by what
    each saw, never by which number is larger (a stall in one pass would decide that)."""
    call_p50 = float("nan")
    if timed_iters > 0:
        one_block = NoiseLimits(blocks=1, retries=0, block_warm_ms=0.0)  # one callable: nothing to rotate
        call_p50 = time_blocks({"call": fn}, warmup=3, iters=timed_iters, limits=one_block).timings["call"].p50_ms
    kernel_ms, call_ms, profiled_kernels, top = _profiled(fn, iters)
    lines, calls = _verbose_pass(fn, iters)
    runs = _runs(lines)
    primitives = _per_call(runs, iters)
    if sum(len(v) for name, v in runs.items() if _is_dnn_compute(name)) > profiled_kernels:  # primitives the profiler did not see (C++ wrapper)
        dnn_ms = sum(ms for name, ms in primitives.items() if _is_dnn_compute(name))
        return KernelProfile(dnn_ms, statistics.fmean(calls), "onednn-verbose", top, primitives, call_p50)
    return KernelProfile(kernel_ms, call_ms, "profiler", top, primitives, call_p50)
