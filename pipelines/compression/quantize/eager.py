"""Post-training and quantization-aware int8, affine scheme ``x ~ S * (q - Z)``.

- ``dynamic``: weights stored int8 ahead of time; activations' scale/zero-point computed at run
  time per batch. Only ``nn.Linear`` (and RNNs) have dynamic kernels, so on a CNN it changes
  the classifier only.
- ``static`` (PTQ): fuse conv+bn+relu, attach observers (min/max or histogram; weights per
  channel or per tensor), run ``calibration_batches`` training batches to fix S and Z for every
  activation, convert to int8 kernels.
- ``qat``: the same, but fake-quant modules simulate int8 rounding during a short fine-tune so
  the weights adapt to it; then convert.

Engine ``eager`` is torch.ao's x86 (fbgemm + onednn) backend: the textbook API, deprecated
upstream but fast on x86. Engine ``pt2e`` lives in :mod:`pipelines.compression.quantize.pt2e`; both are reached through
the registry in :mod:`pipelines.compression.quantize`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.ao import quantization as tq

from pipelines.core.config import QuantizeConfig
from pipelines.core.cpu import has_int8_dot
from pipelines.core.errors import QuantizeError

ENGINE = "x86"


def eager_quantizable(model: nn.Module) -> bool:
    """Ready for eager torch.ao static/QAT: ``QuantStub`` at the input and ``fuse_model()``, as
    every built-in arch (cnn, mlp, resnet18, mobilenet_v2) has."""
    return callable(getattr(model, "fuse_model", None)) and any(isinstance(m, tq.QuantStub) for m in model.modules())


def activation_bits(setting: str | int) -> int:
    """``quantize.eager_activation_bits`` on this CPU: ``auto`` is 8 where the CPU has int8 dot
    products (VNNI / AMX: u8 x s8 products accumulate in int32), 7 elsewhere (fbgemm's AVX2/AVX-512
    path adds u8 x s8 pairs in int16: 255 * 127 * 2 > 32767 saturates, which is why torch.ao's x86
    default reduces the range). Measured on this VNNI CPU, 8-bit codes with all-255 activations and
    all-127 weights, 64 inputs, on the x86, fbgemm and onednn engines: exact, no saturation; and
    on the planted [8, 16] CNN of ``bench/accuracy_budget.py`` the ts-int8 val drop went 1.11 ->
    0.74 pp, its budget kept 1 fp32 layer instead of 2."""
    has_dot = has_int8_dot()
    if setting == "auto":
        return 8 if has_dot else 7
    if setting == 8 and not has_dot:
        raise QuantizeError("quantize.eager_activation_bits: 8 refused: this CPU has no int8 dot products "
                            "(avx512_vnni / avx_vnni / amx_int8 absent from its flags), where fbgemm's int16 "
                            "pair sums saturate on 8-bit activations; use auto or 7")
    return int(setting)


def qconfig(observer: str, per_channel: bool, qat: bool = False, bits: int = 7) -> tq.QConfig:
    weight = tq.default_per_channel_weight_observer if per_channel else tq.default_weight_observer
    if qat:
        act_obs = tq.MovingAverageMinMaxObserver
        w_obs = tq.MovingAveragePerChannelMinMaxObserver if per_channel else tq.MovingAverageMinMaxObserver
        w_scheme = torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric
        return tq.QConfig(
            activation=tq.FakeQuantize.with_args(observer=act_obs, quant_min=0, quant_max=127,
                                                 dtype=torch.quint8, reduce_range=False),
            weight=tq.FakeQuantize.with_args(observer=w_obs, quant_min=-128, quant_max=127,
                                             dtype=torch.qint8, qscheme=w_scheme),
        )
    act = tq.HistogramObserver if observer == "histogram" else tq.MinMaxObserver
    # reduce_range (7 bits): see activation_bits
    return tq.QConfig(activation=act.with_args(reduce_range=bits == 7), weight=weight)


def _set_engine(engine: str = ENGINE) -> None:
    torch.backends.quantized.engine = engine


def keep_float(model: nn.Module, layers: Iterable[str]) -> list[str]:
    """Leave the layers at the paths ``layers`` of the *fused* ``model`` in fp32: each gets
    ``qconfig = None`` and is wrapped as ``DeQuantStub -> layer -> QuantStub``, so conversion
    dequantizes its input, runs it in float and quantizes its output with calibrated qparams
    (eager mode inserts no such boundaries by itself). Between two kept layers that follow each
    other (module order, :func:`fused_layers`) the tensor stays float: no stubs there. Returns
    the paths not found."""
    layers = list(layers)
    order = _layer_paths(model)
    missing = [path for path in layers if path not in order]
    kept = [path for path in layers if path in order]
    for path in kept:
        i = order.index(path)
        after_kept = i > 0 and order[i - 1] in kept
        before_kept = i + 1 < len(order) and order[i + 1] in kept
        module = model.get_submodule(path)
        module.qconfig = None
        parts = ([] if after_kept else [tq.DeQuantStub()]) + [module] + ([] if before_kept else [tq.QuantStub()])
        owner, _, leaf = path.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, leaf, nn.Sequential(*parts))
    return missing


def _layer_paths(fused: nn.Module) -> list[str]:
    from torch.ao.nn.intrinsic import _FusedModule

    found: list[str] = []
    for name, module in fused.named_modules():
        if isinstance(module, _FusedModule) or (isinstance(module, (nn.Conv2d, nn.Linear))
                                                and not any(name.startswith(f"{f}.") for f in found)):
            found.append(name)
    return found


def fused_layers(model: nn.Module) -> list[str]:
    """The module paths of ``model``'s quantizable layers after ``fuse_model()``, in module order:
    fused conv(+bn)(+relu) / linear(+relu) modules and the plain convs/linears left unfused."""
    fused = copy.deepcopy(model).cpu().eval()
    fused.fuse_model(is_qat=False)
    return _layer_paths(fused)


def prepare(model: nn.Module, observer: str, per_channel: bool, qat: bool, engine: str = ENGINE,
            keep: Iterable[str] = (), bits: int = 7) -> nn.Module:
    """``keep``: module paths (after fusion) left in fp32 (:func:`keep_float`); ``bits``: static
    activations' range (:func:`activation_bits`; QAT keeps 7)."""
    _set_engine(engine)
    model = copy.deepcopy(model).cpu()
    model.train() if qat else model.eval()
    model.fuse_model(is_qat=qat)
    if missing := keep_float(model, keep):
        raise QuantizeError(f"layers to keep in fp32 not found in the fused model: {', '.join(missing)}")
    model.qconfig = qconfig(observer, per_channel, qat, bits)
    return tq.prepare_qat(model, inplace=False) if qat else tq.prepare(model, inplace=False)


