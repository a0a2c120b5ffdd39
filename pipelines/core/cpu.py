"""What this CPU can do for int8 and bf16, detected once (never assumed): the instruction-set
features that decide which kernels oneDNN/fbgemm pick, so every benchmark row says what it ran on.

- ``avx512_vnni`` / ``avx_vnni``: int8 dot products (u8 x s8 -> s32) in one instruction;
- ``amx_int8`` / ``amx_bf16``: Advanced Matrix Extensions tiles (Sapphire Rapids and later);
- ``avx512_bf16``: bf16 dot products.
"""

from __future__ import annotations

import functools
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


def isa_summary() -> str:
    """One short string for tags and CSV columns, e.g. ``avx512_vnni+avx512_bf16+amx_int8+amx_bf16``."""
    shown = [f for f in features() if f not in ("avx2", "avx512f", "amx_tile")]
    return "+".join(shown) or ("avx512f" if "avx512f" in cpu_flags() else "avx2" if "avx2" in cpu_flags() else "baseline")
