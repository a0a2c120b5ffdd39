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

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
import zlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from pipelines import tracking
from pipelines.benchmark import CompileSettings, compile_for, set_threads, time_interleaved, warm_compilers
from pipelines.config import Params, ParamsError, SearchConfig, SearchDimension
from pipelines.distill import with_teacher_logits
from pipelines.io import atomic_write, project_root, write_json, write_text
from pipelines.workflow import Context, distill_student, prune_student, quantize_model

DIRECTIONS = {"accuracy": "maximize", "latency_ms_p50": "minimize", "size_mb": "minimize"}
# params keys every trial sets from its epoch budget (unless the space samples them itself)
EPOCH_KEYS = {"distill.epochs": "distill_epochs", "prune.finetune_epochs": "finetune_epochs"}
# search settings a trial's result depends on (the rest only steer the study)
_CONTEXT_SEARCH_KEYS = ("max_accuracy_drop", "max_latency_ms", "min_speedup", "objectives")
STORAGE_ENV = "OPTUNA_STORAGE"
HEARTBEAT_ENV, GRACE_ENV = "OPTUNA_HEARTBEAT_INTERVAL", "OPTUNA_GRACE_PERIOD"
HEARTBEAT_INTERVAL_S, GRACE_PERIOD_S = 10, 60  # defaults: a dead worker's trial is retried ~1 min later
MAX_RETRY = 2  # a trial whose worker died is re-queued at most this many times
TPE_STARTUP_TRIALS = 5
SELECTION_RULE = ("highest accuracy among feasible trials (every constraint <= 0); ties go to the "
                  "lower latency_ms_p50, then to the lower trial number")


# --- storage and sampler ----------------------------------------------------------------------

def storage_url(cfg: SearchConfig) -> str:
    """``$OPTUNA_STORAGE``, else ``search.storage``, else ``sqlite:///<project root>/optuna.db``."""
    return os.environ.get(STORAGE_ENV) or cfg.storage or f"sqlite:///{project_root() / 'optuna.db'}"


def display_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs, MLflow tags and error lines)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}"


def _positive_int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise ParamsError(f"${name}: {raw!r} is not a positive whole number of seconds")
    return int(raw)


def heartbeat_settings() -> tuple[int, int]:
    """``(heartbeat_interval, grace_period)`` in seconds, from the environment or the defaults."""
    interval = _positive_int_env(HEARTBEAT_ENV, HEARTBEAT_INTERVAL_S)
    grace = _positive_int_env(GRACE_ENV, max(GRACE_PERIOD_S, 6 * interval))
    if grace <= interval:
        raise ParamsError(f"${GRACE_ENV}: {grace} must exceed ${HEARTBEAT_ENV} ({interval}), or live "
                          "trials would be failed between two heartbeats")
    return interval, grace


