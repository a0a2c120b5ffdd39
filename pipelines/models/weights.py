"""``teacher.weights`` / ``student.weights``: start from the user's trained weights.

The file is read with ``torch.load(weights_only=True)`` (tensors and plain containers only, no
pickled code). It may hold a ``state_dict`` (``torch.save(model.state_dict(), path)``) or a
training checkpoint holding one under ``state_dict``, ``model_state_dict`` or ``model`` (a
compression-lab checkpoint is one of those). The ``module.`` prefix of ``DataParallel`` and the
``_orig_mod.`` prefix of ``torch.compile`` are dropped. Anything that does not fit the model is
refused in one line listing every mismatching tensor (shape in the file vs in the model), then
the missing and the unexpected ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipelines.core.errors import ModelError, error_line

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
PREFIXES = ("module.", "_orig_mod.")
SHOWN = 6  # entries per kind of mismatch before "+N more"


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _state_dict(payload: Any, where: str) -> dict[str, torch.Tensor]:
    if _is_state_dict(payload):
        found = payload
    else:
        found = next((payload[k] for k in STATE_DICT_KEYS if isinstance(payload, dict)
                      and _is_state_dict(payload.get(k))), None)
        if found is None:
            keys = f" (keys: {', '.join(map(str, list(payload)[:8]))})" if isinstance(payload, dict) else ""
            raise ModelError(f"{where}: holds a {type(payload).__name__}{keys}, not a state_dict of tensors "
                             f"nor a checkpoint with one under {', '.join(STATE_DICT_KEYS)}")
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in found):
            found = {k[len(prefix):]: v for k, v in found.items()}
    return found


def read_state_dict(path: str | Path, key: str) -> dict[str, torch.Tensor]:
    """The tensors of the weights file ``path`` (``key``: ``teacher`` or ``student``, for messages)."""
    where = f"{key}.weights: {path}"
    if not Path(path).is_file():
        raise ModelError(f"{where}: file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickled code, truncated file, not a torch file
        raise ModelError(f"{where}: not loadable with torch.load(weights_only=True) ({error_line(exc, 160)}); "
                         "save model.state_dict(), not the model object") from None
    return _state_dict(payload, where)


def _listed(items: list[str]) -> str:
    more = f", +{len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def mismatches(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """What keeps ``state`` from loading into ``model``, one phrase per kind (empty: it fits)."""
    expected = model.state_dict()
    shapes = [f"{k} {list(v.shape)} in the file vs {list(expected[k].shape)} in the model"
              for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    out = []
    if shapes:
        out.append(f"{len(shapes)} shape mismatch{'es' if len(shapes) > 1 else ''}: {_listed(shapes)}")
    if missing:
        out.append(f"{len(missing)} missing: {_listed(missing)}")
    if unexpected:
        out.append(f"{len(unexpected)} unexpected: {_listed(unexpected)}")
    return out


def _channels_hint(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    first = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    weight = state.get(f"{first}.weight") if first is not None else None
    if weight is None or weight.dim() != 4:
        return ""
    have = model.get_submodule(first).in_channels
    want = weight.shape[1] * model.get_submodule(first).groups
    return f" (the file's first convolution takes {want}-channel images: set data.channels: {want})" \
        if want != have and want in (1, 3) else ""


def load_weights(model: nn.Module, path: str | Path, key: str, arch: str) -> nn.Module:
    """Load the weights file into ``model`` (strict), or one :class:`ModelError` line saying why not."""
    state = read_state_dict(path, key)
    problems = mismatches(model, state)
    if problems:
        raise ModelError(f"{key}.weights: {path} does not fit {key}.arch {arch}: {'; '.join(problems)}"
                         f"{_channels_hint(model, state)}")
    model.load_state_dict(state)
    return model
