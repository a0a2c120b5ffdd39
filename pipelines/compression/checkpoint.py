"""Checkpoints of every model in the chain, int8 included: the format and the fp32 rebuild of
:mod:`pipelines.models.checkpoint`, plus what only the quantization layer knows (a PT2E graph
saved as its torch.export program; an int8 model rebuilt by
:func:`pipelines.compression.quantize.rebuild_int8`).

Only code that can meet an int8 model imports this module (the quantize and compile_benchmark
stages, the search); the stages that load fp32 models only use :mod:`pipelines.models.checkpoint`,
so a quantizer edit does not re-run them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from pipelines.compression.quantize import program_tensor, rebuild_int8
from pipelines.core.kinds import is_pt2e
from pipelines.models import checkpoint
from pipelines.models.checkpoint import Loaded, layer_shapes

__all__ = ["Loaded", "layer_shapes", "load_model", "save_model"]


def save_model(path: str | Path, model: nn.Module, spec: dict[str, Any], *,
               shapes: dict[str, list[int]] | None = None, quant: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None) -> Path:
    """:func:`pipelines.models.checkpoint.save_model` for any model (a PT2E graph as its program)."""
    program = program_tensor(model) if is_pt2e(model) else None
    return checkpoint.save_model(path, model, spec, shapes=shapes, quant=quant, extra=extra, program=program)


def load_model(path: str | Path) -> Loaded:
    """Any checkpoint the chain writes, fp32 or int8."""
    return checkpoint.load_model(path, int8=rebuild_int8)
