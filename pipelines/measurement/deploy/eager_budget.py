"""``ts-int8``'s own accuracy control: torch.ao eager int8 (fbgemm) brought within the budget
(``quantize.max_accuracy_drop``) by the same loop the quantize stage runs on PT2E
(:func:`pipelines.compression.quantize.budget.fit_budget`), on this target's own numbers, as
NNCF's accuracy control does for ``ov-int8``.

Why not the layers the quantize stage kept (what ``ort-int8`` excludes): each engine puts its
quantizers in other places, and what one needs another may not. Measured on the bench's planted
[8, 16] CNN (``bench/accuracy_budget.py --channels 8 16 --epochs 4 --deploy --equalize auto``,
budget 0.5 pp): the PT2E budget kept ``features.3.0`` and ``features.0.0``; the same two in
torch.ao eager, plus ``features.1.0`` (the producer of a kept layer's input, where eager mode
quantizes it), still lost 1.11 pp with three fp32 layers, while torch.ao's own ranking met the
budget with one.

The ranking is measured, not simulated: for each layer, the validation accuracy of the int8 model
with only that layer (besides those already kept) in fp32, built and validated as the artifact
will be. Ties keep module order. A revert that makes the drop worse is undone and the rest ranked
again on the model as it is then (NNCF's rule, as in the stage).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipelines.compression.quantize import eager
from pipelines.compression.quantize.budget import BudgetResult, candidate, fit_budget
from pipelines.measurement.deploy.torchscript import int8_module, quantized_engine


def fit(model: nn.Module, calibration: Sequence[torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
        max_drop_pp: float, max_layers: int, engine: str, batch: int = 256) -> BudgetResult:
    """``model``'s static int8 on ``engine`` (:func:`.torchscript.int8_module`) with the layers
    (module paths after fusion) it keeps in fp32 to stay within ``max_drop_pp`` of ``model`` on
    ``val`` (at most ``max_layers``): ``.best.model`` and ``.best.kept``."""
    images, labels = val

    def build(kept: Sequence[str]) -> nn.Module:
        return int8_module(model, calibration, tuple(kept), engine)

    def correct(m: nn.Module) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([m(images[i:i + batch]).argmax(1) == labels[i:i + batch]
                              for i in range(0, len(images), batch)])

    def rerank(kept: frozenset[str], rest: list[str]) -> list[str]:
        gained = {layer: int(correct(build(sorted(kept) + [layer])).sum()) for layer in rest}
        return sorted(rest, key=lambda layer: -gained[layer])  # stable: ties in module order

    with quantized_engine(engine):  # torch.ao's prepare sets the process-wide engine: restored after
        fp32 = correct(model)
        start = build(())
        return fit_budget(candidate(start, correct(start), fp32), fp32,
                          rerank(frozenset(), eager.fused_layers(model)), max_drop_pp, max_layers, build, correct,
                          rerank)
