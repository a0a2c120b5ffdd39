"""What this CPU can do for int8 and bf16, detected once (never assumed): the instruction-set
features that decide which kernels oneDNN/fbgemm pick, so every benchmark row says what it ran on.

- ``avx512_vnni`` / ``avx_vnni``: int8 dot products (u8 x s8 -> s32) in one instruction;
- ``amx_int8`` / ``amx_bf16``: Advanced Matrix Extensions tiles (Sapphire Rapids and later);
- ``avx512_bf16``: bf16 dot products.

oneDNN can be told to use less than the CPU has (``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI`` runs
its VNNI kernels on an AMX machine: how to measure a VNNI-only CPU without one); the summary
then says so, since the flags alone would claim AMX.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def features() -> list[str]:
    """The int8/bf16-relevant features this CPU has, in :data:`FEATURES` order."""
    flags = cpu_flags()
    return [f for f in FEATURES if f in flags]


def has_int8_dot() -> bool:
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def has_amx_int8() -> bool:
    return "amx_int8" in cpu_flags()


def has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX-BF16): where CPU bf16 autocast can pay."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def bf16_missing() -> str:
    """Why bf16 rows are skipped on this CPU, or ``""`` when it has native bf16 (without it PyTorch
    and OpenVINO emulate bf16 through fp32 conversions: that measures the emulation, not bf16)."""
    return "" if has_bf16() else "this CPU has no native bf16 (avx512_bf16 / amx_bf16 absent from its flags)"


def onednn_isa_limit() -> str | None:
    """The ISA oneDNN is limited to (``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA``), lower case."""
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return limit.strip().lower() if limit and limit.strip().upper() != "ALL" else None


def isa_summary() -> str:
    """One short string for tags and CSV columns, e.g. ``avx512_vnni+avx512_bf16+amx_int8+amx_bf16``
    (``...+amx_bf16 onednn<=avx512_core_vnni`` when oneDNN is limited below what the CPU has)."""
    shown = [f for f in features() if f not in ("avx2", "avx512f", "amx_tile")]
    summary = "+".join(shown) or ("avx512f" if "avx512f" in cpu_flags() else "avx2" if "avx2" in cpu_flags()
                                  else "baseline")
    limit = onednn_isa_limit()
    return f"{summary} onednn<={limit}" if limit else summary
