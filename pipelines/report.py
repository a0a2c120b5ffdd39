"""The human-readable end of the chain: one table, one reading per technique, one plot.

Every number comes from this run's metrics files and ``reports/benchmark.csv`` (measured side
by side in ``compile_benchmark``); nothing here is estimated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.core.params_base import usable_threads
from pipelines.core.stats import PairedAccuracy
from pipelines.measurement.comparison import CHAIN
from pipelines.measurement.deploy import INT8_RUNTIMES
from pipelines.reporting.deploy import DEPLOY_MODEL, deploy_fields, deploy_section
from pipelines.reporting.intervals import (NOT_QUOTED, accuracy_metrics, accuracy_text, noisy_rows,
                                           paired_metrics, versus, with_ci)
from pipelines.reporting.intervals import fmt_num as _f
from pipelines.reporting.intervals import speed_text as _speed
from pipelines.reporting.search import search_section
from pipelines.reporting.sensitivity import WARNING_TAG, sensitivity_section

Outcomes = dict[str, tuple[bool, ...]]  # per chain model: right/wrong on each test image, in order

LABELS = {"teacher": "teacher (fp32)", "student": "distilled student", "pruned": "pruned student",
          "quantized": "quantized (final)"}


def noise_notice(rows: list[dict[str, Any]], params: Any) -> str | None:
    """In words, when this run's latency was disturbed: what the measurement saw, and that the
    speedups are therefore not quoted."""
    bad = noisy_rows(rows)
    if not bad:
        return None
    cfg = params.benchmark
    attempts = max(int(float(r.get("timing_attempts") or 1)) for r in bad)
    seen = "; ".join(dict.fromkeys(str(r["disturbance"]) for r in bad if r.get("disturbance")))
    if not seen:  # a table written before rows said what disturbed them
        spread = max(float(r.get("p90_over_p50") or 0) for r in bad)
        seen = f"the worst p90/p50 was {spread:.1f}"
    return (f"**Latency in this run is not to be trusted.** While `compile_benchmark` timed the models: {seen} "
            f"(limits: other processes {cfg.max_other_cpu:.0%}, p90/p50 of block medians {cfg.max_spread:.1f}, "
            f"speed change {cfg.max_speed_change:.2f}x), still after {attempts} "
            f"attempt{'s' if attempts != 1 else ''}: {len(bad)} of {len(rows)} rows are flagged `noisy` in "
            "`reports/benchmark.csv`. Speedups and latency ratios of this run are therefore not quoted; re-run "
            "`dvc repro --force compile_benchmark` on a quiet machine.")


def table(summary: dict[str, dict[str, Any]], batch_size: int, noisy: bool = False) -> str:
    """Columns named as the metrics are in ``metrics/compile_benchmark.json`` and MLflow; every
    accuracy, p50 and speedup with its 95% interval in brackets."""
    head = ("| model | accuracy [95% CI] | accuracy_drop_vs_teacher (pp) | latency_ms_p50 [95% CI] (eager, bs{bs}) "
            "| speedup_vs_teacher | best_runtime | best_latency_ms_p50 [95% CI] | best_speedup_vs_teacher [95% CI] "
            "| size_mb | size_ratio_vs_teacher | size_gzip_mb | num_params | sparsity |").format(bs=batch_size)
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name in CHAIN:
        m = summary.get(name)
        if m is None:
            continue
        lines.append(
            f"| {LABELS[name]} | {accuracy_text(m)} | {_f(m.get('accuracy_drop_vs_teacher'), '+.2f')} "
            f"| {with_ci(m, 'latency_ms_p50', '.3f')} | {_speed(m.get('speedup_vs_teacher'), noisy)} "
            f"| {m.get('best_runtime', 'n/a')} | {with_ci(m, 'best_latency_ms_p50', '.3f')} "
            f"| {NOT_QUOTED if noisy else with_ci(m, 'best_speedup_vs_teacher', '.2f', 'x')} | {_f(m.get('size_mb'), '.3f')} "
            f"| {_f(m.get('size_ratio_vs_teacher'), '.3f')} | {_f(m.get('size_gzip_mb'), '.3f')} "
            f"| {int(float(m.get('num_params', 0))):,} | {_f(m.get('sparsity'), '.2f')} |")
    return "\n".join(lines)


def _fastest(m: dict[str, Any]) -> tuple[str, float]:
    """The runtime a model is judged on and its p50, as the benchmark summary chose it
    (:func:`~pipelines.measurement.comparison.judged_runtime`: ``benchmark.deploy_runtime``, by
    default the fastest measured; a PT2E int8 graph is only int8 once compiled)."""
    return m.get("best_runtime") or "eager", float(m.get("best_latency_ms_p50") or m["latency_ms_p50"])


def _fastest_without_int8_deploy(rows: list[dict[str, Any]], model: str, batch_size: int) -> tuple[str, float] | None:
    """A model's fastest timed runtime at ``batch_size`` other than ONNX Runtime's / OpenVINO's own
    int8 conversions (which start from the fp32 model whatever the chain did)."""
    timed = [r for r in rows if r["model"] == model and int(r["batch_size"]) == batch_size
             and r.get("latency_ms_p50") not in (None, "") and r["runtime"] not in INT8_RUNTIMES]
    best = min(timed, key=lambda r: float(r["latency_ms_p50"]), default=None)
    return (best["runtime"], float(best["latency_ms_p50"])) if best else None


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def paired(outcomes: Outcomes | None, a: str, b: str) -> PairedAccuracy | None:
    """Model ``a`` against model ``b`` on the same test images (None without both outcomes)."""
    if not outcomes or a not in outcomes or b not in outcomes:
        return None
    return PairedAccuracy.of(outcomes[a], outcomes[b])


def _pair(outcomes: Outcomes | None, a: str, b: str, a_label: str, b_label: str) -> str:
    pair = paired(outcomes, a, b)
    return versus(pair, a_label, b_label) if pair is not None else "accuracy not compared per image"


def readings(summary: dict[str, dict[str, Any]], stages: dict[str, dict[str, Any]],
             rows: list[dict[str, Any]], params: Any, outcomes: Outcomes | None = None) -> list[str]:
    """One sentence per technique, each derived from measured numbers; a run whose latency was
    disturbed (:func:`noise_notice`) quotes no speed."""
    noisy = bool(noisy_rows(rows))
    out = []
    s, p, q = summary.get("student", {}), summary.get("pruned", {}), summary.get("quantized", {})
    d = stages.get("distill", {})
    if "accuracy_no_kd" in d:
        out.append(
            f"**Distillation** (T={params.distill.temperature}, alpha={params.distill.alpha}): the student has "
            f"{_ratio(float(s.get('num_params', 0)), float(summary['teacher']['num_params'])):.1%} of the teacher's "
            f"parameters and reaches {accuracy_text(d)} vs {accuracy_text(d, 'accuracy_no_kd')} trained alone "
            f"({float(d['kd_gain_pp']):+.2f} pp from KD)"
            + ("." if noisy else f"; it runs {float(s.get('speedup_vs_teacher', 0)):.2f}x faster than the teacher "
                                 "(eager)."))
    if p:
        method = params.prune.method
        speed = _ratio(float(s["latency_ms_p50"]), float(p["latency_ms_p50"]))
        why = ("channels were physically removed, so every dense kernel does less work"
               if method == "channel" else
               "the zeros stay inside dense weight tensors, and dense kernels multiply zeros as fast as "
               "anything else: unstructured or mask-based sparsity does not speed up dense kernels "
               "(use `prune.method: channel` for real speed)")
        out.append(
            f"**Pruning** ({method}, amount {params.prune.amount}, {params.prune.steps} steps): sparsity "
            f"{float(p.get('sparsity', 0)):.0%}, params {int(float(p['num_params'])):,} vs "
            f"{int(float(s['num_params'])):,}, gzip size {_ratio(float(p['size_gzip_mb']), float(s['size_gzip_mb'])):.2f}x "
            "of the student's, "
            + ("latency not quoted (noisy run): " if noisy else
               f"latency {speed:.2f}x the student's speed ({'faster' if speed > 1.1 else 'no real change'}): ")
            + f"{why}.")
    if q and params.quantize.method != "none":
        # Our int8 is judged on its fastest *PyTorch* runtime (a PT2E model's "eager" is its
        # reference graph, quantize/dequantize around fp32 ops: its int8 kernels only exist once
        # compiled) against the fp32 model's fastest non-int8 one; ort-int8/ov-int8 quantize the
        # fp32 model themselves (one artifact for both models' rows), so they are the Deploy section's.
        q_rt, q_ms = _fastest_without_int8_deploy(rows, "quantized", params.benchmark.batch_size) or _fastest(q)
        engine = stages.get("quantize", {}).get("engine", params.quantize.engine)  # what `auto` chose
        vs_best = ""
        if best := _fastest_without_int8_deploy(rows, "pruned", params.benchmark.batch_size):
            ratio = _ratio(best[1], q_ms)
            vs_best = (f" and {ratio:.2f}x {'faster' if ratio >= 1 else 'SLOWER'} than its fastest fp32 runtime "
                       f"({best[0]})"
                       + ("" if ratio >= 1 else ": the model is too small for int8 arithmetic to outweigh "
                                                "per-operator overhead (see README, 'int8 pays when the model is "
                                                "compute-bound')"))
        reference = (f" Run eagerly, the PT2E graph is its reference form (quantize/dequantize around fp32 ops, "
                     f"{with_ci(q, 'latency_ms_p50', '.3f', ' ms')}): deploy it compiled."
                     if engine == "pt2e" and params.quantize.method != "dynamic" else "")
        out.append(
            f"**Quantization** ({params.quantize.method}, {engine} engine): size "
            f"{_ratio(float(q['size_mb']), float(p['size_mb'])):.2f}x of fp32 (int8 weights are 1/4 of fp32 plus "
            f"scales/zero-points); "
            + ("int8 speed not quoted (noisy run)" if noisy else
               f"int8 on {q_rt} runs {_ratio(float(p['latency_ms_p50']), q_ms):.2f}x faster than the same model in "
               f"fp32 eager{vs_best}")
            + f"; {_pair(outcomes, 'quantized', 'pruned', 'int8', 'fp32')}.{reference}"
            + (" Dynamic quantization only has int8 kernels for Linear layers, so convolutions stay fp32."
               if params.quantize.method == "dynamic" else ""))
    compiled = [r for r in rows if r["runtime"].startswith("compile-") and r.get("latency_ms_p50") not in (None, "")]
    if compiled and noisy:
        out.append("**torch.compile**: compiled-vs-eager speedups not quoted (noisy run); compile times and graph "
                   "breaks are in `reports/benchmark.csv`.")
    elif compiled:
        parts = []
        for name in CHAIN:
            eager = next((r for r in rows if r["model"] == name and r["runtime"] == "eager"
                          and int(r["batch_size"]) == params.benchmark.batch_size), None)
            best = min((r for r in compiled if r["model"] == name
                        and int(r["batch_size"]) == params.benchmark.batch_size),
                       key=lambda r: float(r["latency_ms_p50"]), default=None)
            if eager and best:
                how = (f"{best['runtime']}, dynamo captured no graph: runs eager" if str(best.get("graphs")) == "0"
                       else f"{best['runtime']}, {_f(best.get('graph_breaks'), '.0f')} graph breaks, compiled in "
                            f"{_f(best.get('compile_time_s'), '.1f')} s"
                            + (", C++ wrapper" if best.get("wrapper") == "cpp" else ""))
                gain = _ratio(float(eager["latency_ms_p50"]), float(best["latency_ms_p50"]))
                parts.append(f"{name} {gain:.2f}x{' (slower: keep eager)' if gain < 0.95 else ''} ({how})")
        slower = any("keep eager" in part for part in parts)
        inductor = params.benchmark.inductor
        failed = sorted({f"{r['model']} {r['runtime']}" for r in rows if r.get("error")})
        out.append("**torch.compile** (Inductor, freezing on, inference mode) vs eager at batch "
                   f"{params.benchmark.batch_size}: " + "; ".join(parts) + "."
                   + (f" Inductor settings: {', '.join(f'{k}={v}' for k, v in inductor.items())}." if inductor else "")
                   + (" Slower compiled than eager: see README, 'When torch.compile is slower than eager'."
                      if slower else "")
                   + (f" Not compiled: {', '.join(failed)} (see `error` in benchmark.csv)." if failed else ""))
    return out


def pareto_plot(summary: dict[str, dict[str, Any]], path: Path, batch_size: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipelines.core.io import atomic_write

    fig, ax = plt.subplots(figsize=(8, 5))
    sizes = [float(m["size_mb"]) for m in summary.values()]
    scale = 1500 / max(sizes)
    for i, (name, m) in enumerate(summary.items()):
        runtime, x = _fastest(m)
        y = 100 * float(m["accuracy"])
        ax.scatter(x, y, s=max(20.0, float(m["size_mb"]) * scale), alpha=0.6)
        # labels alternate above and below their marker: neighbours in the chain sit close together
        ax.annotate(f"{LABELS.get(name, name)}\n{float(m['size_mb']):.3f} MB\n{runtime}", (x, y),
                    textcoords="offset points", xytext=(8, 8 if i % 2 == 0 else -36), fontsize=8)
    ax.margins(x=0.3, y=0.25)
    ax.set_xscale("log")
    ax.set_xlabel(f"latency p50 per batch of {batch_size} (ms, fastest runtime measured, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs latency (marker area ~ serialized size)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


# The headline (metrics/summary.json, the MLflow pipeline run, the registered version's tags, the
# report's first line): short names so `make compare` fits a 120-column terminal; each is the
# final model's number named in the right column.
HEADLINE = {
    "acc": "accuracy",
    "drop_pp": "accuracy_drop_vs_teacher",
    "mb": "size_mb",
    "size_ratio": "size_ratio_vs_teacher",
    "runtime": "best_runtime",
    "p50_ms": "best_latency_ms_p50",
    "p50_ms_bs1": "best_latency_ms_p50 at batch 1",
    "speedup": "best_speedup_vs_teacher",
}


def headline(summary: dict[str, dict[str, Any]], rows: list[dict[str, Any]],
             front: dict[str, Any] | None = None, outcomes: Outcomes | None = None,
             warnings: list[str] | None = None) -> dict[str, Any]:
    """``metrics/summary.json``: the final model in a few numbers (:data:`HEADLINE`), each with its
    95% interval (``<name>_ci_low``/``_ci_high``; the accuracy's from its ``acc_n`` test images, the
    drop against the teacher paired on them, ``drop_pp_ci_*`` with McNemar's ``drop_p_value``): its
    fastest runtime with the p50 at ``benchmark.batch_size`` and at batch 1, speedup and size
    against the teacher; ``noisy`` when the benchmark says its timings were disturbed; and the
    search's chosen trial (``search.*``, named as in the trial's metrics) when a search ran."""
    final = summary[CHAIN[-1]]
    runtime, p50 = _fastest(final)
    judged = bool(final.get("best_runtime"))
    out: dict[str, Any] = {
        "acc": float(final["accuracy"]),
        "drop_pp": float(final["accuracy_drop_vs_teacher"]),
        "mb": float(final["size_mb"]),
        "size_ratio": float(final["size_ratio_vs_teacher"]),
        "runtime": runtime,
        "p50_ms": p50,
        "speedup": float(final.get("best_speedup_vs_teacher") or final["speedup_vs_teacher"]),
    }
    if outcomes and CHAIN[-1] in outcomes:
        out.update(accuracy_metrics(outcomes[CHAIN[-1]], "acc"))
    else:
        out.update({k.replace("accuracy", "acc"): final[k] for k in ("accuracy_ci_low", "accuracy_ci_high", "accuracy_n")
                    if k in final})
    if (pair := paired(outcomes, CHAIN[-1], CHAIN[0])) is not None:
        out.update(paired_metrics(pair))
    for mine, theirs in (("p50_ms", "best_latency_ms_p50" if judged else "latency_ms_p50"),
                         ("speedup", "best_speedup_vs_teacher" if judged else "speedup_vs_teacher")):
        for end in ("_ci_low", "_ci_high"):
            if final.get(theirs + end) not in (None, ""):
                out[mine + end] = float(final[theirs + end])
    at_one = [r for r in rows if r["model"] == CHAIN[-1] and r["runtime"] == runtime and int(r["batch_size"]) == 1
              and r.get("latency_ms_p50") not in (None, "")]
    if at_one:
        out["p50_ms_bs1"] = float(at_one[0]["latency_ms_p50"])
        for end in ("_ci_low", "_ci_high"):
            if at_one[0].get("latency_ms_p50" + end) not in (None, ""):
                out["p50_ms_bs1" + end] = float(at_one[0]["latency_ms_p50" + end])
    if any("noisy" in r for r in rows):  # the benchmark says whether its timings were disturbed
        out["noisy"] = bool(noisy_rows(rows))
    chosen = next((t for t in (front or {}).get("trials", []) if t["number"] == (front or {}).get("best_trial")), None)
    if chosen is not None:
        m = chosen.get("metrics", {})
        out["search"] = {"trial": chosen["number"], **{k: float(m[k]) for k in (
            "val_accuracy", "val_accuracy_ci_low", "val_accuracy_ci_high", "accuracy", "accuracy_ci_low",
            "accuracy_ci_high", "latency_ms_p50", "latency_ms_p50_ci_low", "latency_ms_p50_ci_high",
            "speedup_vs_teacher", "speedup_vs_teacher_ci_low", "speedup_vs_teacher_ci_high", "size_mb") if k in m}}
    out.update(deploy_fields(summary))
    if warnings:  # a collapse (pipelines/core/collapse.py): tagged, and the champion alias stays put
        out[WARNING_TAG] = " | ".join(warnings)
    return out


def headline_line(head: dict[str, Any]) -> str:
    """The headline as one line of the report, under the same names, each number with its 95%
    interval; a noisy run quotes no speed."""
    hidden = ("p50_ms", "p50_ms_bs1", "speedup") if head.get("noisy") else ()
    ci = {"acc": ".4f", "p50_ms": ".4g", "p50_ms_bs1": ".4g", "speedup": ".4g"}

    def shown(k: str, v: Any) -> str:
        if k in hidden:
            return NOT_QUOTED
        if isinstance(v, str):
            return v
        if k == "drop_pp" and "drop_pp_ci_low" in head:  # the paired one, same images as the teacher
            return with_ci({"d": head["drop_pp_paired"], "d_ci_low": head["drop_pp_ci_low"],
                            "d_ci_high": head["drop_pp_ci_high"]}, "d", "+.2f")
        return with_ci(head, k, ci[k]) if k in ci else _f(v, ".4g")

    parts = [f"`{k}` {shown(k, v)}" for k, v in head.items() if k in HEADLINE]
    return "**Headline** (final model, `metrics/summary.json`, 95% intervals in brackets): " + ", ".join(parts) + "."


def pareto_points(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """``plots/pareto.json``: one point per model (accuracy vs its fastest runtime's p50), the
    data of the DVC scatter plot that ``dvc plots diff`` overlays across experiments."""
    points = []
    for name in CHAIN:
        if name in summary:
            runtime, p50 = _fastest(summary[name])
            points.append({"model": name, "accuracy": float(summary[name]["accuracy"]), "best_latency_ms_p50": p50,
                           "best_runtime": runtime, "size_mb": float(summary[name]["size_mb"])})
    return points


def for_mlflow(text: str, image_url: str) -> str:
    """``summary.md`` with its plot linked by ``image_url``: MLflow 3.17's Markdown view (artifacts
    and run description) draws only absolute http(s) images and shows a relative one as text."""
    return text.replace("](pareto.png)", f"]({image_url})") if image_url else text


def markdown(summary, stages, rows, params, front: dict[str, Any] | None = None,
             outcomes: Outcomes | None = None, warnings: list[str] | None = None) -> str:
    """The report; ``outcomes`` (per chain model, right/wrong on each test image) adds the paired
    comparisons (final vs teacher, int8 vs fp32)."""
    bs = params.benchmark.batch_size
    head = headline(summary, rows, front, outcomes)
    final_vs_teacher = paired(outcomes, CHAIN[-1], CHAIN[0])
    lines = [
        "# Compression report",
        "",
        *[f"**{w}**" for w in warnings or []], *([""] if warnings else []),
        f"Dataset `{params.data.name}`, batch {bs}, {usable_threads(params.benchmark.num_threads)} threads; latencies are medians "
        "measured side by side (rotating blocks of calls) in one `compile_benchmark` run on this machine; speedups and ratios "
        "are against the fp32 teacher in that same run. Brackets: 95% intervals (accuracy: Wilson, from the number "
        "of test images; p50: order statistics of the timed calls; speedup: order statistics of the per-round "
        "ratios).",
        "",
        *([notice, ""] if (notice := noise_notice(rows, params)) else []),
        table(summary, bs, noisy=bool(noisy_rows(rows))),
        "",
        headline_line(head),
        "",
        *([f"**Final vs teacher, paired on the same test images**: {versus(final_vs_teacher, 'final', 'teacher')}.",
           ""] if final_vs_teacher is not None else []),
        "## What each technique did",
        "",
        *[f"- {r}" for r in readings(summary, stages, rows, params, outcomes)],
        "",
        "![accuracy vs latency](pareto.png)",
        "",
        *sensitivity_section(stages.get("quantize", {})),
        *deploy_section(summary, rows, bs),
        *search_section(front, head, params),
        "Per (model, runtime, batch size) numbers: `reports/benchmark.csv`.",
    ]
    return "\n".join(lines) + "\n"
