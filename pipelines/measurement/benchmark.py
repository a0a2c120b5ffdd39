"""The one benchmarking routine: every (model, runtime, batch size) of a comparison, each compiled
variant checked, all timed side by side (:mod:`.timing`), ratios against a reference measured in
the same loop.

Every compiled variant is checked: it must have compiled graphs of its own (dynamo silently
reuses or skips code otherwise, see :func:`benchmark_models`) and agree with the eager output.
Deploy targets (:mod:`pipelines.measurement.deploy`) are built once per model, checked the same
way (fp32 ones tightly; int8 and bf16 ones are judged by accuracy) and timed in the same loop;
with a test split, every row's accuracy is measured in its own runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Collection
from typing import Any

import torch
from torch import nn

from pipelines.core.errors import error_line
from pipelines.core.kinds import is_quantized
from pipelines.measurement.accuracy import runtime_accuracy
from pipelines.measurement.compile import Compiled, CompileSettings, cold_cache_root, compile_for, warm_compilers
from pipelines.measurement.deploy import Deployer, exact, import_libraries, per_batch
from pipelines.measurement.graphs import GraphReport, explain_graphs
from pipelines.measurement.kernels import kernel_profile
from pipelines.measurement.runtimes import Runtime, expand_runtimes, parse_runtime, runtimes_for, serving_note
from pipelines.measurement.timing import Latency, NoiseLimits, measure


def _tolerance(rt: Runtime, quantized: bool, scale: float) -> float:
    rel = 5e-2 if (rt.amp is not None or quantized) else 1e-3
    return rel * (1.0 + scale)


def _check(comp: Compiled, rt: Runtime, report: GraphReport | None, reference: torch.Tensor,
           example: torch.Tensor, quantized: bool, enforce: bool = True) -> float | None:
    """Sets ``comp.error`` when the compiled variant did not really compile its own code, or
    disagrees with eager (only when ``enforce``: deploy rows that quantize or run bf16 are judged
    by their measured accuracy); returns the max abs difference to the eager output."""
    if report is not None and report.graphs > 0 and comp.graphs == 0:
        comp.error = ("no graph compiled for this variant: dynamo reused another variant's code or "
                      "fell back to eager (recompile limit?)")
        return None
    try:
        with torch.inference_mode():
            out = comp.fn(example)
        diff = float((out.float().cpu() - reference.float()).abs().max())
    except Exception as exc:  # noqa: BLE001
        comp.error = f"compiled model fails on its input: {error_line(exc)}"
        return None
    tol = _tolerance(rt, quantized, float(reference.float().abs().max()))
    if enforce and not diff <= tol:
        comp.error = f"compiled output differs from eager: max abs diff {diff:.3g} > {tol:.3g}"
    return diff


@dataclass
class DeployInputs:
    """What the deploy targets and per-runtime accuracy need beyond the models: a
    :class:`~pipelines.measurement.deploy.Deployer`, each int8 model's fp32 source
    (``{"quantized": "pruned"}``) and the test split (images, labels) every row's accuracy is
    measured on, in that row's runtime."""

    deployer: Deployer | None = None
    sources: dict[str, str] = field(default_factory=dict)
    test: tuple[torch.Tensor, torch.Tensor] | None = None
    # a source's float model as the int8 model was really quantized from, when that is not the chain
    # model of its name (the quantize stage's range fixes): {name: (model, what was done to it)}
    fixed_sources: dict[str, tuple[nn.Module, str]] = field(default_factory=dict)