def _rdb_storage(url: str, interval: int, grace: int, attempts: int = 4) -> optuna.storages.RDBStorage:
    """RDBStorage with heartbeats and retry of dead workers' trials. Workers that start at the same
    moment on an empty PostgreSQL database race to create Optuna's tables; the losers retry."""
    engine_kwargs = {} if url.startswith("sqlite") else {"pool_pre_ping": True}  # survive server restarts
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=interval, grace_period=grace,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRY))
        except Exception as exc:  # noqa: BLE001
            import sqlalchemy.exc

            if attempt + 1 == attempts or not isinstance(exc, (sqlalchemy.exc.IntegrityError,
                                                               sqlalchemy.exc.ProgrammingError)):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB URL (``sqlite:///``, ``postgresql://`` ...) or a journal file (``journal:<path>`` or a
    path ending in ``.journal``; relative paths are anchored at the project root). RDB storages
    get heartbeats (:func:`heartbeat_settings`) and retry of trials whose worker died; Optuna's
    journal storage has no heartbeat, so a killed process leaves its trial RUNNING there (the
    outputs only count COMPLETE trials)."""
    if url.startswith("journal:") or url.endswith(".journal"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        path = path if path.is_absolute() else project_root() / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ParamsError(f"search.storage: {url!r} is not an Optuna storage URL "
                          "(use sqlite:///path.db, postgresql://..., or journal:path)")
    interval, grace = heartbeat_settings()
    try:
        return _rdb_storage(url, interval, grace)
    except Exception as exc:  # noqa: BLE001 - any driver/connection problem becomes one line
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ParamsError(f"search.storage: cannot open {display_url(url)!r} ({type(exc).__name__}: "
                          f"{detail})") from None


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    # TPE reads the constraints set through trial.set_constraint (Optuna 5) by itself.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS, multivariate=True)


def directions(cfg: SearchConfig) -> list[str]:
    return [DIRECTIONS[name] for name in cfg.objectives]


def open_study(params: Params, sampler: str | None = None, storage: str | optuna.storages.BaseStorage | None = None,
               study_name: str | None = None, seed: int | None = None) -> optuna.Study:
    """Create or resume (``load_if_exists``) the study; finished trials are never touched."""
    cfg = params.search
    name = study_name or cfg.study_name
    url = storage if storage is not None else storage_url(cfg)
    store = make_storage(url) if isinstance(url, str) else url
    wanted = directions(cfg)
    try:
        existing = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        existing = None
    if existing is not None and [d.name.lower() for d in existing.directions] != wanted:
        got = [d.name.lower() for d in existing.directions]
        raise ParamsError(f"search.study_name: study {name!r} in {display_url(url) if isinstance(url, str) else 'storage'} "
                          f"optimizes {got}, but search.objectives {list(cfg.objectives)} needs {wanted}; "
                          "pick another search.study_name")
    # A resumed study must not replay the first run's random draws: offset the seed by the
    # number of trials already in the study (still deterministic given the history).
    base_seed = params.seed if seed is None else seed
    offset = len(existing.get_trials(deepcopy=False)) if existing is not None else 0
    study = optuna.create_study(study_name=name, storage=store, directions=wanted, load_if_exists=True,
                                sampler=make_sampler(sampler or cfg.sampler, base_seed + offset))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(cfg.objectives))
    return study


# --- the space ----------------------------------------------------------------------------------

def suggest(trial: optuna.Trial, space: dict[str, SearchDimension]) -> dict[str, Any]:
    """One value per dotted key, named as the key (so Optuna's params are params.yaml keys)."""
    values: dict[str, Any] = {}
    for key, dim in space.items():
        if dim.type == "categorical":
            values[key] = trial.suggest_categorical(key, list(dim.choices))
        elif dim.type == "int":
            step = int(dim.step) if dim.step else 1
            values[key] = trial.suggest_int(key, int(dim.low), int(dim.high), step=step, log=dim.log)
        else:
            values[key] = trial.suggest_float(key, dim.low, dim.high, step=dim.step, log=dim.log)
    return values


def trial_overrides(params: Params, sampled: dict[str, Any]) -> dict[str, Any]:
    """Everything a trial changes in params: the sampled values plus its epoch budget."""
    out = {key: getattr(params.search, attr) for key, attr in EPOCH_KEYS.items()}
    out.update(sampled)
    return out


# --- constraints --------------------------------------------------------------------------------

def constraint_values(metrics: dict[str, float], teacher_accuracy: float, cfg: SearchConfig) -> dict[str, float]:
    """Named constraint values; the trial is feasible when every one is <= 0."""
    out = {"accuracy": 100.0 * (teacher_accuracy - metrics["accuracy"]) - cfg.max_accuracy_drop}
    if cfg.max_latency_ms is not None:
        out["latency_ms"] = metrics["latency_ms_p50"] - cfg.max_latency_ms
    if cfg.min_speedup is not None:
        out["speedup"] = cfg.min_speedup - metrics["speedup_vs_teacher"]
    return out


def is_feasible(constraints: dict[str, float]) -> bool:
    return all(value <= 0.0 for value in constraints.values())


# --- one trial ----------------------------------------------------------------------------------

def state_hash(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        if isinstance(tensor, torch.Tensor):
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def context_fingerprint(params: Params, teacher_hash: str, set_keys: list[str]) -> str:
    """Hash of what a trial's result depends on besides the keys it sets itself."""
    raw = params.model_dump()
    raw.pop("tracking", None)
    raw["search"] = {k: raw["search"][k] for k in _CONTEXT_SEARCH_KEYS}
    for key in set_keys:
        section, _, name = key.partition(".")
        raw.get(section, {}).pop(name, None)
    raw["teacher_weights"] = teacher_hash
    blob = json.dumps(raw, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class Baseline:
    """What every trial of one search process shares: the teacher, its accuracy and cached logits."""

    ctx: Context
    teacher: nn.Module
    teacher_accuracy: float
    cached_logits: Any
    teacher_hash: str

    @classmethod
    def build(cls, ctx: Context, teacher: nn.Module) -> "Baseline":
        teacher = teacher.cpu().eval()
        logits = with_teacher_logits(teacher, ctx.data.train, ctx.device) if ctx.params.distill.cache_teacher_logits \
            else None
        teacher = teacher.cpu().eval()
        return cls(ctx, teacher, ctx.accuracy(teacher), logits, state_hash(teacher))

    def trial_context(self, params: Params) -> Context:
        ctx = Context(params)
        base = self.ctx.params
        if params.data == base.data and params.seed == base.seed:
            ctx.__dict__["data"] = self.ctx.data  # same split: share it (cached_property slot)
        return ctx

    def logits_for(self, params: Params) -> Any:
        same = params.data == self.ctx.params.data and params.seed == self.ctx.params.seed
        return self.cached_logits if same else None


def measure_latency(ctx: Context, teacher: nn.Module, model: nn.Module) -> dict[str, Any]:
    """The trial's model on every ``benchmark.runtimes`` entry, interleaved with the teacher
    (eager, the reference of ``speedup_vs_teacher``), at ``benchmark.batch_size``. Reported
    latency is the fastest runtime's p50, as in ``compile_benchmark``'s ``best_latency_ms_p50``."""
    import torch._dynamo

    cfg = ctx.params.benchmark
    set_threads(cfg.num_threads)
    torch._dynamo.reset()  # one process compiles many models: never hit dynamo's recompile limit
    example = ctx.example(cfg.batch_size)
    settings = CompileSettings.of(cfg)
    warm_compilers(cfg.runtimes, settings)  # once per process, as in compile_benchmark
    variants = {("teacher", "eager"): compile_for(teacher, "eager", example)}
    for runtime in cfg.runtimes:
        variants[("trial", runtime)] = compile_for(model, runtime, example, settings=settings)
    errors = {rt: c.error for (who, rt), c in variants.items() if c.error}
    # deploy targets (ort-*, ov-*, aoti) and bf16 rows on CPUs without bf16 are not timed per trial
    runnable = {key: (lambda c=c: c.fn(example)) for key, c in variants.items()
                if c.error is None and not c.skipped}
    if not any(who == "trial" for who, _ in runnable):
        raise RuntimeError(f"no runtime could run the model: {errors}")
    timings = time_interleaved(runnable, cfg.warmup, cfg.iters)
    ref = timings[("teacher", "eager")].p50_ms
    mine = {rt: lat for (who, rt), lat in timings.items() if who == "trial"}
    best_rt = min(mine, key=lambda rt: mine[rt].p50_ms)
    out: dict[str, Any] = {
        "latency_ms_p50": mine[best_rt].p50_ms,
        "latency_ms_p90": mine[best_rt].p90_ms,
        "speedup_vs_teacher": ref / mine[best_rt].p50_ms,
        "teacher_latency_ms_p50": ref,
        "best_runtime": best_rt,
        "compile_time_s": max((c.compile_time_s for key, c in variants.items()
                               if key[0] == "trial" and key in runnable), default=0.0),
    }
    for rt, lat in mine.items():
        out[f"{rt}.latency_ms_p50"] = lat.p50_ms
    if errors:
        out["runtime_errors"] = errors
    return out


def run_chain(baseline: Baseline, params: Params) -> dict[str, Any]:
    """distill -> prune -> quantize -> benchmark for one params set; the metrics of its final model."""
    ctx = baseline.trial_context(params)
    clock = time.perf_counter()
    distilled = distill_student(ctx, baseline.teacher, epochs=params.distill.epochs, compare_without_kd=False,
                                cached_logits=baseline.logits_for(params))
    baseline.teacher.cpu().eval()
    timings = {"time_distill_s": time.perf_counter() - clock}
    clock = time.perf_counter()
    pruned = prune_student(ctx, distilled.student, finetune_epochs=params.prune.finetune_epochs)
    timings["time_prune_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    final, qmetrics = quantize_model(ctx, pruned.model)
    timings["time_quantize_s"] = time.perf_counter() - clock
    metrics: dict[str, Any] = {
        "accuracy": qmetrics["accuracy"],
        "accuracy_distilled": distilled.metrics["accuracy"],
        "accuracy_pruned": pruned.metrics["accuracy"],
        "size_mb": qmetrics["size_mb"],
        "num_params": qmetrics["num_params"],
        "sparsity": qmetrics["sparsity"],
    }
    if not math.isfinite(metrics["accuracy"]):
        raise FloatingPointError(f"accuracy is {metrics['accuracy']}")
    clock = time.perf_counter()
    metrics.update(measure_latency(ctx, baseline.teacher, final))
    timings["time_benchmark_s"] = time.perf_counter() - clock
    metrics.update(timings)
    metrics["accuracy_drop_vs_teacher"] = 100.0 * (baseline.teacher_accuracy - metrics["accuracy"])
    return metrics


def error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


class Objective:
    """The Optuna objective: one nested MLflow run per trial, failures recorded with their reason."""

    def __init__(self, params: Params, baseline: Baseline, run: tracking.Run,
                 chain: Callable[[Baseline, Params], dict[str, Any]] = run_chain) -> None:
        self.params = params
        self.baseline = baseline
        self.run = run
        self.chain = chain
        self.set_keys = list(dict.fromkeys([*EPOCH_KEYS, *params.search.space]))
        self.context = context_fingerprint(params, baseline.teacher_hash, self.set_keys)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        cfg = self.params.search
        trial.set_user_attr("context", self.context)
        tags = {"optuna.study": trial.study.study_name, "optuna.trial": trial.number, "search.context": self.context}
        with tracking.child_run(self.run, f"trial {trial.number}", tags) as child:
            started = time.perf_counter()
            try:
                sampled = suggest(trial, cfg.space)
                overrides = trial_overrides(self.params, sampled)
                trial.set_user_attr("overrides", overrides)
                child.log_params(overrides)
                try:
                    trial_params = self.params.with_overrides(overrides)
                except ParamsError as exc:
                    raise ValueError(f"invalid combination: {exc}") from None
                metrics = self.chain(self.baseline, trial_params)
                values = tuple(float(metrics[name]) for name in cfg.objectives)
                bad = [n for n, v in zip(cfg.objectives, values) if not math.isfinite(v)]
                if bad:
                    raise FloatingPointError(f"objective {bad[0]} is not finite")
                constraints = constraint_values(metrics, self.baseline.teacher_accuracy, cfg)
                bad = [n for n, v in constraints.items() if not math.isfinite(v)]
                if bad:
                    raise FloatingPointError(f"constraint {bad[0]} is not finite")
            except Exception as exc:
                reason = error_line(exc)
                trial.set_user_attr("fail_reason", reason)
                child.set_tags({"state": "FAIL", "fail_reason": reason})
                child.log_metrics({"duration_s": time.perf_counter() - started})
                print(f"[search] trial {trial.number} failed: {reason}", flush=True)
                raise
            for name, value in constraints.items():
                trial.set_constraint(name, value)
            feasible = is_feasible(constraints)
            trial.set_user_attr("metrics", _plain(metrics))
            trial.set_user_attr("feasible", feasible)
            trial.set_user_attr("mlflow_run_id", child.run_id or "")
            child.log_metrics({**{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                               **{f"constraint.{k}": v for k, v in constraints.items()},
                               "feasible": float(feasible), "duration_s": time.perf_counter() - started})
            child.set_tags({"state": "COMPLETE", "feasible": feasible, "best_runtime": metrics["best_runtime"]})
            print(f"[search] trial {trial.number}: accuracy {metrics['accuracy']:.4f} "
                  f"latency {metrics['latency_ms_p50']:.3f} ms ({metrics['best_runtime']}) "
                  f"speedup {metrics['speedup_vs_teacher']:.2f}x feasible={feasible} "
                  f"[{time.perf_counter() - started:.1f}s]", flush=True)
            return values


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


# --- reading a study --------------------------------------------------------------------------

def _dominates(a: list[float], b: list[float], dirs: list[str]) -> bool:
    signed_a = [v if d == "minimize" else -v for v, d in zip(a, dirs)]
    signed_b = [v if d == "minimize" else -v for v, d in zip(b, dirs)]
    return all(x <= y for x, y in zip(signed_a, signed_b)) and any(x < y for x, y in zip(signed_a, signed_b))


def feasible_front(trials: list[FrozenTrial], dirs: list[str]) -> list[FrozenTrial]:
    """Non-dominated feasible trials, by trial number."""
    feasible = [t for t in trials if t.state == TrialState.COMPLETE and is_feasible(t.constraints)]
    front = [t for t in feasible if not any(_dominates(o.values, t.values, dirs) for o in feasible if o is not t)]
    return sorted(front, key=lambda t: t.number)


def pick_best(trials: list[FrozenTrial]) -> FrozenTrial | None:
    """:data:`SELECTION_RULE` over the feasible trials."""
    feasible = [t for t in trials if t.state == TrialState.COMPLETE and is_feasible(t.constraints)]
    if not feasible:
        return None
    return min(feasible, key=lambda t: (-t.user_attrs["metrics"]["accuracy"],
                                        t.user_attrs["metrics"]["latency_ms_p50"], t.number))


def trial_record(t: FrozenTrial) -> dict[str, Any]:
    return {"number": t.number, "params": dict(t.params), "overrides": t.user_attrs.get("overrides", {}),
            "values": list(t.values), "constraints": dict(t.constraints),
            "metrics": t.user_attrs.get("metrics", {}), "mlflow_run_id": t.user_attrs.get("mlflow_run_id", "")}


def first_feasible(trials: list[FrozenTrial]) -> int | None:
    """1-based position of the first feasible trial in order of trial number (None if none)."""
    for i, t in enumerate(sorted(trials, key=lambda t: t.number), start=1):
        if t.state == TrialState.COMPLETE and is_feasible(t.constraints):
            return i
    return None


def hypervolume(front: list[FrozenTrial], dirs: list[str], reference: list[float]) -> float:
    """Hypervolume of ``front`` against ``reference`` (in objective units), maximized objectives
    negated so that every axis is minimized (Optuna's own WFG implementation)."""
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    if not front:
        return 0.0
    sign = np.array([1.0 if d == "minimize" else -1.0 for d in dirs])
    points = np.array([t.values for t in front], dtype=float) * sign
    ref = np.array(reference, dtype=float) * sign
    points = points[(points < ref).all(axis=1)]
    return float(compute_hypervolume(points, ref)) if len(points) else 0.0


# --- outputs ------------------------------------------------------------------------------------

def best_params_yaml(best: FrozenTrial, study_name: str) -> str:
    metrics = best.user_attrs.get("metrics", {})
    lines = [
        f"# Chosen by the search (study {study_name!r}, trial {best.number}).",
        f"# Rule: {SELECTION_RULE}.",
        f"# Trial metrics: accuracy {metrics.get('accuracy', float('nan')):.4f}, "
        f"latency_ms_p50 {metrics.get('latency_ms_p50', float('nan')):.3f} ({metrics.get('best_runtime', '?')}), "
        f"speedup_vs_teacher {metrics.get('speedup_vs_teacher', float('nan')):.2f}, "
        f"size_mb {metrics.get('size_mb', float('nan')):.4f}.",
        "# Every key is a dotted params.yaml key; `make promote` writes them into params.yaml.",
    ]
    import yaml

    body = yaml.safe_dump(dict(sorted(best.user_attrs["overrides"].items())), sort_keys=False,
                          default_flow_style=False)
    return "\n".join(lines) + "\n" + body


@dataclass
class SearchOutcome:
    study: optuna.Study
    trials: list[FrozenTrial]
    front: list[FrozenTrial]
    best: FrozenTrial | None
    counts: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def summarize(study: optuna.Study, context: str | None) -> SearchOutcome:
    all_trials = [t for t in study.get_trials(deepcopy=False)
                  if context is None or t.user_attrs.get("context") == context]
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    dirs = [d.name.lower() for d in study.directions]
    front = feasible_front(complete, dirs)
    counts = {
        "trials": len(all_trials),
        "complete": len(complete),
        "failed": sum(t.state == TrialState.FAIL for t in all_trials),
        "feasible": sum(is_feasible(t.constraints) for t in complete),
        "front": len(front),
    }
    return SearchOutcome(study, complete, front, pick_best(complete), counts)


def write_outputs(outcome: SearchOutcome, out_dir: Path, objectives: list[str],
                  meta: dict[str, Any] | None = None) -> list[Path]:
    """``pareto.json``, ``best_params.yaml`` (when any trial is feasible), Pareto-front and
    parameter-importance plots (HTML + PNG)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = outcome.study
    files = [write_json(out_dir / "pareto.json", {
        "study": study.study_name,
        **(meta or {}),
        "objectives": {name: DIRECTIONS[name] for name in objectives},
        "selection_rule": SELECTION_RULE,
        "best_trial": outcome.best.number if outcome.best else None,
        "counts": outcome.counts,
        "trials": [trial_record(t) for t in outcome.front],
    })]
    best_path = out_dir / "best_params.yaml"
    if outcome.best is not None:
        files.append(write_text(best_path, best_params_yaml(outcome.best, study.study_name)))
    else:
        best_path.unlink(missing_ok=True)
    files += write_plots(outcome, out_dir, objectives)
    return files


def _view(outcome: SearchOutcome) -> optuna.Study:
    """An in-memory study holding only this context's completed trials (what the plots show)."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" line
    try:
        view = optuna.create_study(directions=[d.name.lower() for d in outcome.study.directions])
    finally:
        optuna.logging.set_verbosity(level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if outcome.study.metric_names:
            view.set_metric_names(outcome.study.metric_names)
    view.add_trials(outcome.trials)
    return view


def write_plots(outcome: SearchOutcome, out_dir: Path, objectives: list[str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    files: list[Path] = []
    if not outcome.trials:
        return files
    view = _view(outcome)
    plots: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "pareto_front": (lambda: ovm.plot_pareto_front(view, target_names=objectives),
                         lambda: optuna.visualization.plot_pareto_front(view, target_names=objectives)),
    }
    if len(outcome.trials) >= 2 and outcome.study.directions:
        def first(t: FrozenTrial) -> float:
            return t.values[0]

        # fANOVA: share of the variance of the first objective explained by each parameter
        # (direction-agnostic, unlike PED-ANOVA which ranks for *low* values).
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        plots["param_importances"] = (
            lambda: ovm.plot_param_importances(view, evaluator, target=first, target_name=objectives[0]),
            lambda: optuna.visualization.plot_param_importances(view, evaluator, target=first,
                                                                 target_name=objectives[0]),
        )
    for name, (mpl_plot, plotly_plot) in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = mpl_plot()
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(8, 5.5)
            fig.tight_layout()
            png = out_dir / f"{name}.png"
            atomic_write(png, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=110))
            plt.close(fig)
            html = plotly_plot().to_html(include_plotlyjs=True, full_html=True)  # interactive, self-contained
            files += [png, write_text(out_dir / f"{name}.html", html)]
        except Exception as exc:  # noqa: BLE001 - a plot that cannot be drawn must not lose the study
            print(f"[search] plot {name} skipped: {error_line(exc)}", flush=True)
    return files


# --- the whole search ---------------------------------------------------------------------------

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
