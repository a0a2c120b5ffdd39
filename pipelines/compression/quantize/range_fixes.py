"""The range fixes the quantize stage kept, applied again: the float model its int8 model was really
quantized from, for the deploy targets' own PTQ (``compile_benchmark``). The fixes are
deterministic (the same calibration batches), so the model is rebuilt from the stage's metrics,
not stored; which fixes to keep is decided once, in
:func:`pipelines.chain.accuracy_control.range_fix`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pipelines.compression.quantize.bias_correction import corrected
from pipelines.compression.quantize.equalize import equalized
from pipelines.compression.quantize.smoothquant import smoothed
from pipelines.core.config import QuantizeConfig


def equalize(method: str, model: nn.Module, cfg: QuantizeConfig, batches: Sequence[torch.Tensor]
             ) -> tuple[nn.Module, list[list[str]]]:
    """``model`` equalized by ``method`` (``cle`` | ``smoothquant``, ``quantize.equalize``) and the
    layer pairs it rescaled (:func:`.equalize.equalized`, :func:`.smoothquant.smoothed`)."""
    return equalized(model) if method == "cle" else smoothed(model, batches, cfg.smoothquant_alpha)


def reapplied(model: nn.Module, applied: dict[str, Any], cfg: QuantizeConfig,
              batches: Sequence[torch.Tensor]) -> tuple[nn.Module, str]:
    """``model`` with the range fixes the quantize stage's metrics (``applied``: its
    ``metrics/quantize.json``) say it kept, and a few words on what was done (empty: nothing,
    ``model`` itself)."""
    done = []
    method = applied.get("equalize_method", "none")
    if method != "none":
        model, _ = equalize(method, model, cfg, batches)
        done.append("cross-layer equalization" if method == "cle" else f"SmoothQuant (alpha {cfg.smoothquant_alpha:g})")
    if applied.get("bias_correction_applied"):
        model, _ = corrected(model, batches, cfg.per_channel)
        done.append("bias correction")
    return model, (f"with the quantize stage's range fixes ({', '.join(done)})" if done else "")
