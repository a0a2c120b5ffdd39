"""Model checkpoints that rebuild themselves and load with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of primitives and tensors:

- ``spec``: the constructor arguments (:func:`pipelines.models.model_spec`);
- ``shapes``: every conv/bn/linear layer's weight shape, so a channel-pruned network (whose
  layers are narrower than its constructor's) is resized before its weights are loaded;
- ``quant``: the quantization recipe when the weights are int8, replayed on the float skeleton
  (fuse -> prepare -> convert) so the quantized ``state_dict`` fits;
- ``program``: for a PT2E int8 graph (engine ``pt2e``, static/qat) instead of a state_dict, its
  torch.export archive as a uint8 tensor (activation scales live in the graph, not in weights),
  rebuilt by :func:`pipelines.compression.quantize.load_program`, which refuses pickled entries;
- ``state_dict`` and free-form ``extra`` metadata.

No pickled code is ever loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipelines.compression.quantize import load_program, program_tensor, skeleton
from pipelines.core.errors import CheckpointError, error_line, first_line
from pipelines.core.io import atomic_write
from pipelines.core.kinds import is_pt2e
from pipelines.models import build_from_spec

FORMAT = 1


@dataclass
class Loaded:
    model: nn.Module
    spec: dict[str, Any]
    quant: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def layer_shapes(model: nn.Module) -> dict[str, list[int]]:
    shapes = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            shapes[name] = list(module.weight.shape)
    return shapes


def resize_to(model: nn.Module, shapes: dict[str, list[int]]) -> nn.Module:
    """Replace every layer whose weight shape differs from ``shapes`` by a fresh one of that shape."""
    for name, module in list(model.named_modules()):
        shape = shapes.get(name)
        if shape is None or list(module.weight.shape) == shape:
            continue
        if isinstance(module, nn.Conv2d):
            depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
            groups = shape[0] if depthwise else module.groups
            new: nn.Module = nn.Conv2d(shape[1] * groups, shape[0], module.kernel_size, module.stride,
                                       module.padding, module.dilation, groups, module.bias is not None)
        elif isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(shape[0], module.eps, module.momentum, module.affine,
                                 module.track_running_stats)
        else:
            new = nn.Linear(shape[1], shape[0], module.bias is not None)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, new)
    return model


def save_model(path: str | Path, model: nn.Module, spec: dict[str, Any], *,
               shapes: dict[str, list[int]] | None = None, quant: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None) -> Path:
    pt2e = is_pt2e(model)
    payload = {
        "format": FORMAT,
        "spec": spec,
        "shapes": shapes if shapes is not None else ({} if pt2e else layer_shapes(model)),
        "quant": quant,
        "state_dict": {} if pt2e else model.state_dict(),
        "extra": extra or {},
    }
    if pt2e:
        payload["program"] = program_tensor(model)
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_model(path: str | Path) -> Loaded:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found (run the stage that writes it first)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupted, or not a torch file at all
        raise CheckpointError(f"{path}: not a readable checkpoint ({error_line(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a compression-lab checkpoint (format {FORMAT} expected)")
    try:
        if payload.get("program") is not None:
            model = load_program(payload["program"])
        else:
            model = resize_to(build_from_spec(payload["spec"]), payload["shapes"])
            assign = False
            if payload["quant"]:
                model, assign = skeleton(model, payload["quant"])
            model.load_state_dict(payload["state_dict"], assign=assign)
    except Exception as exc:
        raise CheckpointError(f"{path}: weights do not fit the model they describe "
                              f"({first_line(exc)})") from None
    return Loaded(model.eval(), payload["spec"], payload["quant"], payload["extra"])