def benchmark_models(models: dict[str, nn.Module], examples: dict[int, torch.Tensor],
                     runtimes: list[str] | dict[str, list[str]],
                     warmup: int, iters: int, reference: str | None = None,
                     amp: list[str] | None = None,
                     settings: CompileSettings = CompileSettings(),
                     noise: NoiseLimits = NoiseLimits(),
                     deploy: DeployInputs | None = None,
                     kernels: Collection[str] = ()) -> list[dict[str, Any]]:
    """One row per (model, runtime, batch_size). All variants at one batch size are timed
    together, in rotating blocks (:func:`~pipelines.measurement.timing.measure`, schedule from
    ``noise``); ``speedup_vs_teacher`` is the ``reference`` model's eager latency over the
    row's: the median of the per-round ratios, the point of the interval it comes with
    (:class:`~pipelines.core.stats.LatencyRatio`). ``amp`` (default: what the GPU supports, none on
    CPU) adds autocast rows for float models.
    ``runtimes`` is one list for every model or ``{model: its runtimes}`` (the search times the
    teacher on eager only, the reference of the speedup).
    Each batch size's loop is watched for disturbance (:func:`~pipelines.measurement.timing.measure`):
    re-measured while disturbed, and its rows say ``noisy`` when even the quietest attempt was.
    ``deploy``: builds the deploy targets (once per model, reused at every batch size) and
    measures each row's accuracy in its own runtime. ``kernels``: after timing, profile every
    PyTorch CPU row of these models once (:func:`~pipelines.measurement.kernels.kernel_profile`): ``kernel_ms`` is
    its compute kernels' share of a call, ``p50_over_kernel`` a p50 of the row timed alone right
    before its profile over it (what the rest costs on top, from one moment).

    Dynamo keeps one code cache per Python function, shared by every instance of a class and by
    every ``torch.compile`` of it, and ``explain()`` wipes it. So: explain every model first;
    then, per batch size, reset dynamo and compile a fresh set, and check that each compiled
    variant produced graphs of its own and matches eager before it is timed."""
    import torch._dynamo

    deploy = deploy or DeployInputs()
    wanted = runtimes if isinstance(runtimes, dict) else dict.fromkeys(models, runtimes)
    per_model = {name: runtimes_for(model, expand_runtimes(wanted[name], amp)) for name, model in models.items()}
    quantized = {name: is_quantized(model) for name, model in models.items()}
    reports: dict[str, GraphReport | None] = {}
    explain_notes: dict[str, str] = {}
    first = examples[min(examples)]
    for name, model in models.items():
        if any(parse_runtime(r).mode for r in per_model[name]):
            try:
                reports[name] = explain_graphs(model, first)
            except Exception as exc:  # noqa: BLE001 - recorded with the rows below
                reports[name] = None
                explain_notes[name] = f"graph breaks unknown, explain failed: {error_line(exc)}"
    with cold_cache_root():
        try:
            warm_compilers((r for rs in per_model.values() for r in rs), settings)
            import_libraries([r for rs in per_model.values() for r in rs])
            return _measure(models, examples, per_model, quantized, reports, explain_notes, warmup, iters, reference,
                            settings, noise, deploy, kernels)
        finally:
            torch._dynamo.reset()


def _deployed(deploy: DeployInputs, models: dict[str, nn.Module], name: str, runtime: str,
              example: torch.Tensor, quantized: bool) -> Compiled:
    """A deploy target as a :class:`Compiled` variant (built by ``deploy.deployer``)."""
    if deploy.deployer is None:
        return Compiled(None, float("nan"), error="deploy targets need a Deployer (benchmark_models(deploy=...))")
    source = deploy.sources.get(name)
    fixed, how = deploy.fixed_sources.get(source, (None, ""))
    source_model = fixed if fixed is not None else models.get(source)
    built = deploy.deployer.build(runtime, name, models[name], example, int8_model=quantized,
                                  source=(source, source_model) if source_model is not None else None)
    note = "; ".join(n for n in (built.note, f"{source} {how}" if how and quantized and built.fn else "") if n)
    return Compiled(built.fn, built.convert_s, note=note, error=built.error or None, skipped=built.skipped,
                    artifact=built.artifact, artifact_mb=built.artifact_mb)


