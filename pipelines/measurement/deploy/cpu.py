"""What this CPU can run natively, read once from the machine (never assumed).

bf16 rows need native bf16 arithmetic: ``avx512_bf16`` (dot products) or AMX (``amx_bf16``
tiles). Without them PyTorch and OpenVINO emulate bf16 with fp32 conversions, which measures the
emulation, not bf16; such rows are skipped with :func:`bf16_missing`'s reason."""

from __future__ import annotations

import functools
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The ``flags`` of the first processor in ``cpuinfo`` (empty where there is no such file)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def features(flags: frozenset[str] | None = None) -> list[str]:
    """The bf16/int8 features present, e.g. ``['avx512_bf16', 'amx_bf16', 'avx512_vnni', 'amx_int8']``."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in (*BF16_FLAGS, *INT8_FLAGS) if f in flags]


def bf16_missing(flags: frozenset[str] | None = None) -> str:
    """Why bf16 rows are skipped on this CPU, or ``""`` when it has native bf16."""
    flags = cpu_flags() if flags is None else flags
    if any(f in flags for f in BF16_FLAGS):
        return ""
    return f"this CPU has no native bf16 ({' / '.join(BF16_FLAGS)} absent from /proc/cpuinfo flags)"
