"""A compiled graph called without Dynamo at the one input it was compiled for
(``benchmark.compiled_call: direct``).

Every call of a ``torch.compile``'d model goes through Dynamo before any compiled code runs: its
frame-evaluation hook intercepts ``forward``, looks the frame up in its cache and evaluates the
guards of the entry (input shapes and strides, the module's attributes, global state), enters the
compiled region, then AOTAutograd's runtime wrapper, and only then Inductor's graph. On the
trained final model of the default run (PT2E int8, batch 64, C++ wrapper, 2 threads) that was
~0.13 ms of a ~0.68 ms call, measured side by side: the PT2E graph called through Dynamo was
1.09-1.15x eager int8's p50, the same graph called directly 0.84-0.91x (8 interleaved rounds).

A benchmark calls one model at one input shape thousands of times, which is what a serving loop
with a fixed batch does too: the graph Inductor compiled for that shape is the whole work.
:class:`CapturingInductor` is ``torch.compile``'s own Inductor backend (same mode options, same
``compile_fx``) that also keeps the graphs it hands back to Dynamo; :func:`direct_call` makes a
callable that runs that graph straight away when its own cheap checks pass (a plain CPU tensor of
the compiled shape, strides and dtype, autograd off, the module still in the mode it was compiled
in) and goes through the guarded ``torch.compile`` call otherwise, so no input ever reaches code
compiled for another. It is only offered for a model that compiled to one graph of one input
whose direct output equals the guarded call's; anything else keeps the guarded call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_InductorBackend: Any = getattr(torch, "_TorchCompileInductorWrapper", None)  # torch.compile's backend object


def capturing_backend(mode: str) -> Any | None:
    """Inductor in ``mode`` as ``torch.compile`` builds it, keeping what it compiles (``.graphs``);
    None where this torch has no such backend object (then compile the usual way)."""
    if _InductorBackend is None:
        return None
    return CapturingInductor(mode)


if _InductorBackend is not None:
    class CapturingInductor(_InductorBackend):
        """``torch.compile(mode=mode, dynamic=False)``'s backend, plus the compiled graphs."""

        def __init__(self, mode: str) -> None:
            super().__init__(mode, None, False)
            self.graphs: list[tuple[Callable[..., Any], int]] = []  # (graph, number of inputs)

        def __call__(self, model_: Any, inputs_: Any, **kwargs: Any) -> Any:
            graph = super().__call__(model_, inputs_, **kwargs)
            self.graphs.append((graph, len(inputs_)))
            return graph


@dataclass
class DirectCall:
    """``graph`` for the input it was compiled for, ``guarded`` (the torch.compile'd model) for
    every other. The checks are the ones a changed input would fail; the model's weights are
    frozen into the graph either way (Inductor freezing), as they are under Dynamo."""

    graph: Callable[..., Any]
    guarded: Callable[[torch.Tensor], Any]
    model: nn.Module
    training: bool
    shape: torch.Size
    stride: tuple[int, ...]
    dtype: torch.dtype
    autocast: bool

    def __call__(self, x: torch.Tensor) -> Any:
        if (type(x) is torch.Tensor and x.shape == self.shape and x.dtype == self.dtype and x.device.type == "cpu"
                and x.stride() == self.stride and not torch.is_grad_enabled()
                and self.model.training == self.training and torch.is_autocast_enabled("cpu") == self.autocast):
            return self.graph(x)[0]
        return self.guarded(x)


def direct_call(backend: Any, model: nn.Module, guarded: Callable[[torch.Tensor], Any],
                example: torch.Tensor) -> DirectCall | None:
    """A :class:`DirectCall` of the one graph ``backend`` compiled ``model`` into for ``example``
    (a CPU tensor), or None: more or fewer graphs (graph breaks), other graph inputs than the
    tensor (lifted parameters, symbolic sizes), or an output that is not one tensor equal to the
    guarded call's. Call it under the grad and autocast modes the model was compiled in."""
    if backend is None or len(backend.graphs) != 1 or example.device.type != "cpu":
        return None
    graph, inputs = backend.graphs[0]
    if inputs != 1:
        return None
    call = DirectCall(graph, guarded, model, model.training, example.shape, example.stride(), example.dtype,
                      torch.is_autocast_enabled("cpu"))
    try:
        out = graph(example)
    except Exception:  # noqa: BLE001 - a graph that needs more than the tensor keeps the guarded call
        return None
    want = guarded(example)
    if not (isinstance(want, torch.Tensor) and isinstance(out, (list, tuple)) and len(out) == 1
            and isinstance(out[0], torch.Tensor) and torch.equal(out[0], want)):
        return None
    return call
