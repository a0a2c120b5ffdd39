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
from pipelines.core.errors import ParamsError, UserError
from pipelines.core.decision import RULE
from pipelines.core.stats import pack_outcomes
from pipelines.core.stats import resolution as accuracy_resolution
from pipelines.core.urls import mask_url
from pipelines.search.attrs import describe_resolution, describe_study, metrics_of
from pipelines.search.outputs import SearchOutcome, summarize, write_outputs
from pipelines.search.current import check_inside, current_trial, enqueue_current
from pipelines.search.fidelity import Fidelity
from pipelines.search.storage import DIRECTIONS, make_storage, open_study, storage_url
from pipelines.search.trial import Baseline, Objective, context_fingerprint, run_chain
from pipelines.training.context import Context


class SearchError(UserError, RuntimeError):
    """The search itself failed: every trial it ran raised."""


def run_search(params: Params, teacher: nn.Module, run: tracking.Run, out_dir: Path, *,
               n_trials: int | None = None, timeout_s: float | None = None,
               storage: str | optuna.storages.BaseStorage | None = None,
               chain: Callable[..., dict[str, Any]] = run_chain,
               worker: bool = False, plots_dir: Path | None = None) -> SearchOutcome:
    """Run (or resume) the study for ``n_trials`` more trials (0: none, only the outputs), then
    write the outputs. A context without a trial of the current configuration gets one enqueued
    first; ``search.pruner`` stops hopeless trials (see :mod:`pipelines.search.fidelity`). On
    Ctrl-C the finished trials stay in storage, the outputs are written from them, and the
    interrupt propagates. When every trial this call ran failed,
    a :class:`SearchError` says why and the previous outputs stay as they were.

    ``worker=True`` is one of many processes sharing the study: its sampler seed also depends on
    the host and process (workers that start together must not draw the same trials), and it
    writes no outputs (a later ``n_trials=0`` run writes them from the whole study)."""
    cfg = params.search
    if not cfg.space:
        raise ParamsError("search.space: empty; declare at least one dimension (e.g. prune.amount)")
    check_inside(params)  # the current configuration must be a point of the space (one line if not)
    n_trials = cfg.n_trials if n_trials is None else n_trials
    ctx = Context(params)
    salt = zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) if worker else 0
    url = storage if storage is not None else storage_url(cfg)
    store = make_storage(url) if isinstance(url, str) else url
    study = open_study(params, storage=store, seed=(params.seed + salt) % 2**31)
    baseline = Baseline.build(ctx, teacher)
    context = context_fingerprint(params, baseline.teacher_hash, list(cfg.space))
    # the pruner's companion study: same storage, no heartbeat (Optuna warns on ask() outside optimize())
    fidelity = Fidelity(study.study_name, context, cfg.pruner,
                        storage=make_storage(url, heartbeat=False) if isinstance(url, str) else store)
    objective = Objective(params, baseline, run, chain, fidelity)
    shown = mask_url(url) if isinstance(url, str) else "<storage>"
    done_before = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                TrialState.FAIL)))
    # Workers that start together would each enqueue it (Optuna has no atomic "enqueue once"):
    # a distributed search gets it from a plain `make search N=1` first.
    # (--n-trials 0 writes the outputs only: a trial it enqueued would wait there, counted, never run)
    if not worker and n_trials > 0 and enqueue_current(study, params, objective.context):
        print("[search] a new context: its first trial is the current params.yaml configuration", flush=True)
    elif worker and current_trial(study.get_trials(deepcopy=False), params, objective.context) is None:
        print("[search] note: the current configuration has no trial in this context; run a plain "
              "`make search N=1` so the study holds the starting point", flush=True)
    print(f"[search] {'worker on ' if worker else ''}study {study.study_name!r} in {shown}: {done_before} finished "
          f"trials so far; running {n_trials} more, pruner {cfg.pruner} (teacher val accuracy "
          f"{baseline.teacher_val_accuracy:.4f}, test {baseline.teacher_test_accuracy:.4f})", flush=True)
    run.set_tags({"optuna.study": study.study_name, "optuna.storage": shown, "search.context": objective.context,
                  "optuna.worker": worker, "search.pruner": cfg.pruner})
    limits = {"max_accuracy_drop_pp": cfg.max_accuracy_drop, "max_latency_ms": cfg.max_latency_ms,
              "min_speedup": cfg.min_speedup}
    describe_study(study, {name: DIRECTIONS[name] for name in cfg.objectives}, limits,
                   baseline.teacher_val_accuracy, objective.context, run.url)
    resolution = accuracy_resolution(len(baseline.teacher_val_correct), baseline.teacher_val_accuracy)
    study.set_user_attr("accuracy_resolution", describe_resolution(resolution))
    study.set_user_attr("decision_rule", RULE)
    study.set_user_attr(f"teacher_val_correct:{objective.context}", pack_outcomes(baseline.teacher_val_correct))
    interrupted: BaseException | None = None
    started = time.perf_counter()
    try:
        if n_trials > 0:
            study.optimize(objective, n_trials=n_trials, timeout=timeout_s or cfg.timeout_s,
                           catch=(Exception,), gc_after_trial=True)
    except KeyboardInterrupt as exc:
        interrupted = exc
        print("[search] interrupted: finished trials are kept; re-run to resume", flush=True)
    if interrupted is None and objective.failures and not objective.completed:
        raise SearchError(f"all {len(objective.failures)} trials failed (first: {objective.failures[0]}); "
                          f"{out_dir} is left as it was")
    outcome = summarize(study, objective.context, params)
    meta = {"context": objective.context, "pruner": cfg.pruner, "accuracy_resolution": resolution,
            "decision_rule": RULE,
            "teacher_val_accuracy": baseline.teacher_val_accuracy,
            "teacher_accuracy": baseline.teacher_test_accuracy,
            "constraints": limits,
            "benchmark": {"batch_size": params.benchmark.batch_size, "runtimes": list(params.benchmark.runtimes),
                          "num_threads": params.benchmark.num_threads,
                          "deploy_runtime": params.benchmark.deploy_runtime}}
    if not worker:
        outcome.files = write_outputs(outcome, out_dir, list(cfg.objectives), meta, plots_dir)
    summary = {f"search.{k}": v for k, v in outcome.counts.items()}
    summary["search.wall_s"] = time.perf_counter() - started
    summary["search.teacher_val_accuracy"] = baseline.teacher_val_accuracy
    summary["search.teacher_accuracy"] = baseline.teacher_test_accuracy
    if outcome.best is not None:
        summary.update({f"best.{k}": v for k, v in metrics_of(outcome.best).items()
                        if isinstance(v, (int, float))})
        run.set_tags({"best_trial": outcome.best.number})
    run.log_metrics(summary)
    for path in outcome.files:
        run.log_artifact(path, "search")
    print(f"[search] {outcome.counts['complete']} complete, {outcome.counts['pruned']} pruned, "
          f"{outcome.counts['failed']} failed, "
          f"{outcome.counts['feasible']} feasible, front of {outcome.counts['front']} "
          f"(this context); best trial: {outcome.best.number if outcome.best else 'none'} "
          f"(current configuration: trial {outcome.current.number if outcome.current else 'not measured'})",
          flush=True)
    if interrupted is not None:
        raise interrupted
    return outcome
