"""Pruning: iterative prune -> fine-tune -> repeat, three ways.

- ``l1_unstructured``: global L1 magnitude over every conv/linear weight (torch.nn.utils.prune
  masks, made permanent at the end). Zeros compress well (gzip size) but dense kernels still
  multiply them: **no speed-up**.
- ``ln_structured``: whole output channels zeroed by L1 norm (masks). Still dense shapes, so
  still **no speed-up** until the channels are physically removed.
- ``channel``: whole channels *removed* with torch-pruning (dependency graph keeps the next
  layer, BN and residuals consistent). The network really shrinks: fewer params, lower latency.
  Works on any model torch-pruning can trace (torchvision classifiers, your own): the classifier
  (the last conv/linear to run) keeps its outputs, and ``nn.MultiheadAttention`` embeddings
  shrink by the same number of dims in every head (ViT-style models keep all heads, narrower).

Each step prunes the same fraction of what is left, so after ``steps`` steps the pruned
fraction is ``amount``: per-step ``p = 1 - (1 - amount) ** (1 / steps)``.
"""

from __future__ import annotations

import sys
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


_CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _CONV_LINEAR)]


def prunable_weights(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(layer name, module, weight name) of every weight matrix that unstructured pruning masks:
    conv/linear ``weight`` and the packed q/k/v ``in_proj_weight`` of ``nn.MultiheadAttention``
    (its output projection is an ``nn.Linear`` already)."""
    out = [(name, m, "weight") for name, m in prunable(model)]
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention) and getattr(m, "in_proj_weight", None) is not None:
            out.append((name, m, "in_proj_weight"))
    return out


@torch.no_grad()
def classifier(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The conv/linear layer that runs last on ``example``: its outputs are the classes, so it is
    never pruned structurally (found by running the model, not by guessing from names)."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, *_: order.append(mod)) for _, m in prunable(model)]
    was_training = model.training
    try:
        model.eval()
        model(example)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    if not order:
        raise ValueError("the model ran no conv or linear layer: nothing to prune")
    return order[-1]


def sparsity_table(model: nn.Module) -> list[dict[str, object]]:
    rows = []
    for name, module, attr in prunable_weights(model):
        weight = getattr(module, attr).detach()
        zeros = int((weight == 0).sum())
        channels = weight.flatten(1).abs().sum(1)
        rows.append({"layer": name if attr == "weight" else f"{name}.{attr}", "type": type(module).__name__,
                     "shape": "x".join(map(str, weight.shape)), "params": weight.numel(), "zeros": zeros,
                     "sparsity": zeros / weight.numel(), "zero_channels": int((channels == 0).sum())})
    return rows


def _mask_step(model: nn.Module, method: str, amount: float, head: nn.Module) -> None:
    if method == "l1_unstructured":
        params = [(m, attr) for _, m, attr in prunable_weights(model)]
        tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
    else:  # ln_structured: output channels by L1 norm, per layer; keep every class output
        for _, module in prunable(model):
            if module is not head:
                tprune.ln_structured(module, "weight", amount=amount, n=1, dim=0)


def make_permanent(model: nn.Module) -> nn.Module:
    for _, module, attr in prunable_weights(model):
        if tprune.is_pruned(module) and hasattr(module, f"{attr}_mask"):
            tprune.remove(module, attr)
    return model


def _channel_pruner(model: nn.Module, cfg: PruneConfig, example: torch.Tensor, head: nn.Module):
    import torch_pruning as tp

    # nn.MultiheadAttention: its embedding is cut in num_heads equal groups, so every head stays
    # and loses the same dims (torch-pruning's `num_heads=` head removal wants separate q/k/v
    # Linear layers, timm/HF style; given torch's packed MHA it prunes nothing there)
    heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    return tp.pruner.MetaPruner(
        model, example,
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        pruning_ratio=cfg.amount,
        iterative_steps=cfg.steps,
        ignored_layers=[head],
        out_channel_groups=heads,
        global_pruning=False,
    )


def _sync_sizes(model: nn.Module) -> None:
    """torch-pruning narrows tensors and layer attributes, not the plain sizes a ``forward`` may
    read on its own: torchvision's ViT reshapes patches with ``self.hidden_dim``."""
    if "torchvision" not in sys.modules:
        return
    from torchvision.models.vision_transformer import VisionTransformer

    for module in model.modules():
        if isinstance(module, VisionTransformer):
            module.hidden_dim = module.conv_proj.out_channels


def prune_model(model: nn.Module, cfg: PruneConfig, example: torch.Tensor,
                finetune: Callable[[nn.Module, int], None], evaluate: Callable[[nn.Module], float]) -> PruneResult:
    """Prune ``model`` in place over ``cfg.steps`` rounds, fine-tuning after each; returns the
    permanently pruned model and one row per step (accuracy after pruning / after fine-tune)."""
    result = PruneResult(model)
    head = classifier(model, example)
    pruner = _channel_pruner(model, cfg, example, head) if cfg.method == "channel" else None
    per_step = step_amount(cfg.amount, cfg.steps)
    for step in range(1, cfg.steps + 1):
        if pruner is not None:
            model.eval()
            pruner.step()
            _sync_sizes(model)
        else:
            _mask_step(model, cfg.method, per_step, head)
        pruned_acc = evaluate(model)
        finetune(model, step)
        tuned_acc = evaluate(model)
        result.steps.append({"step": step, "accuracy_after_prune": pruned_acc, "accuracy_after_finetune": tuned_acc})
    make_permanent(model)
    return result
