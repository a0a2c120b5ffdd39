"""The report's part of accuracy-aware quantization: the collapse warnings that open it, and the
quantize stage's sensitivity ranking and accuracy budget (``metrics/quantize.json``)."""

from __future__ import annotations

from typing import Any

from pipelines.core.collapse import DEFAULT_MAX_DROP_PP, WARNING_TAG, collapse_warnings
from pipelines.core.stats import Accuracy, PairedAccuracy
from pipelines.measurement.comparison import CHAIN

TOP = 5  # most sensitive layers listed
__all__ = ["WARNING_TAG", "chain_warnings", "sensitivity_section"]


def chain_warnings(outcomes: dict[str, tuple[bool, ...]] | None, quantize: dict[str, Any], num_classes: int,
                   max_drop_pp: float | None) -> list[str]:
    """Every chain model at chance on the test split, every stage that lost more than the budget
    (``quantize.max_accuracy_drop`` for quantize, 2 pp otherwise) against the model it started
    from (paired, same test images), and the quantize stage's own warning (validation split)."""
    out: list[str] = []
    previous = None
    for name in CHAIN:
        right = (outcomes or {}).get(name)
        if right is None:
            continue
        drop = None
        if previous is not None:
            drop = -100 * PairedAccuracy.of(right, outcomes[previous]).difference
        limit = max_drop_pp if name == "quantized" and max_drop_pp is not None else DEFAULT_MAX_DROP_PP
        out += collapse_warnings(name, Accuracy(sum(right), len(right)), num_classes, drop, limit,
                                 against=f"{previous} on the test split")
        previous = name
    if quantize.get("warning"):
        out.append(f"quantize stage (validation split): {quantize['warning']}")
    return out


def _row(r: dict[str, Any]) -> str:
    sqnr = r.get("sqnr_db")
    return (f"- {r['rank']}. `{r['layer']}`: SQNR {sqnr:.1f} dB" if sqnr is not None else f"- {r['rank']}. `{r['layer']}`: SQNR n/a") \
        + f", val accuracy {r['val_accuracy_delta']:+.2f} pp with only this layer in fp32"


def sensitivity_section(quantize: dict[str, Any]) -> list[str]:
    """The 5 most sensitive layers, one line each, and what the budget did (empty without them)."""
    ranking = quantize.get("sensitivity") or []
    lines: list[str] = []
    if ranking:
        source = ranking[0].get("sqnr_source", "")
        lines += ["## Quantization sensitivity", "",
                  f"Layers int8 hurts most (of {len(ranking)}; SQNR of the layer's output, int8 vs fp32, from the "
                  f"{source}; accuracy from the fake-quant simulation, `metrics/quantize.json` `sensitivity`):", "",
                  *[_row(r) for r in ranking[:TOP]], ""]
    if eq := quantize.get("equalize_val_drop"):
        names = {"cle": "cross-layer equalization", "smoothquant": "SmoothQuant"}
        applied = quantize.get("equalize_method", "none")
        tried = ", ".join(f"{eq[k]['val_drop_pp']:+.2f} pp with {names[k]}" for k in names if k in eq)
        lines += [f"**Range equalization** ({quantize.get('equalize')}, "
                  f"{'applied: ' + names[applied] if applied in names else 'not applied'}): all-int8 val drop "
                  f"{eq['none']['val_drop_pp']:+.2f} pp without, {tried}.", ""]
    if bc := quantize.get("bias_correction_val_drop"):
        lines += [f"**Bias correction** ({quantize.get('bias_correction')}, "
                  f"{'applied' if quantize.get('bias_correction_applied') else 'not applied'}): all-int8 val drop "
                  f"{bc['none']['val_drop_pp']:+.2f} pp without, {bc['on']['val_drop_pp']:+.2f} pp with it.", ""]
    drop = quantize.get("val_drop")
    if "budget_met" in quantize and drop is not None:
        before = quantize.get("val_drop_before", drop)
        kept = quantize.get("fallback_layers") or []
        lines += [f"**Accuracy budget** {quantize['max_accuracy_drop']:g} pp on val: "
                  f"{'met' if quantize['budget_met'] else 'NOT met'}; val drop {before['val_drop_pp']:+.2f} pp "
                  f"[{before['val_drop_ci_low']:+.2f}, {before['val_drop_ci_high']:+.2f}] all-int8 -> "
                  f"{drop['val_drop_pp']:+.2f} pp [{drop['val_drop_ci_low']:+.2f}, {drop['val_drop_ci_high']:+.2f}] "
                  f"with {len(kept)} layer(s) out of int8" + (f" ({', '.join(kept)})" if kept else "") + ".", ""]
    return lines
