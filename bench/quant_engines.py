"""int8 engines side by side: fp32 eager, fp32 compiled, eager int8 (torch.ao x86) and PT2E int8
(torchao X86InductorQuantizer, torch.compile with Inductor freezing), one interleaved
measurement per model at a fixed thread count (pipelines.benchmark.time_interleaved).

    .venv/bin/python bench/quant_engines.py            # default final CNN, a narrow CNN, the teacher, ResNet-18
    .venv/bin/python bench/quant_engines.py --quick    # the same without the teacher, fewer iterations
    .venv/bin/python bench/quant_engines.py --cpp-wrapper never   # PT2E with Inductor's Python wrapper

The narrow CNN is there on purpose: at 8x8 inputs and 16-64 channels the model is bound by
per-operator overhead, and int8 gains little over fp32 (or loses to compiled fp32).

Both compiled variants are built exactly as ``compile_benchmark`` builds them
(``pipelines.benchmark.compile_for``: default mode, freezing, inference_mode, a cold Inductor
cache, so compile_s is what a first compile costs): freezing is what lets Inductor fold the int8
weights and pattern-match dq -> conv/linear -> q into oneDNN int8 kernels; without it a PT2E
graph runs as dequantize + fp32 ops. ``--cpp-wrapper`` is ``benchmark.cpp_wrapper``: by default
(auto) the PT2E graph gets Inductor's C++ wrapper and the fp32 graph the Python one; run it again
with ``never`` to see what the Python wrapper's per-op dispatch costs a small int8 model.
Calibration uses random inputs: this measures latency, not accuracy (the tests check accuracy on
digits).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import pipelines  # noqa: E402,F401  (central warning filters)
from pipelines.compression.quantize import eager as qz  # noqa: E402
from pipelines.compression.quantize import pt2e as qp  # noqa: E402
from pipelines.measurement.compile import CPP_WRAPPER_POLICIES, CompileSettings, compile_for, warm_compiler  # noqa: E402
from pipelines.measurement.timing import set_threads, time_interleaved  # noqa: E402
from pipelines.core.config import QuantizeConfig  # noqa: E402
from pipelines.core.config import ModelConfig  # noqa: E402
from pipelines.models import CNN, build_model  # noqa: E402

VARIANTS = ["fp32 eager", "fp32 compiled", "int8 eager (torch.ao)", "int8 pt2e compiled"]


def run_model(name: str, model: nn.Module, shape: tuple[int, ...], warmup: int, iters: int,
              calib: int, cpp_wrapper: str) -> list[dict]:
    torch.manual_seed(0)
    model = model.eval()
    x = torch.randn(*shape)
    batches = [torch.randn(*shape) for _ in range(calib)]
    cfg = QuantizeConfig(method="static", observer="histogram", per_channel=True, calibration_batches=calib)
    started = time.perf_counter()
    eager_int8 = qz.quantize_static(model, batches, cfg)
    pt2e_int8 = qp.quantize_static(model, batches, cfg, x[:2])
    prep_s = time.perf_counter() - started
    settings = CompileSettings(cpp_wrapper)
    compiled = {"fp32 compiled": compile_for(model, "compile-default", x, settings=settings),
                "int8 pt2e compiled": compile_for(pt2e_int8, "compile-default", x, settings=settings)}
    for key, c in compiled.items():
        if c.error:
            raise SystemExit(f"[{name}] {key}: did not compile: {c.error}")
    fns = {
        "fp32 eager": lambda: model(x),
        "fp32 compiled": lambda: compiled["fp32 compiled"].fn(x),
        "int8 eager (torch.ao)": lambda: eager_int8(x),
        "int8 pt2e compiled": lambda: compiled["int8 pt2e compiled"].fn(x),
    }
    with torch.inference_mode():
        ref = model(x)
        err = {k: (fn() - ref).abs().max().item() for k, fn in fns.items()}
        agree = {k: (fn().argmax(1) == ref.argmax(1)).float().mean().item() for k, fn in fns.items()}
    timings = time_interleaved(fns, warmup=warmup, iters=iters)
    fp32 = timings["fp32 eager"].p50_ms
    rows = []
    for key in VARIANTS:
        lat, c = timings[key], compiled.get(key)
        rows.append({"model": name, "variant": key, "p50_ms": lat.p50_ms, "p90_ms": lat.p90_ms,
                     "speedup_vs_fp32_eager": fp32 / lat.p50_ms, "compile_s": c.compile_time_s if c else 0.0,
                     "wrapper": c.wrapper if c else "",
                     "max_abs_err": err[key], "top1_agree": agree[key]})
    print(f"[{name}] quantized both engines in {prep_s:.1f}s; pt2e fp32 layers: {qp.fp32_layers(pt2e_int8) or 'none'}",
          flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer models and iterations (~1 min)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--cpp-wrapper", choices=CPP_WRAPPER_POLICIES, default="auto",
                    help="benchmark.cpp_wrapper for the compiled variants (auto: C++ for PT2E int8 only)")
    args = ap.parse_args()
    set_threads(args.threads)
    warm_compiler()
    warmup, iters, calib = (3, 15, 2) if args.quick else (10, 40, 4)
    bs = args.batch
    cases = [("cnn [64,128,256] 1x8x8 (final)", lambda: CNN(1, 10, [64, 128, 256]), (bs, 1, 8, 8)),
             ("cnn [16,32,64] 1x8x8 (narrow)", lambda: CNN(1, 10, [16, 32, 64]), (bs, 1, 8, 8))]
    if not args.quick:
        cases.append(("cnn [128,256,512]x2 1x8x8 (teacher)", lambda: CNN(1, 10, [128, 256, 512], depth=2),
                      (bs, 1, 8, 8)))
    cases.append(("resnet18 (quantizable) 3x32x32", lambda: build_model(ModelConfig(arch="resnet18"), 3, 10), (bs, 3, 32, 32)))

    started = time.perf_counter()
    rows = []
    for name, build, shape in cases:
        torch.manual_seed(0)
        rows += run_model(name, build(), shape, warmup, iters, calib, args.cpp_wrapper)
        torch._dynamo.reset()

    print(f"\nbatch {bs}, {torch.get_num_threads()} threads, warm-up {warmup}, {iters} interleaved iters, "
          f"torch {torch.__version__}")
    header = f"{'model':36} {'variant':24} {'p50 ms':>8} {'p90 ms':>8} {'x fp32 eager':>12} {'compile s':>9} " \
             f"{'wrapper':>7} {'max|err|':>9} {'top1=':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:36} {r['variant']:24} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} "
              f"{r['speedup_vs_fp32_eager']:12.2f} {r['compile_s']:9.1f} {r['wrapper']:>7} {r['max_abs_err']:9.4f} "
              f"{r['top1_agree']:6.2f}")
    print("\nratios (p50, same interleaved run):")
    for name in dict.fromkeys(r["model"] for r in rows):
        p = {r["variant"]: r["p50_ms"] for r in rows if r["model"] == name}
        print(f"  {name}: pt2e int8 latency / eager int8 {p['int8 pt2e compiled'] / p['int8 eager (torch.ao)']:.2f} "
              "(bar <= 1.2); pt2e int8 speedup "
              f"vs fp32 compiled {p['fp32 compiled'] / p['int8 pt2e compiled']:.2f}x, "
              f"vs fp32 eager {p['fp32 eager'] / p['int8 pt2e compiled']:.2f}x; "
              f"eager int8 speedup vs fp32 eager {p['fp32 eager'] / p['int8 eager (torch.ao)']:.2f}x")
    print(f"\ntotal {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
