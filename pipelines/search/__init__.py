"""Optuna search of the whole chain under an accuracy floor and a latency ceiling.

Each trial samples ``search.space`` (dotted params keys), applies it to ``params`` through the
schema (:meth:`Params.with_overrides`), and runs distill -> prune -> quantize -> benchmark
in-process through :mod:`pipelines.workflow` and :mod:`pipelines.benchmark`, the very functions
the DVC stages call. The teacher comes from ``train_baseline``; its logits on the training set
are computed once per search process and handed to every trial.

Objectives: ``accuracy`` (maximize), ``latency_ms_p50`` (minimize; fastest of
``benchmark.runtimes`` at ``benchmark.batch_size``) and ``size_mb`` (minimize) as listed in
``search.objectives``. Constraints (Optuna 5 ``trial.set_constraint``; feasible = every value
<= 0):

- ``accuracy``: ``100 * (teacher_accuracy - accuracy) - max_accuracy_drop``;
- ``latency_ms``: ``latency_ms_p50 - max_latency_ms`` (when set);
- ``speedup``: ``min_speedup - speedup_vs_teacher`` (when set), the ratio of the teacher's eager
  p50 over the trial's, both timed interleaved in the same trial (survives a slower machine).

Every trial stores the complete set of params keys it changed (``overrides``: the sampled keys
plus the per-trial epoch budget), so applying a trial's overrides to ``params.yaml``
(:mod:`pipelines.promote`) makes ``dvc repro`` rebuild exactly that trial's model. Trials also
carry a *context* fingerprint (teacher weights + every other setting a trial depends on); the
outputs only consider trials of the current context, so a study resumed after the teacher or
the constraints changed never promotes a stale result.

Choosing one trial (``best_params.yaml``): the highest accuracy among feasible trials, ties
broken by lower latency, then by lower trial number.

Many workers (processes or machines) share one study through its storage: an RDB URL
(PostgreSQL for several machines) or a journal file (several processes on one machine). On an
RDB storage every running trial records a heartbeat every ``$OPTUNA_HEARTBEAT_INTERVAL`` seconds
(default 10); a trial whose worker died (SIGKILL, lost machine) is marked FAIL by the next worker
that starts a trial once ``$OPTUNA_GRACE_PERIOD`` seconds (default 60) passed without one, and
re-queued with the same params (Optuna's ``RetryHeartbeatStaleTrialCallback``; the new trial
carries the ``failed_trial`` and ``retry_history`` system attrs), at most :data:`MAX_RETRY` times.
A trial that raised is *not* retried: it failed for a reason that would repeat.
"""

from pipelines.search.constraints import constraint_values, is_feasible
from pipelines.search.outputs import SearchOutcome, best_params_yaml, summarize, write_outputs, write_plots
from pipelines.search.pareto import SELECTION_RULE, feasible_front, first_feasible, hypervolume, pick_best, trial_record
from pipelines.search.run import run_search
from pipelines.search.space import EPOCH_KEYS, suggest, trial_overrides
from pipelines.search.storage import (DIRECTIONS, STORAGE_ENV, display_url, heartbeat_settings, make_sampler,
                                      make_storage, open_study, storage_url)
from pipelines.search.trial import Baseline, Objective, context_fingerprint, run_chain, state_hash

__all__ = ["DIRECTIONS", "EPOCH_KEYS", "STORAGE_ENV", "SELECTION_RULE", "Baseline", "Objective", "SearchOutcome", "best_params_yaml",
           "constraint_values", "context_fingerprint", "display_url", "feasible_front", "first_feasible",
           "heartbeat_settings", "hypervolume", "is_feasible", "make_sampler", "make_storage", "open_study",
           "pick_best", "run_chain", "run_search", "state_hash", "storage_url", "suggest", "summarize",
           "trial_overrides", "trial_record", "write_outputs", "write_plots"]
