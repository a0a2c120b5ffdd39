"""One trial: the chain distill -> prune -> quantize -> benchmark for one params set, and the
Optuna objective that runs it inside a nested MLflow run."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.trial import TrialState
from torch import nn

from pipelines import tracking
from pipelines.compression.distill import caches_teacher_logits, with_teacher_logits
from pipelines.core.config import FASTEST, Params
from pipelines.core.errors import ParamsError, error_line
from pipelines.engines import INT8_MODELS, architecture_signature, decided_engine
from pipelines.measurement.accuracy import with_intervals
from pipelines.measurement.benchmark import benchmark_models
from pipelines.measurement.comparison import judged_runtime, timed
from pipelines.measurement.compile import CompileSettings
from pipelines.measurement.runtimes import parse_runtime
from pipelines.measurement.timing import NoiseLimits, set_threads
from pipelines.core.decision import Limits, Result, accuracy_drop, constraint_values, is_feasible
from pipelines.core.stats import pack_outcomes
from pipelines.search.attrs import record_curve, record_overrides, record_result
from pipelines.search.current import ORIGIN
from pipelines.search.evidence import VAL_CORRECT, from_metrics
from pipelines.search.fidelity import Curve, Fidelity
from pipelines.search.space import suggest
from pipelines.training.context import Context
from pipelines.training.loop import EpochCallback
from pipelines.workflow import distill_student, prune_student, quantize_model

# search settings a trial's result depends on (the rest only steer the study)
_CONTEXT_SEARCH_KEYS = ("max_accuracy_drop", "max_latency_ms", "min_speedup", "objectives")


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
    """What every trial of one search process shares: the teacher, its accuracy on the validation
    split (what the accuracy constraint is relative to) and on the test split (reported only), and
    its cached logits."""

    ctx: Context
    teacher: nn.Module
    teacher_val_accuracy: float
    teacher_test_accuracy: float
    cached_logits: Any
    teacher_hash: str
    teacher_val_correct: tuple[bool, ...] = ()  # per validation image: what every trial is paired with
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)  # `auto`'s answer per architecture

    def choose_engine(self, ctx: Context, model: nn.Module) -> dict[str, Any]:
        """``quantize.engine: auto`` decided as the quantize stage decides it, with the same
        machine-wide record (:func:`~pipelines.engines.decided_engine`: both int8 engines timed
        side by side once per architecture signature and machine; the quantize stage's decision
        for the pipeline's configuration is the trial's), kept here per search process: the
        answer depends on the graph and the machine, not on the weights' values."""
        key = architecture_signature(ctx.params)
        if key in self.engines:
            return self.engines[key]
        choice = decided_engine(ctx, model)
        self.engines[key] = {k: v for k, v in choice.items() if k != INT8_MODELS}  # this model's int8 copies: not for the next
        return choice

    @classmethod
    def build(cls, ctx: Context, teacher: nn.Module) -> "Baseline":
        teacher = teacher.cpu().eval()
        logits = with_teacher_logits(teacher, ctx.data.train, ctx.device, workers=ctx.data.workers) \
            if caches_teacher_logits(ctx.params.distill.cache_teacher_logits, ctx.params.data.augment, ctx.data.train) \
            else None
        teacher = teacher.cpu().eval()
        val = tuple(ctx.correct(teacher, "val").tolist())
        return cls(ctx, teacher, sum(val) / len(val), ctx.accuracy(teacher, "test"), logits,
                   state_hash(teacher), val)

    def reference(self) -> Result:
        """The teacher as the decision rule's reference (its validation outcomes)."""
        return Result("teacher", self.teacher_val_accuracy, self.teacher_val_correct or None)

    def logits_for(self, params: Params) -> Any:
        same = params.data == self.ctx.params.data and params.seed == self.ctx.params.seed
        return self.cached_logits if same else None


