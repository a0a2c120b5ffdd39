"""AOTInductor: a model compiled ahead of time into a shared library plus its weights, one
``.pt2`` package (``torch._inductor.aoti_compile_and_package``), run by a C++ runner: no Python
between kernels, no dynamo guards, one Python call per batch. The batch dimension stays dynamic,
so one package serves every batch size; Inductor freezing is on, as for the ``compile-*`` rows
(weights prepacked; a PT2E int8 graph's quantize/dequantize patterns become oneDNN int8 kernels).

torch.ao *eager* int8 modules cannot be exported (their kernels have no fake-tensor
implementation), so they have no AOTInductor row: :data:`EAGER_INT8_REASON`.

A PT2E int8 graph is packaged *with* autograd on, on purpose (:data:`PT2E_INT8_NOTE`): measured on
torch 2.14.1 with the default run's trained [64,128,256] CNN, Inductor's int8 fusion (dq -> conv
-> q into oneDNN int8 kernels) only runs when ``aoti_compile_and_package`` is called under
``torch.no_grad()``, and then the dynamic-batch package computes wrong logits (max |diff| 13 vs
0.002 for ``torch.compile``; top-1 agreement 22% at batch 64, 14% at batch 7); a static-batch one
is right (one package per batch size; 0.8-1.4x the compiled graph's p50 in runs here). With
autograd on, the package dequantizes the weights once and runs fp32 convolutions: correct,
int8-sized, not int8-fast (``bench/aoti_int8.py`` shows all three)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

MAX_BATCH = 1 << 16
EAGER_INT8_REASON = ("torch.ao eager int8 modules cannot be exported (no fake-tensor kernels); "
                     "quantize.engine: pt2e gives an exportable int8 graph")
PT2E_INT8_NOTE = ("AOTInductor runs this PT2E int8 graph as dequantized weights + fp32 kernels (its int8 fusion "
                  "computed wrong outputs with a dynamic batch on torch 2.14; see "
                  "pipelines/measurement/deploy/aoti.py)")


def package(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Export ``model`` (dynamic batch) and AOT-compile it into the package ``path``."""
    import torch._inductor

    from pipelines.core.pt2e_graph import register_int8_ops

    register_int8_ops()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.pt2")  # the packager wants a .pt2 name; renamed when complete
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=str(tmp), inductor_configs={"freezing": True})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: str | Path):
    import torch._inductor

    return torch._inductor.aoti_load_package(str(path))
