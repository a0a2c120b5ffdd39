"""AOTInductor: a model compiled ahead of time into a shared library plus its weights, one
``.pt2`` package (``torch._inductor.aoti_compile_and_package``), run by a C++ runner: no Python
between kernels, no dynamo guards, one Python call per batch. For a float model the batch
dimension stays dynamic, so one package serves every batch size; Inductor freezing is on, as for the ``compile-*`` rows
(weights prepacked; a PT2E int8 graph's quantize/dequantize patterns become oneDNN int8 kernels).

torch.ao *eager* int8 modules cannot be exported (their kernels have no fake-tensor
implementation), so they have no AOTInductor row: :data:`EAGER_INT8_REASON`.

A PT2E int8 graph is packaged *static*, one package per served batch size
(``<model>.bs<N>.pt2``, :data:`PT2E_INT8_NOTE`), exported and compiled under ``torch.no_grad()``:
measured on torch 2.14.1 with the default run's trained [64,128,256] CNN, Inductor's int8 fusion
(dq -> conv -> q into oneDNN int8 kernels) only runs when ``aoti_compile_and_package`` is called
under ``torch.no_grad()``, and then the dynamic-batch package computes wrong logits (max |diff|
13 vs 0.002 for ``torch.compile``; top-1 agreement 22% at batch 64, 14% at batch 7); a
static-batch one is right (0.8-1.4x the compiled graph's p50 in runs here). With autograd on, a
dynamic package dequantizes the weights once and runs fp32 convolutions: correct, int8-sized, not
int8-fast (``bench/aoti_int8.py`` shows all three). A static package called with a smaller batch
pads it to its own (what a server with a fixed compiled batch does), a larger one is split
(:class:`Padded`)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

MAX_BATCH = 1 << 16
EAGER_INT8_REASON = ("torch.ao eager int8 modules cannot be exported (no fake-tensor kernels); "
                     "quantize.engine: pt2e gives an exportable int8 graph")
PT2E_INT8_NOTE = ("AOTInductor package of this PT2E int8 graph for this batch size (static shape, int8 "
                  "kernels; the dynamic-batch int8 package computes wrong outputs on torch 2.14, see "
                  "pipelines/measurement/deploy/aoti.py)")


def package(model: nn.Module, example: torch.Tensor, path: str | Path, static: bool = False) -> Path:
    """Export ``model`` and AOT-compile it into the package ``path``: batch dimension dynamic, or
    ``static`` (``example``'s batch only, exported and compiled under ``torch.no_grad()``: a PT2E
    int8 graph then gets Inductor's int8 fusion, see the module docstring)."""
    import contextlib

    from pipelines.core.pt2e_graph import register_int8_ops

    register_int8_ops()
    with torch.no_grad() if static else contextlib.nullcontext():
        if static:
            program = torch.export.export(model, (example,))
        else:
            batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        return _compile(program, Path(path))


def _compile(program, path: Path) -> Path:
    import torch._inductor

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.pt2")  # the packager wants a .pt2 name; renamed when complete
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=str(tmp), inductor_configs={"freezing": True})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: str | Path):
    """The package's runner: :class:`Direct` for a one-tensor-in, one-tensor-out model (every
    chain model), else the callable ``aoti_load_package`` returns."""
    import torch._inductor

    compiled = torch._inductor.aoti_load_package(str(path))
    return Direct(compiled) if Direct.fits(compiled) else compiled


class Direct:
    """The C++ runner (``AOTIModelPackageLoader.run``) called with the input as its one flat
    tensor. ``aoti_load_package``'s callable does, on every call, what only has to be done once:
    parse the package's call spec (two JSON tree specs), flatten the arguments and unflatten the
    outputs with pytree; for a model of one tensor in and one out that is the same as
    ``run([x])[0]`` (:meth:`fits` checks the call spec once)."""

    def __init__(self, compiled) -> None:
        self.compiled = compiled
        self.run = compiled.loader.run

    @staticmethod
    def fits(compiled) -> bool:
        from torch.utils import _pytree as pytree

        loader = getattr(compiled, "loader", None)
        if loader is None:
            return False
        in_spec, out_spec = (pytree.treespec_loads(s) for s in loader.get_call_spec())
        args = pytree.tree_unflatten([0] * in_spec.num_leaves, in_spec)
        return in_spec.num_leaves == 1 and args == ((0,), {}) and out_spec.num_leaves == 1 and out_spec.is_leaf()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run([x])[0]


class Padded:
    """A static-batch package called with any batch: a smaller one padded with zeros to ``batch``
    (the padding rows' outputs dropped), a larger one run in slices of ``batch``."""

    def __init__(self, fn, batch: int) -> None:
        self.fn, self.batch = fn, batch

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        if n == self.batch:
            return self.fn(x)
        if n > self.batch:
            return torch.cat([self(x[i:i + self.batch]) for i in range(0, n, self.batch)])
        pad = x.new_zeros((self.batch - n, *x.shape[1:]))
        return self.fn(torch.cat([x, pad]))[:n]
