"""The report's numbers with their uncertainty: an accuracy with its 95% Wilson interval, a p50
with its order-statistics interval, a speedup with the interval of its per-round ratios, and the
sentences that compare two models on the same images (paired: the images they disagree on,
McNemar), which say "no measurable loss" only when that is what the data shows."""

from __future__ import annotations

from typing import Any

from pipelines.core.stats import Accuracy, PairedAccuracy


def fmt_num(value: Any, fmt: str) -> str:
    """``value`` formatted, ``n/a`` when it is not a number."""
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return "n/a"


NOT_QUOTED = "not quoted (noisy)"


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0")


def noisy_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if _truthy(r.get("noisy"))]


def speed_text(value: Any, noisy: bool) -> str:
    return NOT_QUOTED if noisy else f"{fmt_num(value, '.2f')}x"


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out else None


def with_ci(m: dict[str, Any], key: str, fmt: str, unit: str = "") -> str:
    """``m[key]`` as ``value [low, high]`` from ``<key>_ci_low``/``_ci_high`` (``n/a`` when missing)."""
    value = _num(m.get(key))
    if value is None:
        return "n/a"
    low, high = _num(m.get(f"{key}_ci_low")), _num(m.get(f"{key}_ci_high"))
    ci = f" [{format(low, fmt)}, {format(high, fmt)}]" if low is not None and high is not None else ""
    return f"{format(value, fmt)}{unit}{ci}"


def accuracy_text(m: dict[str, Any], key: str = "accuracy") -> str:
    return with_ci(m, key, ".4f")


def versus(pair: PairedAccuracy, a: str, b: str) -> str:
    """``a`` against ``b`` on the same images, in words: tied ("not distinguishable ... no
    measurable loss"), or the measured gain/loss, and always the loss the split could have missed."""
    lo, hi = pair.interval
    counts = (f"{a} alone right on {pair.only_a}, {b} alone right on {pair.only_b} of {pair.n} images, "
              f"McNemar p={pair.p_value:.2g}")
    diff = f"{100 * pair.difference:+.2f} pp [{100 * lo:+.2f}, {100 * hi:+.2f}]"
    if pair.tied():
        return (f"{a} vs {b}: not distinguishable ({pair.only_a + pair.only_b} of {pair.n} images differ; {counts}); "
                f"difference {diff}: no measurable loss, but a loss of up to {max(0.0, -100 * lo):.2f} pp could "
                "have gone unseen on this split")
    if pair.a_better():
        return f"{a} vs {b}: {a} is measurably better, {diff} ({counts})"
    return f"{a} vs {b}: a measurable loss, {diff} ({counts})"


def paired_metrics(pair: PairedAccuracy) -> dict[str, float | int]:
    """The headline's drop against the teacher (teacher - final, pp) with its paired interval."""
    lo, hi = pair.interval
    return {"drop_pp_paired": -100 * pair.difference, "drop_pp_ci_low": -100 * hi, "drop_pp_ci_high": -100 * lo,
            "drop_p_value": pair.p_value, "drop_discordant": pair.only_a + pair.only_b, "drop_n": pair.n}


def accuracy_metrics(correct: tuple[bool, ...], name: str = "acc") -> dict[str, float | int]:
    return Accuracy(sum(correct), len(correct)).metrics(name)
