"""Model checkpoints that rebuild themselves and load with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of primitives and tensors:

- ``spec``: the constructor arguments (:func:`pipelines.models.model_spec`);
- ``shapes``: every parameter's and buffer's shape and every module's size attributes
  (:func:`layer_shapes`), so a channel-pruned network (whose layers are narrower than its
  constructor's, whatever their type: conv, norm, attention, ViT embeddings) is resized before
  its weights are loaded;
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

FORMAT = 2  # 2: shapes of every tensor plus module size attributes (1: conv/bn/linear weights)


@dataclass
class Loaded:
    model: nn.Module
    spec: dict[str, Any]
    quant: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _geometry(value: Any) -> bool:
    """An int or a tuple of ints: a layer's size or geometry (``in_channels``, ``kernel_size``,
    ``normalized_shape``, ``num_heads``, ViT's ``hidden_dim`` ...), never a bool."""
    if isinstance(value, tuple):
        return all(type(v) is int for v in value)
    return type(value) is int


def layer_shapes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """What a rebuilt model must be resized to before the weights fit: every parameter's and
    buffer's shape, and every module's size attributes (torch-pruning narrows both)."""
    tensors = {name: list(t.shape) for name, t in model.state_dict().items() if isinstance(t, torch.Tensor)}
    attrs = {}
    for name, module in model.named_modules():
        sizes = {k: v for k, v in vars(module).items() if not k.startswith("_") and _geometry(v)}
        if sizes:
            attrs[name] = sizes
    return {"tensors": tensors, "attrs": attrs}


def resize_to(model: nn.Module, shapes: dict[str, dict[str, Any]]) -> nn.Module:
    """Give ``model`` the sizes :func:`layer_shapes` recorded: module attributes set, every
    tensor whose shape differs replaced by an uninitialised one of the recorded shape (same
    dtype, same ``requires_grad``), ready for ``load_state_dict``."""
    for name, sizes in shapes.get("attrs", {}).items():
        module = model.get_submodule(name)
        for attr, value in sizes.items():
            setattr(module, attr, value)
    for name, shape in shapes.get("tensors", {}).items():
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner)
        if attr in module._parameters and module._parameters[attr] is not None:
            old = module._parameters[attr]
            if list(old.shape) != shape:
                module._parameters[attr] = nn.Parameter(old.new_empty(shape), requires_grad=old.requires_grad)
        elif attr in module._buffers and module._buffers[attr] is not None:
            old = module._buffers[attr]
            if list(old.shape) != shape:
                module._buffers[attr] = old.new_empty(shape)
    return model


def save_model(path: str | Path, model: nn.Module, spec: dict[str, Any], *,
               shapes: dict[str, list[int]] | None = None, quant: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None) -> Path:
    pt2e = is_pt2e(model)
    payload = {
        "format": FORMAT,
        "spec": spec,
        # a quantized model's own layers say nothing about its float skeleton: pass the float model's
        "shapes": shapes if shapes is not None else ({} if pt2e or quant else layer_shapes(model)),
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
        older = isinstance(payload, dict) and isinstance(payload.get("format"), int) and payload["format"] < FORMAT
        raise CheckpointError(f"{path}: " + ("written by an older compression-lab; re-run the stage that writes it "
                                             "(dvc repro --force <stage>)" if older else
                                             f"not a compression-lab checkpoint (format {FORMAT} expected)"))
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
