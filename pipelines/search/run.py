"""The whole search: open (or resume) the study, run trials, write the outputs."""

from __future__ import annotations

import os
import socket
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from torch import nn

from pipelines import tracking
from pipelines.core.config import Params
from pipelines.core.errors import ParamsError
from pipelines.search.outputs import SearchOutcome, summarize, write_outputs
from pipelines.search.storage import display_url, open_study, storage_url
from pipelines.search.trial import Baseline, Objective, run_chain
from pipelines.training.context import Context


def run_search(params: Params, teacher: nn.Module, run: tracking.Run, out_dir: Path, *,
               n_trials: int | None = None, timeout_s: float | None = None,
               storage: str | optuna.storages.BaseStorage | None = None,
               chain: Callable[[Baseline, Params], dict[str, Any]] = run_chain,
               worker: bool = False) -> SearchOutcome:
    """Run (or resume) the study for ``n_trials`` more trials (0: none, only the outputs), then
    write the outputs. On Ctrl-C the finished trials stay in storage, the outputs are written from
    them, and the interrupt propagates.

    ``worker=True`` is one of many processes sharing the study: its sampler seed also depends on
    the host and process (workers that start together must not draw the same trials), and it
    writes no outputs (a later ``n_trials=0`` run writes them from the whole study)."""
    cfg = params.search
    if not cfg.space:
        raise ParamsError("search.space: empty; declare at least one dimension (e.g. prune.amount)")
    n_trials = cfg.n_trials if n_trials is None else n_trials
    ctx = Context(params)
    salt = zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) if worker else 0
    study = open_study(params, storage=storage, seed=(params.seed + salt) % 2**31)
    baseline = Baseline.build(ctx, teacher)
    objective = Objective(params, baseline, run, chain)
    url = storage_url(cfg) if storage is None else (storage if isinstance(storage, str) else "<storage>")
    url = display_url(url)
    done_before = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)))
    print(f"[search] {'worker on ' if worker else ''}study {study.study_name!r} in {url}: {done_before} finished "
          f"trials so far; running {n_trials} more (teacher accuracy {baseline.teacher_accuracy:.4f})", flush=True)
    run.set_tags({"optuna.study": study.study_name, "optuna.storage": url, "search.context": objective.context,
                  "optuna.worker": worker})
    interrupted: BaseException | None = None
    started = time.perf_counter()
    try:
        if n_trials > 0:
            study.optimize(objective, n_trials=n_trials, timeout=timeout_s or cfg.timeout_s,
                           catch=(Exception,), gc_after_trial=True)
    except KeyboardInterrupt as exc:
        interrupted = exc
        print("[search] interrupted: finished trials are kept; re-run to resume", flush=True)
    outcome = summarize(study, objective.context)
    meta = {"context": objective.context, "teacher_accuracy": baseline.teacher_accuracy,
            "constraints": {"max_accuracy_drop_pp": cfg.max_accuracy_drop, "max_latency_ms": cfg.max_latency_ms,
                            "min_speedup": cfg.min_speedup},
            "benchmark": {"batch_size": params.benchmark.batch_size, "runtimes": list(params.benchmark.runtimes),
                          "num_threads": params.benchmark.num_threads}}
    if not worker:
        outcome.files = write_outputs(outcome, out_dir, list(cfg.objectives), meta)
    summary = {f"search.{k}": v for k, v in outcome.counts.items()}
    summary["search.wall_s"] = time.perf_counter() - started
    summary["search.teacher_accuracy"] = baseline.teacher_accuracy
    if outcome.best is not None:
        summary.update({f"best.{k}": v for k, v in outcome.best.user_attrs["metrics"].items()
                        if isinstance(v, (int, float))})
        run.set_tags({"best_trial": outcome.best.number})
    run.log_metrics(summary)
    for path in outcome.files:
        run.log_artifact(path, "search")
    print(f"[search] {outcome.counts['complete']} complete, {outcome.counts['failed']} failed, "
          f"{outcome.counts['feasible']} feasible, front of {outcome.counts['front']} "
          f"(this context); best trial: {outcome.best.number if outcome.best else 'none'}", flush=True)
    if interrupted is not None:
        raise interrupted
    return outcome