def quantize_dynamic(model: nn.Module) -> nn.Module:
    _set_engine()
    return tq.quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear}, dtype=torch.qint8)


@torch.no_grad()
def calibrate(prepared: nn.Module, batches: Iterable[torch.Tensor], limit: int) -> int:
    prepared.eval()
    seen = 0
    for i, x in enumerate(batches):
        if i >= limit:
            break
        prepared(x)
        seen += 1
    return seen


def quantize_static(model: nn.Module, batches: Iterable[torch.Tensor], cfg: QuantizeConfig, engine: str = ENGINE,
                    keep: Iterable[str] = ()) -> nn.Module:
    """``engine``: the torch.ao backend whose kernels the weights are packed for (``x86``, or
    ``fbgemm`` for the TorchScript deploy target); ``keep``: module paths left in fp32."""
    prepared = prepare(model, cfg.observer, cfg.per_channel, qat=False, engine=engine, keep=keep,
                       bits=activation_bits(cfg.eager_activation_bits))
    calibrate(prepared, batches, cfg.calibration_batches)
    return tq.convert(prepared.eval(), inplace=False)


def quantize_qat(model: nn.Module, cfg: QuantizeConfig, finetune: Callable[[nn.Module], None]) -> nn.Module:
    """Fake-quant fine-tune with ``finetune(prepared)`` (the shared training loop), then convert."""
    prepared = prepare(model, cfg.observer, cfg.per_channel, qat=True)
    finetune(prepared)
    return tq.convert(prepared.cpu().eval(), inplace=False)


def skeleton(model: nn.Module, quant: dict[str, Any]) -> nn.Module:
    """A static int8 model of ``model``'s structure with placeholder qparams, for load_state_dict."""
    prepared = prepare(model, quant["observer"], quant["per_channel"], qat=False)
    return tq.convert(prepared.eval(), inplace=False)
