"""Waiting for a runtime's thread pool to let go of the cores before the next one is timed.

Runtimes keep their worker threads busy for a while after a call, so that the next call finds
them awake: ONNX Runtime's workers spin-wait (``allow_spinning``, on as a server runs it), GNU
OpenMP's (PyTorch) spin ``GOMP_SPINCOUNT`` rounds before they sleep, TBB's (OpenVINO) a little.
A server runs one runtime, so that spinning only ever competes with its own next request. When
the benchmark switches from one runtime's block to the next (or to the speed probe), the previous
pool is still spinning on cores the next one wants: on 2 cores, one spinning thread leaves a
2-thread runtime one core.

:func:`settle` sleeps in short steps until no other thread of this process is running or
runnable (``/proc/self/task/*/stat`` state ``R``: a spinning worker is, a worker waiting on its
futex is not), twice in a row, or until ``max_ms`` passed (a runtime that never stops spinning
is then timed as it is). Reading thread states is independent of how loaded the machine is; where
``/proc`` cannot be read it falls back to this process's CPU time over each step (which a loaded
machine blurs: a spinning thread then gets only part of a core).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

STEP_MS = 1.0     # between two looks
CALM_LOOKS = 2    # looks in a row with no other thread of ours running
CPU_QUIET = 0.25  # fallback: CPU seconds per wall second below which nothing of ours spins
_TASKS = Path("/proc/self/task")


def busy_threads() -> int | None:
    """How many threads of this process, other than the calling one, are running or runnable;
    None where ``/proc`` cannot tell."""
    me = str(threading.get_native_id())
    try:
        tids = os.listdir(_TASKS)
    except OSError:
        return None
    busy = 0
    for tid in tids:
        if tid == me:
            continue
        try:
            stat = (_TASKS / tid / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        busy += stat[stat.rindex(")") + 2] == "R"
    return busy


def _quiet_step() -> bool:
    """One step: sleep, then whether no other thread of ours was busy."""
    cpu, wall = time.process_time(), time.perf_counter()
    time.sleep(STEP_MS / 1e3)
    busy = busy_threads()
    if busy is not None:
        return busy == 0
    return (time.process_time() - cpu) / max(time.perf_counter() - wall, 1e-9) < CPU_QUIET


def settle(max_ms: float) -> float:
    """Sleep until no other thread of this process is running (:data:`CALM_LOOKS` looks in a
    row) or ``max_ms`` passed; returns the milliseconds waited (0 when ``max_ms`` is 0)."""
    start = time.perf_counter()
    calm = 0
    while calm < CALM_LOOKS and (time.perf_counter() - start) * 1e3 < max_ms:
        calm = calm + 1 if _quiet_step() else 0
    return (time.perf_counter() - start) * 1e3