def measure_latency(ctx: Context, teacher: nn.Module, model: nn.Module) -> dict[str, Any]:
    """The trial's model timed by :func:`benchmark_models` (the benchmark's own routine, output
    check included: a compiled variant that disagrees with eager does not count) at
    ``benchmark.batch_size``, interleaved with the teacher on eager (the reference of
    ``speedup_vs_teacher``). Runtimes: ``benchmark.deploy_runtime``, or every
    ``benchmark.runtimes`` entry for ``fastest``; the latency is the one of the runtime it is
    judged on (:func:`judged_runtime`, as in ``compile_benchmark``'s summary)."""
    cfg = ctx.params.benchmark
    set_threads(cfg.num_threads)
    # deploy targets (ort-*, ov-*, aoti) need the trial's fp32 source and a calibrated conversion:
    # trials time the PyTorch runtimes only
    runtimes = [r for r in cfg.runtimes if not parse_runtime(r).deploy] if cfg.deploy_runtime == FASTEST \
        else [cfg.deploy_runtime]
    rows = benchmark_models({"teacher": teacher, "trial": model}, {cfg.batch_size: ctx.example(cfg.batch_size)},
                            {"teacher": ["eager"], "trial": runtimes}, cfg.warmup, cfg.iters, reference="teacher",
                            settings=CompileSettings.of(cfg), noise=NoiseLimits.of(cfg))
    reference = next(r for r in rows if r["model"] == "teacher")
    if "latency_ms_p50" not in reference:
        raise RuntimeError(f"the teacher could not be timed: {reference['error']}")
    mine = {r["runtime"]: r for r in rows if r["model"] == "trial"}
    errors = {rt: r["error"] for rt, r in mine.items() if r["error"]}
    judged = judged_runtime({rt: timed(r) for rt, r in mine.items() if "latency_ms_p50" in r}, cfg.deploy_runtime)
    if judged is None:
        raise RuntimeError(f"no runtime could run the model: {errors}")
    best = mine[judged]
    out: dict[str, Any] = {
        "latency_ms_p50": best["latency_ms_p50"],
        "latency_ms_p90": best["latency_ms_p90"],
        "speedup_vs_teacher": best["speedup_vs_teacher"],
        **{k: best[k] for k in ("latency_ms_p50_ci_low", "latency_ms_p50_ci_high", "speedup_vs_teacher_ci_low",
                                "speedup_vs_teacher_ci_high") if k in best},
        "teacher_latency_ms_p50": reference["latency_ms_p50"],
        "best_runtime": judged,
        "noisy": bool(best.get("noisy")),
        "other_cpu": best.get("other_cpu", 0.0),
        "compile_time_s": max((r["compile_time_s"] for rt, r in mine.items() if rt != "eager" and not r["error"]),
                              default=0.0),
    }
    for rt, row in mine.items():
        if "latency_ms_p50" in row:
            out[f"{rt}.latency_ms_p50"] = row["latency_ms_p50"]
    if errors:
        out["runtime_errors"] = errors
    return out


