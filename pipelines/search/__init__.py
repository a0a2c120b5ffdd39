"""Optuna search of the whole chain under an accuracy floor and a latency ceiling.

Each trial samples ``search.space`` (dotted params keys, :mod:`.space`), applies it to ``params``
through the schema (:meth:`Params.with_overrides`), and runs distill -> prune -> quantize ->
benchmark in-process through :mod:`pipelines.workflow` and the benchmark's own
:func:`~pipelines.measurement.benchmark.benchmark_models` (output check included), the very
functions the DVC stages call. A trial sets only the sampled keys: it trains with the pipeline's
own epochs, so what is promoted is what was measured. The teacher comes from ``train_baseline``;
its logits on the training set are computed once per search process and handed to every trial.

Everything that steers the search is measured on the **validation** split: the objective
``val_accuracy`` (maximize; also ``latency_ms_p50`` and ``size_mb``, minimize, as listed in
``search.objectives``; the latency is the one of the runtime the model is judged on,
``benchmark.deploy_runtime``) and the constraints (Optuna 5 ``trial.set_constraint``; feasible =
every value <= 0). Every decision (constraints, the front, the chosen trial, ``make promote``)
follows the one rule of :mod:`pipelines.core.decision`, on the trial's per-image validation
outcomes (metrics ``val_correct``, paired with the teacher's and with other trials') and its
speedup over the teacher with the interval of the per-round ratios:

- ``accuracy``: the lower end of the 95% paired interval of the drop against the teacher (pp)
  minus ``max_accuracy_drop``: infeasible only when the data shows the drop exceeds the limit;
- ``latency_ms``: the lower end of the p50's interval minus ``max_latency_ms`` (when set);
- ``speedup``: ``min_speedup`` minus the upper end of the speedup's interval (when set), the ratio
  of the teacher's eager p50 over the trial's, both timed interleaved in the same trial.

The test split is evaluated for the report only (user attr ``test_accuracy``, ``metrics.accuracy``)
and never read by the sampler or the selection rule.

Trials carry a *context* fingerprint (teacher weights + every setting a trial depends on besides
the keys it samples); the outputs only consider trials of the current context, so a study resumed
after the teacher or the constraints changed never promotes a stale result. A context starts with
the configuration params.yaml holds now as an enqueued trial (:mod:`.current`), never pruned: the
incumbent, which another trial replaces only when it improves on it within the intervals.
``search.pruner`` stops hopeless trials from their per-epoch validation accuracy
(:mod:`.fidelity`); they end PRUNED in Optuna, in MLflow and in ``pareto.json``.

Many workers (processes or machines) share one study through its storage: an RDB URL
(PostgreSQL for several machines) or a journal file (several processes on one machine). On an
RDB storage every running trial records a heartbeat every ``$OPTUNA_HEARTBEAT_INTERVAL`` seconds
(default 10); a trial whose worker died (SIGKILL, lost machine) is marked FAIL by the next worker
that starts a trial once ``$OPTUNA_GRACE_PERIOD`` seconds (default 60) passed without one, and
re-queued with the same params (Optuna's ``RetryHeartbeatStaleTrialCallback``; the new trial
carries the ``failed_trial`` and ``retry_history`` system attrs), at most :data:`MAX_RETRY` times.
A trial that raised is *not* retried: it failed for a reason that would repeat.
"""

from pipelines.core.decision import RULE, constraint_values, is_feasible
from pipelines.search.outputs import SearchOutcome, best_params_yaml, summarize, write_outputs, write_plots
from pipelines.search.current import Comparison, compare_to_current, current_trial, enqueue_current
from pipelines.search.fidelity import Fidelity, make_pruner
from pipelines.search.evidence import from_metrics, from_trial
from pipelines.search.outputs import objectives_of
from pipelines.search.pareto import SELECTION_RULE, feasible_front, first_feasible, hypervolume, pick_best, trial_record
from pipelines.search.run import SearchError, run_search
from pipelines.search.space import in_space, suggest, to_optuna
from pipelines.search.storage import (DIRECTIONS, STORAGE_ENV, directions, heartbeat_settings,
                                      make_sampler, make_storage, open_study, storage_url)
from pipelines.search.trial import Baseline, Objective, context_fingerprint, measure_latency, run_chain, state_hash

__all__ = ["DIRECTIONS", "STORAGE_ENV", "SELECTION_RULE", "Baseline", "Comparison", "Fidelity", "Objective", "SearchError",
           "SearchOutcome", "best_params_yaml", "compare_to_current", "constraint_values", "context_fingerprint",
           "current_trial", "directions", "enqueue_current", "feasible_front", "from_metrics", "from_trial",
           "objectives_of", "RULE",
           "first_feasible", "heartbeat_settings", "hypervolume", "in_space", "is_feasible", "make_pruner",
           "make_sampler", "make_storage", "measure_latency", "open_study", "pick_best", "run_chain", "run_search",
           "state_hash", "storage_url", "suggest", "summarize", "to_optuna", "trial_record", "write_outputs",
           "write_plots"]