def _measure(models, examples, per_model, quantized, reports, explain_notes, warmup, iters,
             reference, settings, noise, deploy, kernels=()) -> list[dict[str, Any]]:
    import torch._dynamo

    rows: list[dict[str, Any]] = []
    built: dict[tuple, Compiled] = {}  # deploy targets serve every batch size (per_batch ones: one each)
    for batch_size, example in examples.items():
        torch._dynamo.reset()
        variants: dict[tuple[str, str], Compiled] = {}
        diffs: dict[tuple[str, str], float | None] = {}
        accuracy: dict[tuple[str, str], float] = {}
        for name, model in models.items():
            try:
                with torch.inference_mode():
                    eager_out = model(example)
            except Exception as exc:  # noqa: BLE001 - a model that cannot run is a row, not a crash
                for runtime in per_model[name]:
                    variants[(name, runtime)] = Compiled(model, float("nan"), error=error_line(exc))
                continue
            for runtime in per_model[name]:
                rt = parse_runtime(runtime)
                if rt.deploy:
                    key = (name, runtime, batch_size) if per_batch(runtime, quantized[name]) else (name, runtime)
                    if key not in built:
                        built[key] = _deployed(deploy, models, name, runtime, example, quantized[name])
                    comp = built[key]
                else:
                    comp = compile_for(model, runtime, example, reports.get(name), settings)
                if comp.error is None and not comp.skipped:
                    if rt.mode is not None or rt.amp is not None or rt.deploy:
                        diffs[(name, runtime)] = _check(comp, rt, None if rt.deploy else reports.get(name), eager_out,
                                                        example.to(comp.device), quantized[name],
                                                        enforce=not rt.deploy or exact(runtime, quantized[name]))
                    if deploy.test is not None and comp.error is None:
                        accuracy[(name, runtime)] = runtime_accuracy(comp.fn, *deploy.test, batch_size, comp.device)
                variants[(name, runtime)] = comp
        inputs = {dev: example.to(dev) for dev in {c.device for c in variants.values()}}
        runnable = {key: (lambda c=c, x=inputs[c.device]: c.fn(x)) for key, c in variants.items()
                    if c.error is None and not c.skipped}
        measured = measure(runnable, warmup, iters, noise) if runnable else None
        timings = measured.timings if measured else {}
        ref = timings.get((reference, "eager")) if reference else None
        for (name, runtime), comp in variants.items():
            rt = parse_runtime(runtime)
            report = None if rt.deploy else reports.get(name)
            row: dict[str, Any] = {
                "model": name, "runtime": runtime, "batch_size": batch_size, "device": comp.device,
                "compile_time_s": comp.compile_time_s, "wrapper": comp.wrapper, "call": comp.call,
                "graphs": comp.graphs if rt.mode else "",
                "graph_breaks": (report.graph_breaks if report else "") if rt.mode else 0,
                "break_reasons": " | ".join(report.reasons) if (report and rt.mode) else "",
                "max_abs_diff_vs_eager": diffs.get((name, runtime), ""),
                "note": "; ".join(n for n in (comp.note, explain_notes.get(name, "") if rt.mode else "",
                                              serving_note(rt, comp.fn, batch_size) if comp.fn else "") if n),
                "error": comp.error or "",
                "skipped": comp.skipped,
                "artifact": comp.artifact, "artifact_mb": comp.artifact_mb,
            }
            if (name, runtime) in accuracy:
                row["accuracy"] = accuracy[(name, runtime)]
            lat = timings.get((name, runtime))
            if lat is not None:
                p50_low, p50_high = lat.p50_interval
                row.update(latency_ms_p50=lat.p50_ms, latency_ms_p50_ci_low=p50_low, latency_ms_p50_ci_high=p50_high,
                           latency_ms_p90=lat.p90_ms, latency_rounds_ms=list(lat.rounds),
                           throughput_sps=lat.throughput(batch_size), noisy=measured.noisy,
                           other_cpu=measured.disturbance.other_cpu, p90_over_p50=lat.p90_ms / lat.p50_ms,
                           timing_attempts=measured.attempts, remeasured_rounds=measured.remeasured,
                           speed_change=measured.disturbance.speed_change,
                           phase_slowdown=measured.slowdown,
                           disturbance=measured.disturbance.describe())
                if slow_phase := measured.phase_note(noise):
                    row["note"] = "; ".join(n for n in (row["note"], slow_phase) if n)
                if measured.speed is not None:
                    row.update(ref_int8_ms=measured.speed.int8_ms, ref_fp32_ms=measured.speed.fp32_ms)
                if ref is not None:
                    row.update(speedup_fields(ref, lat))
                if name in kernels and (not rt.deploy or runtime in ("aoti", "ts-int8")) and comp.device == "cpu":
                    prof = kernel_profile(runnable[(name, runtime)], iters=max(5, min(iters, 20)),
                                          timed_iters=max(20, iters // 2))
                    row.update(kernel_ms=prof.kernel_ms, kernel_source=prof.source,
                               p50_over_kernel=prof.overhead_ratio())
            rows.append(row)
    return rows


def speedup_fields(reference: Latency, latency: Latency) -> dict[str, float]:
    """``speedup_vs_teacher`` and its 95% interval: ``reference`` over ``latency`` per round of the
    measurement that timed both (:meth:`Latency.ratio`), the point being the median of those
    ratios, so it lies inside its own interval (a ratio of the two pooled p50s need not: drift
    moves pooled medians, not paired ratios)."""
    speedup = reference.ratio(latency)
    return {"speedup_vs_teacher": speedup.ratio, "speedup_vs_teacher_ci_low": speedup.low,
            "speedup_vs_teacher_ci_high": speedup.high}


def machine_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The machine's speed while the rows were timed, on the fixed reference workload
    (:mod:`pipelines.measurement.speed`): median ``ref_int8_ms`` / ``ref_fp32_ms`` over the
    measurements, the worst ``speed_change`` (how far a round ran off its measurement's typical
    speed) and the worst ``phase_slowdown`` (how much slower than the process's usual speed a
    measurement was timed), as ``machine.*`` metrics, so two runs on a machine in different phases are told apart
    from two different models."""
    import statistics

    out: dict[str, float] = {}
    for key in ("ref_int8_ms", "ref_fp32_ms"):
        values = [r[key] for r in rows if isinstance(r.get(key), float)]
        if values:
            out[f"machine.{key}"] = statistics.median(values)
    for key in ("speed_change", "phase_slowdown"):  # the worst round off its measurement; the slowest phase timed in
        values = [r[key] for r in rows if isinstance(r.get(key), float)]
        if values:
            out[f"machine.{key}"] = max(values)
    return out
