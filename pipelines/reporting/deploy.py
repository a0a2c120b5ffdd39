"""The report's deploy section: which runtime to ship the final model on, every runtime it was
measured on, and the ``deploy_*`` fields of the headline."""

from __future__ import annotations

from typing import Any

from pipelines.measurement.comparison import TIE_RULE
from pipelines.reporting.intervals import fmt_num as _f
from pipelines.reporting.intervals import accuracy_text, noisy_rows, with_ci
from pipelines.reporting.intervals import speed_text as _speed

DEPLOY_MODEL = "quantized"


def _deploy_line(m: dict[str, Any], suffix: str, batch: int, noisy: bool) -> str:
    runtime = m.get(f"best_runtime{suffix}")
    if not runtime:
        return f"- batch {batch}: not measured"
    artifact = m.get(f"best_artifact{suffix}") or "n/a"
    tied = m.get(f"best_tied_with{suffix}")
    tied = f" (tied with {tied}: the data does not tell them apart, another phase of the machine may order them otherwise)" \
        if tied else ""
    return (f"- batch {batch}: **{runtime}**{tied}, p50 {with_ci(m, f'best_latency_ms_p50{suffix}', '.3f', ' ms')} "
            f"(p90 {_f(m.get(f'best_latency_ms_p90{suffix}'), '.3f')}), accuracy "
            f"{accuracy_text(m, f'best_accuracy{suffix}')}, {_speed(m.get(f'best_speedup_vs_eager{suffix}'), noisy)} "
            f"PyTorch eager ({with_ci(m, f'latency_ms_p50{suffix}', '.3f', ' ms')}); ship `{artifact}` "
            f"({_f(m.get(f'best_artifact_mb{suffix}'), '.3f')} MB)")


def deploy_section(summary: dict[str, dict[str, Any]], rows: list[dict[str, Any]], batch_size: int) -> list[str]:
    """Which runtime to ship the final model on, at batch 1 and at ``batch_size``, and every
    runtime it was measured on (accuracy measured in that runtime); ratios unquoted when noisy."""
    noisy = bool(noisy_rows(rows))
    m = summary.get(DEPLOY_MODEL)
    if not m:
        return []
    mine = [r for r in rows if r["model"] == DEPLOY_MODEL]
    runtimes = list(dict.fromkeys(r["runtime"] for r in mine))
    lines = ["## Deploy", "",
             "The final model on every runtime of `benchmark.runtimes`; the choice is, among the runtimes whose "
             "test accuracy, measured in that runtime, is at most one test sample below PyTorch eager's, "
             f"{TIE_RULE}:", "",
             _deploy_line(m, "_bs1", 1, noisy), _deploy_line(m, "", batch_size, noisy), "",
             f"| runtime | accuracy [95% CI] | p50 ms @bs1 [95% CI] | p50 ms @bs{batch_size} [95% CI] "
             f"| p90 ms @bs{batch_size} | artifact MB "
             "| build s | note |", "|---|---|---|---|---|---|---|---|"]
    for runtime in runtimes:
        at = {int(r["batch_size"]): r for r in mine if r["runtime"] == runtime}
        row = at.get(batch_size) or next(iter(at.values()))
        why = row.get("skipped") and f"skipped: {row['skipped']}" or row.get("error") or row.get("note") or ""
        one, big = at.get(1, {}), at.get(batch_size, {})
        lines.append(f"| {runtime} | {accuracy_text(row)} | {with_ci(one, 'latency_ms_p50', '.3f')} "
                     f"| {with_ci(big, 'latency_ms_p50', '.3f')} | {_f(big.get('latency_ms_p90'), '.3f')} "
                     f"| {_f(row.get('artifact_mb'), '.3f')} | {_f(row.get('compile_time_s'), '.1f')} | {why} |")
    return lines + [""]


def deploy_fields(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Where to deploy the final model (``deploy_*``), at the benchmark batch size and at batch 1."""
    m = summary.get(DEPLOY_MODEL, {})
    out: dict[str, Any] = {}
    for suffix in ("", "_bs1"):
        for key in ("runtime", "latency_ms_p50", "latency_ms_p90", "accuracy", "artifact", "artifact_mb",
                    "speedup_vs_eager", "speedup_vs_teacher"):
            for end in ("", "_ci_low", "_ci_high"):  # the 95% interval where the benchmark gives one
                if m.get(f"best_{key}{suffix}{end}") is not None:
                    out[f"deploy_{key}{suffix}{end}"] = m[f"best_{key}{suffix}{end}"]
    return out
