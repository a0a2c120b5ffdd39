"""Why the ``aoti`` row of a PT2E int8 graph runs fp32 kernels: the run's trained final model
(``models/pruned.pt``) quantized with PT2E, packaged with AOTInductor three ways, against eager
int8 and the compiled PT2E graph, interleaved, 2 threads, batch 64.

    .venv/bin/python bench/aoti_int8.py        # after `make repro` (~1 min)

Prints, per variant, max |logit diff| and top-1 agreement with the PT2E graph at batch 1, 7 and
64, the p50/p90 and the top profiler ops (``aten::mkldnn_convolution`` = fp32, ``onednn::qconv``
= int8). Measured here on torch 2.14.1: packaged under ``torch.no_grad()`` with a dynamic batch
the int8 fusion runs but the logits are wrong (top-1 agreement 22% at batch 64); with a static
batch they are right (0.8-1.4x the compiled graph's p50 in different runs); with autograd on (the
pipeline's choice) the package runs fp32 convolutions, right and ~2-3x slower than int8."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import pipelines  # noqa: E402,F401  (central warning filters)
from pipelines.compression.quantize import eager as qz  # noqa: E402
from pipelines.compression.quantize import pt2e as qp  # noqa: E402
from pipelines.core.cpu import cpu_model, isa_summary  # noqa: E402
from pipelines.core.pt2e_graph import register_int8_ops  # noqa: E402
from pipelines.measurement.deploy import aoti  # noqa: E402
from pipelines.measurement.compile import CompileSettings, compile_for, warm_compiler  # noqa: E402
from pipelines.measurement.kernels import kernel_profile  # noqa: E402
from pipelines.measurement.timing import set_threads, time_blocks  # noqa: E402
from quant_engines import trained_case  # noqa: E402


def static_package(graph, x: torch.Tensor, path: Path):
    """What :func:`aoti.package` does with the batch fixed to ``len(x)``, under no_grad."""
    register_int8_ops()
    with torch.no_grad():
        program = torch.export.export(graph, (x,))
        torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs={"freezing": True})
    return aoti.load(path)


def main() -> None:
    set_threads(2)
    warm_compiler()
    case = trained_case(Path(__file__).resolve().parents[1], 64)
    if case is None:
        raise SystemExit("models/pruned.pt: no finished run here (make repro)")
    _, model, (x, batches), cfg, _, _ = case
    eager = qz.quantize_static(model.eval(), batches, cfg)
    graph = qp.quantize_static(model, batches, cfg, x[:2])
    compiled = compile_for(graph, "compile-default", x, settings=CompileSettings("auto")).fn
    out = Path("/tmp") / "aoti_int8_bench"
    out.mkdir(exist_ok=True)
    with torch.no_grad():
        no_grad_dynamic = aoti.load(aoti.package(graph, x, out / "no_grad_dynamic.pt2"))
    # variant -> (callable, batch sizes it accepts)
    fns = {"eager int8 (torch.ao)": (eager, (1, 7, 64)),
           "pt2e compiled (torch.compile)": (compiled, (1, 7, 64)),
           "aoti grad on, dynamic batch (pipeline)": (aoti.load(aoti.package(graph, x, out / "pipeline.pt2")),
                                                      (1, 7, 64)),
           "aoti no_grad, dynamic batch": (no_grad_dynamic, (1, 7, 64)),
           "aoti no_grad, static batch": (static_package(graph, x, out / "no_grad_static.pt2"), (len(x),))}
    print(f"CPU {cpu_model()} ({isa_summary()}), torch {torch.__version__}")
    with torch.inference_mode():
        for key, (fn, sizes) in fns.items():
            checks = []
            for n in sizes:
                ref, got = graph(x[:n].contiguous()), fn(x[:n].contiguous())
                checks.append(f"bs{n}: |diff| {(got - ref).abs().max().item():.3f}, "
                              f"top-1 agree {(got.argmax(1) == ref.argmax(1)).float().mean().item():.2f}")
            print(f"{key:40} " + "; ".join(checks))
        timed = {k: (lambda f=f: f(x)) for k, (f, _) in fns.items()}
        t = time_blocks(timed, warmup=20, iters=200).timings
    for key, fn in timed.items():
        with torch.inference_mode():
            prof = kernel_profile(fn, iters=20)
        ops = ", ".join(f"{op} {ms:.3f}" for op, ms in prof.top_ops[:3])
        print(f"{key:40} p50 {t[key].p50_ms:.3f} ms, p90 {t[key].p90_ms:.3f}; top ops: {ops}")


if __name__ == "__main__":
    main()
