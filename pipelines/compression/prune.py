"""Pruning: iterative prune -> fine-tune -> repeat, three ways.

- ``l1_unstructured``: global L1 magnitude over every conv/linear weight (torch.nn.utils.prune
  masks, made permanent at the end). Zeros compress well (gzip size) but dense kernels still
  multiply them: **no speed-up**.
- ``ln_structured``: whole output channels zeroed by L1 norm (masks). Still dense shapes, so
  still **no speed-up** until the channels are physically removed.
- ``channel``: whole channels *removed* with torch-pruning (dependency graph keeps the next
  layer, BN and residuals consistent). The network really shrinks: fewer params, lower latency.

Each step prunes the same fraction of what is left, so after ``steps`` steps the pruned
fraction is ``amount``: per-step ``p = 1 - (1 - amount) ** (1 / steps)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from pipelines.core.config import PruneConfig


@dataclass
class PruneResult:
    model: nn.Module
    steps: list[dict[str, float]] = field(default_factory=list)


def step_amount(amount: float, steps: int) -> float:
    return 1.0 - (1.0 - amount) ** (1.0 / steps)


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _classifier(model: nn.Module) -> nn.Module:
    """The last linear layer: its outputs are the classes, never pruned structurally."""
    return [m for _, m in prunable(model) if isinstance(m, nn.Linear)][-1]


def sparsity_table(model: nn.Module) -> list[dict[str, object]]:
    rows = []
    for name, module in prunable(model):
        weight = module.weight.detach()
        zeros = int((weight == 0).sum())
        channels = weight.flatten(1).abs().sum(1)
        rows.append({"layer": name, "type": type(module).__name__, "shape": "x".join(map(str, weight.shape)),
                     "params": weight.numel(), "zeros": zeros, "sparsity": zeros / weight.numel(),
                     "zero_channels": int((channels == 0).sum())})
    return rows


def _mask_step(model: nn.Module, method: str, amount: float) -> None:
    if method == "l1_unstructured":
        params = [(m, "weight") for _, m in prunable(model)]
        tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
    else:  # ln_structured: output channels by L1 norm, per layer; keep every class output
        head = _classifier(model)
        for _, module in prunable(model):
            if module is not head:
                tprune.ln_structured(module, "weight", amount=amount, n=1, dim=0)


def make_permanent(model: nn.Module) -> nn.Module:
    for _, module in prunable(model):
        if tprune.is_pruned(module) and hasattr(module, "weight_mask"):
            tprune.remove(module, "weight")
    return model


def _channel_pruner(model: nn.Module, cfg: PruneConfig, example: torch.Tensor):
    import torch_pruning as tp

    return tp.pruner.MetaPruner(
        model, example,
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        pruning_ratio=cfg.amount,
        iterative_steps=cfg.steps,
        ignored_layers=[_classifier(model)],
        global_pruning=False,
    )


def prune_model(model: nn.Module, cfg: PruneConfig, example: torch.Tensor,
                finetune: Callable[[nn.Module, int], None], evaluate: Callable[[nn.Module], float]) -> PruneResult:
    """Prune ``model`` in place over ``cfg.steps`` rounds, fine-tuning after each; returns the
    permanently pruned model and one row per step (accuracy after pruning / after fine-tune)."""
    result = PruneResult(model)
    pruner = _channel_pruner(model, cfg, example) if cfg.method == "channel" else None
    per_step = step_amount(cfg.amount, cfg.steps)
    for step in range(1, cfg.steps + 1):
        if pruner is not None:
            model.eval()
            pruner.step()
        else:
            _mask_step(model, cfg.method, per_step)
        pruned_acc = evaluate(model)
        finetune(model, step)
        tuned_acc = evaluate(model)
        result.steps.append({"step": step, "accuracy_after_prune": pruned_acc, "accuracy_after_finetune": tuned_acc})
    make_permanent(model)
    return result
