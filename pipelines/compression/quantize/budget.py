"""The accuracy budget (``quantize.max_accuracy_drop``): give layers back to higher precision, most
sensitive first, until the int8 model is within the budget on the validation split.

NNCF's ``quantize_with_accuracy_control`` loop on PyTorch int8: start from the all-int8 model;
revert the next layer of the sensitivity ranking (``build(kept)`` quantizes anew with those layers
left out of int8), re-validate; a revert that makes the drop worse is undone and the remaining
layers are re-ranked on the current model (``rerank``); stop within budget or at
``quantize.max_fallback_layers``, keeping the best model seen (lowest drop, then fewest layers).

The drop is the fp32 model's validation accuracy minus the candidate's, paired on the same images
(:class:`~pipelines.core.stats.PairedAccuracy`); the decision is on its point value (a budget below
one image, 0.37 pp on digits, cannot be met otherwise) and every step records its 95% interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pipelines.core.stats import PairedAccuracy


@dataclass
class Candidate:
    model: nn.Module
    correct: torch.Tensor
    pair: PairedAccuracy  # fp32 vs this model on the validation images
    kept: tuple[str, ...] = ()

    @property
    def drop_pp(self) -> float:
        return 100.0 * self.pair.difference

    def summary(self) -> dict[str, Any]:
        lo, hi = self.pair.interval
        return {"kept": list(self.kept), "val_drop_pp": self.drop_pp, "val_drop_ci_low": 100 * lo,
                "val_drop_ci_high": 100 * hi, "val_drop_p_value": self.pair.p_value}


@dataclass
class BudgetResult:
    start: Candidate
    best: Candidate
    accepted: list[Candidate]  # each revert kept, in order (the all-int8 start not included)
    steps: list[dict[str, Any]] = field(default_factory=list)
    met: bool = False

    def metrics(self, budget: float) -> dict[str, Any]:
        return {"max_accuracy_drop": budget, "budget_met": self.met,
                "val_drop_before": self.start.summary(), "val_drop_after": self.best.summary(),
                "fallback_layers": list(self.best.kept), "num_fallback_layers": len(self.best.kept),
                "budget_steps": self.steps}

    def line(self, budget: float) -> str:
        before, after = self.start.drop_pp, self.best.drop_pp
        if self.met:
            return (f"quantize: accuracy budget {budget:g} pp met: val drop {before:+.2f} -> {after:+.2f} pp with "
                    f"{len(self.best.kept)} layer(s) out of int8 ({', '.join(self.best.kept) or 'none'})")
        return (f"quantize: WARNING accuracy budget {budget:g} pp NOT met: val drop {before:+.2f} -> {after:+.2f} pp "
                f"after {len(self.steps)} revert(s); kept the best ({', '.join(self.best.kept) or 'all int8'}); "
                "raise quantize.max_fallback_layers or try quantize.equalize")


def candidate(model: nn.Module, correct: torch.Tensor, fp32_correct: torch.Tensor,
              kept: Sequence[str] = ()) -> Candidate:
    return Candidate(model, correct, PairedAccuracy.of(fp32_correct.tolist(), correct.tolist()), tuple(kept))


def fit_budget(start: Candidate, fp32_correct: torch.Tensor, order: Sequence[str], budget_pp: float,
               max_layers: int, build: Callable[[tuple[str, ...]], nn.Module],
               correct: Callable[[nn.Module], torch.Tensor],
               rerank: Callable[[frozenset[str], list[str]], list[str]]) -> BudgetResult:
    """Revert layers in ``order`` until ``start``'s drop is within ``budget_pp`` (see the module)."""
    result = BudgetResult(start, start, [])
    current = start
    candidates = list(order)
    while result.best.drop_pp > budget_pp and len(current.kept) < max_layers and candidates:
        layer = candidates.pop(0)
        model = build(current.kept + (layer,))
        tried = candidate(model, correct(model), fp32_correct, current.kept + (layer,))
        better = tried.drop_pp <= current.drop_pp
        result.steps.append({"layer": layer, **tried.summary(), "accepted": better})
        if better:
            current = tried
            result.accepted.append(tried)
            if tried.drop_pp < result.best.drop_pp:
                result.best = tried
        else:  # NNCF's answer to a revert that hurts: rank the rest again on the model as it is now
            candidates = rerank(frozenset(current.kept), candidates)
    result.met = result.best.drop_pp <= budget_pp
    return result
