"""Static int8 simulated on the float model: the cheap stand-in the sensitivity ranking and the
accuracy budget's re-ranking evaluate instead of quantizing the model once per layer.

Every conv/linear layer (after conv+bn folding, as both engines fold) gets its input
fake-quantized per tensor (uint8, the engine's activation observer, calibrated on the same
``quantize.calibration_batches`` as the real quantizers) and its weight fake-quantized to int8
(per channel or per tensor, symmetric). This is PT2E's granularity (X86InductorQuantizer quantizes
a layer's input and weight) and eager torch.ao's, whose per-layer *output* quantizers feed the
next layer's input. A layer named in :attr:`Simulated.fp32` runs with neither: "only that layer
kept in fp32" costs one forward pass over the validation split, not an export and a calibration.

The observers and fake-quant functions are torch.ao's; only the hooks that place them are ours.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.ao import quantization as tq
from torch.ao.nn.intrinsic import _FusedModule

from pipelines.compression.quantize.eager import activation_bits
from pipelines.core.config import QuantizeConfig

QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def folded(model: nn.Module) -> nn.Module:
    """An eval copy of ``model`` with batch norms folded into the convolutions before them
    (``fuse_model()`` of the built-in archs, else torch.fx's ``fuse``; unchanged if neither can)."""
    model = copy.deepcopy(model).cpu().eval()
    if callable(getattr(model, "fuse_model", None)):
        model.fuse_model()
        return model
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(model)
    except Exception:  # noqa: BLE001 - a model fx cannot trace keeps its batch norms: still simulated
        return model


def compute_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Quantizable layers by name, in module order: a fused conv+relu counts once, under the
    name of the layer it replaced (``features.0.0``), as in the float model and in PT2E graphs."""
    out: dict[str, nn.Module] = {}
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if isinstance(module, _FusedModule) and isinstance(module[0], QUANTIZABLE):
            out[name] = module[0]
            inside.append(name)
        elif isinstance(module, QUANTIZABLE):
            out[name] = module
    return out


def _act_observer(cfg: QuantizeConfig, engine: str) -> tq.ObserverBase:
    kind = tq.HistogramObserver if cfg.observer == "histogram" else tq.MinMaxObserver
    return kind(dtype=torch.quint8, reduce_range=engine == "eager" and activation_bits(cfg.eager_activation_bits) == 7)


def fake_weight(weight: torch.Tensor, per_channel: bool) -> torch.Tensor:
    if per_channel:
        obs = tq.PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        obs(weight)
        scale, zero = obs.calculate_qparams()
        return torch.fake_quantize_per_channel_affine(weight, scale, zero.int(), 0, obs.quant_min, obs.quant_max)
    obs = tq.MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    obs(weight)
    scale, zero = obs.calculate_qparams()
    return torch.fake_quantize_per_tensor_affine(weight, float(scale), int(zero), obs.quant_min, obs.quant_max)


class Simulated:
    """``model`` (folded) with every quantizable layer's input and weight fake-quantized, except
    the layers in :attr:`fp32`. Calibrated on ``batches`` at construction."""

    def __init__(self, model: nn.Module, cfg: QuantizeConfig, engine: str, batches: Iterable[torch.Tensor]) -> None:
        self.model = folded(model)
        self.layers = compute_layers(self.model)
        self.fp32: frozenset[str] = frozenset()
        self._calibrating = True
        self._observers = {name: _act_observer(cfg, engine) for name in self.layers}
        self._qparams: dict[str, tuple[float, int, int, int]] = {}
        self._weights = {name: (m.weight.detach().clone(), fake_weight(m.weight.detach(), cfg.per_channel))
                         for name, m in self.layers.items()}
        self.outputs: dict[str, list[torch.Tensor]] | None = None
        for name, module in self.layers.items():
            module.register_forward_pre_hook(self._pre_hook(name))
            module.register_forward_hook(self._post_hook(name))
        with torch.no_grad():
            for x in batches:
                self.model(x.cpu())
        for name, obs in self._observers.items():
            scale, zero = obs.calculate_qparams()
            self._qparams[name] = (float(scale), int(zero), obs.quant_min, obs.quant_max)
        self._calibrating = False

    def _pre_hook(self, name: str):
        def hook(module: nn.Module, args: tuple) -> tuple | None:
            x = args[0]
            if self._calibrating:
                self._observers[name](x.detach())
                module.weight.data = self._weights[name][0]
                return None
            keep = name in self.fp32
            module.weight.data = self._weights[name][0 if keep else 1]
            if keep:
                return None
            return (torch.fake_quantize_per_tensor_affine(x, *self._qparams[name]), *args[1:])
        return hook

    def _post_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if self.outputs is not None:
                self.outputs.setdefault(name, []).append(output.detach())
        return hook

    @contextlib.contextmanager
    def keeping(self, fp32: Iterable[str]) -> Iterator[nn.Module]:
        """The simulated model with ``fp32`` layers unquantized (an empty set: all int8)."""
        unknown = set(fp32) - set(self.layers)
        if unknown:
            raise KeyError(f"not quantizable layers of this model: {sorted(unknown)}")
        before, self.fp32 = self.fp32, frozenset(fp32)
        try:
            yield self.model
        finally:
            self.fp32 = before

    @torch.no_grad()
    def layer_outputs(self, x: torch.Tensor, fp32: Iterable[str]) -> dict[str, torch.Tensor]:
        """Every layer's output on ``x`` with ``fp32`` kept (all layers: the float reference)."""
        self.outputs = {}
        try:
            with self.keeping(fp32) as model:
                model(x.cpu())
            return {k: torch.cat(v) for k, v in self.outputs.items()}
        finally:
            self.outputs = None
