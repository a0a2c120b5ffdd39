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
  torch.export archive as a uint8 tensor (activation scales live in the graph, not in weights);
- ``state_dict`` and free-form ``extra`` metadata.

This module reads and writes the format and rebuilds fp32 models, importing no quantizer: the
stages that only ever load fp32 models (distill, prune) load through it. An int8 checkpoint is
rebuilt by the quantization layer, which passes its rebuild as ``int8`` to :func:`load_model`
(:func:`pipelines.compression.checkpoint.load_model` does). No pickled code is ever loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipelines.core.errors import CheckpointError, error_line, first_line
from pipelines.core.io import atomic_write
from pipelines.core.kinds import is_pt2e
from pipelines.models.build import build_from_spec

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
               extra: dict[str, Any] | None = None, program: torch.Tensor | None = None) -> Path:
    """Write the checkpoint atomically. A PT2E graph is stored as its torch.export ``program``
    (:func:`pipelines.compression.checkpoint.save_model` makes it), any other model as its state_dict."""
    pt2e = is_pt2e(model)
    if pt2e and program is None:
        raise ValueError("a PT2E graph is saved as a program: use pipelines.compression.checkpoint.save_model")
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
        payload["program"] = program
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_payload(path: str | Path) -> dict[str, Any]:
    """The checkpoint's dict, refused in one line naming the file when it is missing, unreadable
    or not this project's format."""
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
    return payload


def is_int8(payload: dict[str, Any]) -> bool:
    return payload.get("program") is not None or bool(payload.get("quant"))


def float_skeleton(payload: dict[str, Any]) -> nn.Module:
    """The float model the checkpoint's spec builds, resized to its recorded shapes."""
    return resize_to(build_from_spec(payload["spec"]), payload["shapes"])


Int8Rebuild = Callable[[dict[str, Any]], nn.Module]


def load_model(path: str | Path, int8: Int8Rebuild | None = None) -> Loaded:
    """The model ``path`` holds. fp32 models are rebuilt here; an int8 one by ``int8(payload)``
    (the quantization layer's rebuild), refused in one line when none is given."""
    payload = read_payload(path)
    if is_int8(payload) and int8 is None:
        quant = payload.get("quant") or {}
        raise CheckpointError(f"{path}: holds an int8 model ({quant.get('engine', 'pt2e')}/{quant.get('method', '?')}); "
                              "fp32 loader: load it with pipelines.compression.checkpoint.load_model")
    try:
        if is_int8(payload):
            model = int8(payload)
        else:
            model = float_skeleton(payload)
            model.load_state_dict(payload["state_dict"])
    except Exception as exc:
        raise CheckpointError(f"{path}: weights do not fit the model they describe "
                              f"({first_line(exc)})") from None
    return Loaded(model.eval(), payload["spec"], payload["quant"], payload["extra"])
