"""int8 quantization, affine scheme ``x ~ S * (q - Z)``: one registry keyed by (engine, method).

Every caller (the chain, the search, int8 checkpoint loading: :func:`rebuild_int8`) goes through
:func:`quantizer`, so the choice of implementation for ``quantize.engine`` x ``quantize.method``
lives here only:

- engine ``eager``: torch.ao x86 (:mod:`.eager`), the textbook API;
- engine ``pt2e``: torch.export + torchao ``X86InductorQuantizer`` (:mod:`.pt2e`);
- engine ``auto`` (default): eager for the built-in quantizable archs, pt2e for any other model
  (:func:`resolve_engine`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from pipelines.compression.quantize import eager, pt2e
from pipelines.compression.quantize.program import load_program, program_tensor
from pipelines.compression.quantize.pt2e import REPORT_KEY, fp32_layers
from pipelines.core.config import QuantizeConfig
from pipelines.core.cpu import has_int8_dot
from pipelines.core.errors import ParamsError, QuantizeError
from pipelines.models.checkpoint import float_skeleton
from pipelines.training.context import Context, train

__all__ = ["REPORT_KEY", "Quantizer", "fp32_layers", "load_program", "program_tensor", "quantize", "quantizer",
           "rebuild_int8", "recipe", "resolve_engine", "skeleton"]


@dataclass(frozen=True)
class Quantizer:
    """How one (engine, method) pair quantizes a float model and rebuilds a saved one.

    ``skeleton`` builds an int8 model of the right structure from the float one, ready for the
    saved ``state_dict`` (``None``: the result is a graph saved as a torch.export program);
    ``assign``: load that state_dict with ``assign=True`` (tensor-subclass weights replace the
    skeleton's instead of being copied into them)."""

    run: Callable[[nn.Module, QuantizeConfig, Context], nn.Module]
    skeleton: Callable[[nn.Module, dict[str, Any]], nn.Module] | None
    assign: bool = False


def _finetune(ctx: Context, cfg: QuantizeConfig, desc: str) -> Callable[[nn.Module], None]:
    def finetune(prepared: nn.Module) -> None:
        train(ctx, prepared, cfg.qat_epochs, cfg.qat_lr, desc)

    return finetune


def _eager_dynamic(model: nn.Module, *_: Any) -> nn.Module:
    return eager.quantize_dynamic(model)


def _torchao_dynamic(model: nn.Module, *_: Any) -> nn.Module:
    return pt2e.quantize_dynamic(model)


REGISTRY: dict[tuple[str, str], Quantizer] = {
    ("eager", "dynamic"): Quantizer(_eager_dynamic, _eager_dynamic),
    ("eager", "static"): Quantizer(lambda m, cfg, ctx: eager.quantize_static(m, ctx.calibration_batches(cfg.calibration_batches), cfg),
                                   eager.skeleton),
    ("eager", "qat"): Quantizer(lambda m, cfg, ctx: eager.quantize_qat(m, cfg, _finetune(ctx, cfg, "qat")),
                                eager.skeleton),
    ("pt2e", "dynamic"): Quantizer(_torchao_dynamic, _torchao_dynamic, assign=True),
    ("pt2e", "static"): Quantizer(lambda m, cfg, ctx: pt2e.quantize_static(
        m, ctx.calibration_batches(cfg.calibration_batches), cfg, ctx.example(2)), None),
    ("pt2e", "qat"): Quantizer(lambda m, cfg, ctx: pt2e.quantize_qat(m, cfg, ctx.example(2),
                                                                     _finetune(ctx, cfg, "qat (pt2e)")), None),
}


def quantizer(engine: str, method: str) -> Quantizer:
    try:
        return REGISTRY[(engine, method)]
    except KeyError:
        allowed = ", ".join(f"{e}/{m}" for e, m in REGISTRY)
        raise ParamsError(f"quantize: no quantizer for engine {engine!r} and method {method!r}; "
                          f"allowed: {allowed}") from None


def resolve_engine(cfg: QuantizeConfig, model: nn.Module) -> str:
    """``quantize.engine`` for this model: ``auto`` is eager for the built-in quantizable archs
    (QuantStub + ``fuse_model``) and pt2e (torch.export: any exportable model) otherwise."""
    if cfg.engine == "auto":
        return "eager" if eager.eager_quantizable(model) else "pt2e"
    if cfg.engine == "eager" and cfg.method in ("static", "qat") and not eager.eager_quantizable(model):
        raise QuantizeError(f"quantize.engine: eager {cfg.method} needs QuantStub/DeQuantStub and fuse_model() in "
                            "the model (the built-in cnn, mlp, resnet18, mobilenet_v2 have them); "
                            "use engine auto or pt2e for this model")
    return cfg.engine


def quantize(model: nn.Module, cfg: QuantizeConfig, ctx: Context, engine: str | None = None) -> nn.Module:
    """int8 copy of ``model`` per ``cfg`` (``method: none`` returns ``model`` itself); ``engine``:
    one already chosen for ``cfg.engine: auto`` (default: :func:`resolve_engine`'s rule)."""
    model = model.cpu().eval()
    if cfg.method == "none":
        return model
    return quantizer(engine or resolve_engine(cfg, model), cfg.method).run(model, cfg, ctx)


def recipe(cfg: QuantizeConfig, engine: str | None = None) -> dict[str, Any] | None:
    """What a checkpoint needs to rebuild the int8 model (see :func:`skeleton`); None for fp32.
    ``engine``: the one :func:`resolve_engine` chose (``auto`` is never stored)."""
    if cfg.method == "none":
        return None
    out = {"method": cfg.method, "engine": engine or cfg.engine, "observer": cfg.observer,
           "per_channel": cfg.per_channel}
    if out["engine"] == "eager" and cfg.method == "static":
        out["activation_bits"] = eager.activation_bits(cfg.eager_activation_bits)
    return out


def skeleton(model: nn.Module, quant: dict[str, Any]) -> tuple[nn.Module, bool]:
    """``(int8 model with placeholder weights, assign)`` for a saved ``recipe``."""
    entry = quantizer(quant.get("engine", "eager"), quant["method"])
    if entry.skeleton is None:
        raise ValueError(f"{quant.get('engine')}/{quant['method']} models are saved as programs, not state_dicts")
    return entry.skeleton(model, quant), entry.assign


def rebuild_int8(payload: dict[str, Any]) -> nn.Module:
    """The int8 model of a checkpoint payload (:mod:`pipelines.models.checkpoint`): a PT2E graph
    from its program, any other from its recipe replayed on the float skeleton, then its state_dict."""
    if payload.get("program") is not None:
        return load_program(payload["program"])
    if payload["quant"].get("activation_bits") == 8 and not has_int8_dot():
        warnings.warn("this int8 model was calibrated for 8-bit activations on a CPU with int8 dot products; this "
                      "CPU has none (avx512_vnni / avx_vnni / amx_int8), where fbgemm's int16 pair sums can "
                      "saturate: re-quantize it here (quantize.eager_activation_bits: auto)", stacklevel=2)
    model, assign = skeleton(float_skeleton(payload), payload["quant"])
    model.load_state_dict(payload["state_dict"], assign=assign)
    return model
