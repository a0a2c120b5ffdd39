"""The report's search section (from ``reports/search/pareto.json``): the feasible front with every
number's interval, the accuracy objective's resolution, and the trial of the configuration this
pipeline ran set beside the pipeline's own measurement of it (``compile_benchmark``)."""

from __future__ import annotations

from typing import Any

from pipelines.reporting.intervals import fmt_num as _f
from pipelines.reporting.intervals import with_ci

AGREEMENT = 1.3  # a trial's speedup and the pipeline's for the same params agree within this factor


def _same(value: Any, mine: Any) -> bool:
    if isinstance(value, (int, float)) and isinstance(mine, (int, float)) and not isinstance(value, bool):
        return abs(float(value) - float(mine)) <= 1e-9 * max(1.0, abs(float(mine)))
    return value == mine or (isinstance(value, list) and list(value) == list(mine or []))


def matches(trial: dict[str, Any], params: Any) -> bool:
    """Did this pipeline run ``trial``'s configuration (every key it set has the value params hold)?"""
    for key, value in trial.get("overrides", {}).items():
        section, _, name = key.partition(".")
        if params is None or not _same(value, getattr(getattr(params, section, None), name, object())):
            return False
    return bool(trial.get("overrides"))


def agreement(trial: dict[str, Any], head: dict[str, Any] | None) -> str | None:
    """The trial's speedup against the pipeline's final speedup for the same params (bar: within
    :data:`AGREEMENT`)."""
    mine, theirs = trial.get("metrics", {}).get("speedup_vs_teacher"), (head or {}).get("speedup")
    if not isinstance(mine, (int, float)) or not isinstance(theirs, (int, float)) or not mine or not theirs:
        return None
    ratio = max(mine, theirs) / min(mine, theirs)
    if (head or {}).get("noisy"):
        verdict = ("not compared: `compile_benchmark`'s timing was disturbed (noisy); re-run it on a quiet machine "
                   f"(ratio now {ratio:.2f}x)")
    else:
        verdict = (f"they agree (within {AGREEMENT}x)" if ratio <= AGREEMENT else
                   f"they DISAGREE by {ratio:.2f}x (more than {AGREEMENT}x): the trial did not time what the "
                   "pipeline ships, or the machine changed speed between the two")
    return (f"Trial {trial['number']} measured this pipeline's configuration at speedup "
            f"{with_ci(trial['metrics'], 'speedup_vs_teacher', '.2f', 'x')} over the teacher; `compile_benchmark` "
            f"measured the final model at {with_ci(head, 'speedup', '.2f', 'x')}: {verdict}.")


def search_section(front: dict[str, Any] | None, head: dict[str, Any] | None = None, params: Any = None) -> list[str]:
    """The search's feasible Pareto front, chosen trial first, every accuracy and speedup with its
    95% interval; the current configuration's trial even when off the front."""
    if not front:
        return []
    counts, cons = front.get("counts", {}), front.get("constraints", {})
    limits = [f"accuracy drop <= {cons.get('max_accuracy_drop_pp')} pp"]
    if cons.get("max_latency_ms") is not None:
        limits.append(f"p50 <= {cons['max_latency_ms']} ms")
    if cons.get("min_speedup") is not None:
        limits.append(f"speedup vs teacher >= {cons['min_speedup']}x")
    current = front.get("current_trial") or {}
    res = front.get("accuracy_resolution") or {}
    lines = ["## Search", "",
             f"Study `{front.get('study')}`: {counts.get('trials', 0)} trials, {counts.get('pruned', 0)} pruned "
             f"(pruner {front.get('pruner', 'none')}), {counts.get('failed', 0)} failed, "
             f"{counts.get('feasible', 0)} feasible under {', '.join(limits)} (infeasible only where the 95% "
             f"interval shows it), judged on validation accuracy; front ({counts.get('front', 0)} "
             f"trial{'' if counts.get('front', 0) == 1 else 's'}), chosen one first. Rule: "
             f"{front.get('selection_rule', '')}. "
             + (f"Trial {current['number']} is the current configuration. " if current else "")
             + "`make promote` writes the chosen trial into params.yaml.", ""]
    if res:
        lines += [f"Resolution of the accuracy objective: {res.get('images')} validation images, one image is "
                  f"{_f(res.get('one_image_pp'), '.2f')} pp; two models that agree on every image are within "
                  f"+-{_f(res.get('undetectable_pp'), '.2f')} pp (95%); a difference is shown only from "
                  f"{res.get('detectable_images')} images one way and none the other "
                  f"({_f(res.get('detectable_pp'), '.2f')} pp).", ""]
    trials = sorted(front.get("trials", []), key=lambda t: t["number"] != front.get("best_trial"))
    if current and current["number"] not in {t["number"] for t in trials}:
        trials.append(current)  # the starting point, even when off the feasible front
    if not trials:
        return lines + ["No feasible trial yet: loosen the constraints or add trials (`make search N=...`).", ""]
    lines += ["| trial | val accuracy [95% CI] | val drop vs teacher, pp [95% CI] | test accuracy | p50 ms [95% CI] "
              "| speedup [95% CI] | runtime | size MB | settings |", "|---|---|---|---|---|---|---|---|---|"]
    for t in trials:
        m = t["metrics"]
        settings = ", ".join(f"{k}={_f(v, '.3g') if isinstance(v, float) else v}" for k, v in t["overrides"].items())
        mark = " (current)" if current and t["number"] == current["number"] else ""
        lines.append(f"| {t['number']}{mark} | {with_ci(m, 'val_accuracy', '.4f')} "
                     f"| {with_ci(m, 'val_accuracy_drop_vs_teacher', '+.2f')} | {_f(m.get('accuracy'), '.4f')} "
                     f"| {with_ci(m, 'latency_ms_p50', '.3f')} | {with_ci(m, 'speedup_vs_teacher', '.2f', 'x')} "
                     f"| {m.get('best_runtime', 'n/a')} | {_f(m.get('size_mb'), '.3f')} | {settings} |")
    lines.append("")
    ran = next((t for t in trials if matches(t, params)), None)
    if ran is not None and (line := agreement(ran, head)):
        lines += [line, ""]
    return lines