def run_chain(baseline: Baseline, params: Params, after_epoch: EpochCallback | None = None) -> dict[str, Any]:
    """distill -> prune -> quantize -> benchmark for one params set; the metrics of its final
    model. ``after_epoch`` sees every training epoch of the chain (a pruner's report)."""
    ctx = baseline.ctx.derive(params, after_epoch=after_epoch)
    clock = time.perf_counter()
    distilled = distill_student(ctx, baseline.teacher, compare_without_kd=False,
                                cached_logits=baseline.logits_for(params))
    baseline.teacher.cpu().eval()
    timings = {"time_distill_s": time.perf_counter() - clock}
    clock = time.perf_counter()
    pruned = prune_student(ctx, distilled.student)
    timings["time_prune_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    final, qmetrics = quantize_model(ctx, pruned.model, choose=baseline.choose_engine)  # as the quantize stage
    timings["time_quantize_s"] = time.perf_counter() - clock
    val_correct = ctx.correct(final, "val").tolist()
    metrics: dict[str, Any] = {
        "val_accuracy": sum(val_correct) / len(val_correct),  # what the search optimizes and constrains
        VAL_CORRECT: pack_outcomes(val_correct),  # per image: paired comparisons with the teacher and other trials
        "accuracy": qmetrics["accuracy"],            # the test split: reported, never read by the search
        "val_accuracy_distilled": ctx.accuracy(distilled.student, "val"),
        "accuracy_distilled": distilled.metrics["accuracy"],
        "val_accuracy_pruned": ctx.accuracy(pruned.model, "val"),
        "accuracy_pruned": pruned.metrics["accuracy"],
        "size_mb": qmetrics["size_mb"],
        "num_params": qmetrics["num_params"],
        "sparsity": qmetrics["sparsity"],
        "engine": qmetrics.get("engine", ""),
    }
    if "engine_choice" in qmetrics:
        metrics["engine_why"] = qmetrics["engine_choice"].get("why", "")
    if not math.isfinite(metrics["val_accuracy"]):
        raise FloatingPointError(f"val_accuracy is {metrics['val_accuracy']}")
    clock = time.perf_counter()
    metrics.update(measure_latency(ctx, baseline.teacher, final))
    timings["time_benchmark_s"] = time.perf_counter() - clock
    metrics.update(timings)
    metrics["accuracy_drop_vs_teacher"] = 100.0 * (baseline.teacher_test_accuracy - metrics["accuracy"])
    metrics["val_accuracy_drop_vs_teacher"] = 100.0 * (baseline.teacher_val_accuracy - metrics["val_accuracy"])
    drop = accuracy_drop(from_metrics("trial", metrics), baseline.reference())
    if drop is not None:  # teacher - trial on the same validation images, in pp
        lo, hi = drop.interval
        metrics.update({"val_accuracy_drop_vs_teacher_ci_low": 100.0 * lo,
                        "val_accuracy_drop_vs_teacher_ci_high": 100.0 * hi,
                        "val_accuracy_drop_vs_teacher_p_value": drop.p_value,
                        "val_discordant_vs_teacher": drop.only_a + drop.only_b})
    metrics.update(with_intervals({"val_accuracy": metrics["val_accuracy"], "accuracy": metrics["accuracy"]},
                                  len(ctx.data.test), len(val_correct)))
    return metrics


class Objective:
    """The Optuna objective: one nested MLflow run per trial; failures recorded with their reason,
    pruned trials with the step they were stopped at.

    ``fidelity`` (the context's companion study, :mod:`pipelines.search.fidelity`) receives every
    epoch's validation accuracy and decides pruning; the trial of the current configuration
    (``origin: params.yaml``) reports but is never pruned, so the study always holds it."""

    def __init__(self, params: Params, baseline: Baseline, run: tracking.Run,
                 chain: Callable[..., dict[str, Any]] = run_chain, fidelity: Fidelity | None = None) -> None:
        self.params = params
        self.baseline = baseline
        self.run = run
        self.chain = chain
        self.fidelity = fidelity
        self.set_keys = list(params.search.space)
        self.context = context_fingerprint(params, baseline.teacher_hash, self.set_keys)
        self.completed = 0  # trials this process finished, and the reasons of those that failed
        self.failures: list[str] = []

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        cfg = self.params.search
        trial.set_user_attr("context", self.context)
        tags = {"optuna.study": trial.study.study_name, "optuna.trial": trial.number, "search.context": self.context}
        with tracking.child_run(self.run, f"trial {trial.number}", tags, stopped=(optuna.TrialPruned,)) as child:
            started = time.perf_counter()
            curve: Curve | None = None
            if self.fidelity is not None:
                curve = self.fidelity.curve(trial, may_prune=trial.user_attrs.get("origin") != ORIGIN,
                                            log=child.log_metrics)
            try:
                overrides = suggest(trial, cfg.space)
                record_overrides(trial, overrides)
                child.log_params(overrides)
                try:
                    trial_params = self.params.with_overrides(overrides)
                except ParamsError as exc:
                    raise ParamsError(f"invalid combination: {exc}") from None
                metrics = self.chain(self.baseline, trial_params, curve)
                values = tuple(float(metrics[name]) for name in cfg.objectives)
                bad = [n for n, v in zip(cfg.objectives, values) if not math.isfinite(v)]
                if bad:
                    raise FloatingPointError(f"objective {bad[0]} is not finite")
                limits = Limits(cfg.max_accuracy_drop, cfg.min_speedup, cfg.max_latency_ms)
                constraints = constraint_values(from_metrics(trial.number, metrics), self.baseline.reference(), limits)
                bad = [n for n, v in constraints.items() if not math.isfinite(v)]
                if bad:
                    raise FloatingPointError(f"constraint {bad[0]} is not finite")
            except optuna.TrialPruned as exc:
                step = curve.step if curve is not None else 0
                trial.set_user_attr("pruned_at_step", step)
                record_curve(trial, list(curve.values) if curve is not None else [])
                child.set_tags({"state": "PRUNED", "pruned_at_step": step, "pruned_reason": str(exc)})
                child.log_metrics({"pruned_at_step": step, "duration_s": time.perf_counter() - started})
                if curve is not None:
                    curve.finish(TrialState.PRUNED)
                print(f"[search] trial {trial.number} {exc} [{time.perf_counter() - started:.1f}s]", flush=True)
                raise
            except BaseException as exc:
                reason = error_line(exc)
                trial.set_user_attr("fail_reason", reason)
                self.failures.append(reason)
                child.set_tags({"state": "FAIL", "fail_reason": reason})
                child.log_metrics({"duration_s": time.perf_counter() - started})
                if curve is not None:
                    curve.finish(TrialState.FAIL)
                if isinstance(exc, Exception):
                    print(f"[search] trial {trial.number} failed: {reason}", flush=True)
                raise
            feasible = is_feasible(constraints)
            self.completed += 1
            record_result(trial, metrics, constraints, feasible, child.url)
            trial.set_user_attr("test_accuracy", metrics["accuracy"])  # reported only: never read by the search
            if curve is not None:
                record_curve(trial, list(curve.values))
                curve.finish(TrialState.COMPLETE, metrics["val_accuracy"])
            child.log_metrics({**{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                               **{f"constraint.{k}": v for k, v in constraints.items()},
                               "feasible": float(feasible), "duration_s": time.perf_counter() - started})
            child.set_tags({"state": "COMPLETE", "feasible": feasible, "best_runtime": metrics["best_runtime"],
                            "noisy": metrics["noisy"]})
            print(f"[search] trial {trial.number}: val accuracy {metrics['val_accuracy']:.4f} "
                  f"[{metrics.get('val_accuracy_ci_low', float('nan')):.4f}, "
                  f"{metrics.get('val_accuracy_ci_high', float('nan')):.4f}] "
                  f"(test {metrics['accuracy']:.4f}) latency {metrics['latency_ms_p50']:.3f} ms "
                  f"({metrics['best_runtime']}) speedup {metrics['speedup_vs_teacher']:.2f}x feasible={feasible} "
                  f"[{time.perf_counter() - started:.1f}s]", flush=True)
            return values
