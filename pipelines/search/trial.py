"""One trial: the chain distill -> prune -> quantize -> benchmark for one params set, and the
Optuna objective that runs it inside a nested MLflow run."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from torch import nn

from pipelines import tracking
from pipelines.compression.distill import with_teacher_logits
from pipelines.core.config import Params
from pipelines.core.errors import ParamsError
from pipelines.core.errors import error_line
from pipelines.measurement.compile import CompileSettings, compile_for, warm_compilers
from pipelines.measurement.timing import NoiseLimits, measure, set_threads
from pipelines.search.constraints import constraint_values, is_feasible
from pipelines.search.space import EPOCH_KEYS, suggest, trial_overrides
from pipelines.training.context import Context
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
    runnable = {key: (lambda c=c: c.fn(example)) for key, c in variants.items() if c.error is None}
    if not any(who == "trial" for who, _ in runnable):
        raise RuntimeError(f"no runtime could run the model: {errors}")
    measured = measure(runnable, cfg.warmup, cfg.iters, NoiseLimits.of(cfg))
    timings = measured.timings
    ref = timings[("teacher", "eager")].p50_ms
    mine = {rt: lat for (who, rt), lat in timings.items() if who == "trial"}
    best_rt = min(mine, key=lambda rt: mine[rt].p50_ms)
    out: dict[str, Any] = {
        "latency_ms_p50": mine[best_rt].p50_ms,
        "latency_ms_p90": mine[best_rt].p90_ms,
        "speedup_vs_teacher": ref / mine[best_rt].p50_ms,
        "teacher_latency_ms_p50": ref,
        "best_runtime": best_rt,
        "noisy": measured.noisy,
        "other_cpu": measured.disturbance.other_cpu,
        "compile_time_s": max((c.compile_time_s for (who, _), c in variants.items()
                               if who == "trial" and c.error is None), default=0.0),
    }
    for rt, lat in mine.items():
        out[f"{rt}.latency_ms_p50"] = lat.p50_ms
    if errors:
        out["runtime_errors"] = errors
    return out


def run_chain(baseline: Baseline, params: Params) -> dict[str, Any]:
    """distill -> prune -> quantize -> benchmark for one params set; the metrics of its final model."""
    ctx = baseline.ctx.derive(params)
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
            child.set_tags({"state": "COMPLETE", "feasible": feasible, "best_runtime": metrics["best_runtime"],
                            "noisy": metrics["noisy"]})
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
