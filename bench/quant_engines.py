"""int8 engines side by side: fp32 eager, fp32 compiled, eager int8 (torch.ao x86) and PT2E int8
(torchao X86InductorQuantizer, torch.compile with Inductor freezing), one side-by-side
measurement per model at a fixed thread count (pipelines.measurement.timing.time_blocks: rotating blocks),
and for every variant the time its compute kernels take (pipelines.measurement.kernels): the call
p50 next to that sum makes the per-call overhead a number (``p50/kern`` divides a p50 timed right
before the profile, since this kind of VM's speed drifts within a run).

    .venv/bin/python bench/quant_engines.py            # the run's trained models, then random CNNs, ResNet-18
    .venv/bin/python bench/quant_engines.py --quick    # the same without the teacher, fewer iterations
    .venv/bin/python bench/quant_engines.py --only trained   # only the run's models (after `make repro`)
    .venv/bin/python bench/quant_engines.py --cpp-wrapper never   # PT2E with Inductor's Python wrapper

The trained case (``--run``, default this checkout) loads ``models/pruned.pt`` of a finished run,
quantizes it with both engines on the run's own calibration batches, times it on the run's test
images, and adds ``models/quantized.pt`` itself (what ``compile_benchmark`` timed) as a row.

The narrow CNN is there on purpose: at 8x8 inputs and 16-64 channels the model is bound by
per-operator overhead, and int8 gains little over fp32 (or loses to compiled fp32).

Both compiled variants are built exactly as ``compile_benchmark`` builds them
(``pipelines.benchmark.compile_for``: default mode, freezing, inference_mode, a cold Inductor
cache, so compile_s is what a first compile costs): freezing is what lets Inductor fold the int8
weights and pattern-match dq -> conv/linear -> q into oneDNN int8 kernels; without it a PT2E
graph runs as dequantize + fp32 ops. ``--cpp-wrapper`` is ``benchmark.cpp_wrapper``: by default
(auto) the PT2E graph gets Inductor's C++ wrapper and the fp32 graph the Python one; run it again
with ``never`` to see what the Python wrapper's per-op dispatch costs a small int8 model. Compiled
variants are called as ``compile_benchmark`` calls them (``benchmark.compiled_call: direct``:
Inductor's graph without Dynamo at the timed shape, :mod:`pipelines.measurement.direct_call`);
the row ``int8 pt2e compiled, through dynamo`` is the same PT2E graph with every call through
torch.compile's guards, so what Dynamo costs a call is a number too.
Calibration of the random models uses random inputs: they measure latency, not accuracy (the tests
check accuracy on digits).
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
from pipelines.compression.quantize.small_spatial import convs_as_linear  # noqa: E402
from pipelines.measurement.kernels import kernel_profile  # noqa: E402
from pipelines.measurement.compile import CPP_WRAPPER_POLICIES, CompileSettings, compile_for, warm_compiler  # noqa: E402
from pipelines.measurement.timing import set_threads, time_blocks  # noqa: E402
from pipelines.core.config import QuantizeConfig  # noqa: E402
from pipelines.core.cpu import cpu_model, isa_summary  # noqa: E402
from pipelines.core.kinds import is_pt2e_int8  # noqa: E402
from pipelines.core.config import ModelConfig  # noqa: E402
from pipelines.models import CNN, build_model  # noqa: E402

VARIANTS = ["fp32 eager", "fp32 compiled", "int8 eager (torch.ao)", "int8 pt2e compiled"]
FP32_LINEAR = "fp32 compiled, convs as linear"
PT2E_DYNAMO = "int8 pt2e compiled, through dynamo"


def run_model(name: str, model: nn.Module, shape: tuple[int, ...], warmup: int, iters: int,
              calib: int, cpp_wrapper: str, data: tuple[torch.Tensor, list[torch.Tensor]] | None = None,
              cfg: QuantizeConfig | None = None, extra: dict[str, nn.Module] | None = None) -> list[dict]:
    """``data``: (timed input, calibration batches) of a real run, else random ones of ``shape``;
    ``cfg``: the run's quantize section; ``extra``: more ready models to time in the same loop."""
    torch.manual_seed(0)
    model = model.eval()
    x, batches = data or (torch.randn(*shape), [torch.randn(*shape) for _ in range(calib)])
    cfg = cfg or QuantizeConfig(method="static", observer="histogram", per_channel=True, calibration_batches=calib)
    started = time.perf_counter()
    eager_int8 = qz.quantize_static(model, batches, cfg)
    pt2e_int8 = qp.quantize_static(model, batches, cfg, x[:2])
    prep_s = time.perf_counter() - started
    rewritten = pt2e_int8.meta[qp.REPORT_KEY].get("convs_as_linear")
    if rewritten:  # the same rewrite in fp32, so int8's gain is not credited with what the matmul form gives fp32
        fp32_linear = qp.export(model, x[:2])  # before any compile: a strict export evicts dynamo's compiled code
        convs_as_linear(fp32_linear)
    settings = CompileSettings(cpp_wrapper)
    compiled = {"fp32 compiled": compile_for(model, "compile-default", x, settings=settings),
                "int8 pt2e compiled": compile_for(pt2e_int8, "compile-default", x, settings=settings),
                # the same graph with every call through torch.compile's guards: what Dynamo costs a call
                PT2E_DYNAMO: compile_for(pt2e_int8, "compile-default", x,
                                         settings=CompileSettings(cpp_wrapper, call="dynamo"))}
    if rewritten:
        compiled[FP32_LINEAR] = compile_for(fp32_linear, "compile-default", x, settings=settings)
    for key, c in compiled.items():
        if c.error:
            raise SystemExit(f"[{name}] {key}: did not compile: {c.error}")
    fns = {
        "fp32 eager": lambda: model(x),
        "fp32 compiled": lambda: compiled["fp32 compiled"].fn(x),
        "int8 eager (torch.ao)": lambda: eager_int8(x),
        "int8 pt2e compiled": lambda: compiled["int8 pt2e compiled"].fn(x),
        PT2E_DYNAMO: lambda: compiled[PT2E_DYNAMO].fn(x),
        **({FP32_LINEAR: lambda: compiled[FP32_LINEAR].fn(x)} if rewritten else {}),
        **{key: (lambda m=m: m(x)) for key, m in (extra or {}).items()},
    }
    with torch.inference_mode():
        ref = model(x)
        err = {k: (fn() - ref).abs().max().item() for k, fn in fns.items()}
        agree = {k: (fn().argmax(1) == ref.argmax(1)).float().mean().item() for k, fn in fns.items()}
    timings = time_blocks(fns, warmup=warmup, iters=iters).timings
    fp32 = timings["fp32 eager"].p50_ms
    kernels = {key: kernel_profile(fn, iters=max(10, iters // 3), timed_iters=max(20, iters // 3))
               for key, fn in fns.items()}  # call p50 / kernel time from one moment: this VM's speed drifts
    rows = []
    for key in fns:
        lat, c, k = timings[key], compiled.get(key), kernels[key]
        rows.append({"model": name, "variant": key, "p50_ms": lat.p50_ms, "p90_ms": lat.p90_ms,
                     "speedup_vs_fp32_eager": fp32 / lat.p50_ms, "compile_s": c.compile_time_s if c else 0.0,
                     "wrapper": c.wrapper if c else "", "call": c.call if c else "",
                     "max_abs_err": err[key], "top1_agree": agree[key],
                     "kernel_ms": k.kernel_ms, "kernel_source": k.source, "over_kernel": k.overhead_ratio(),
                     "top_ops": k.top_ops[:4], "primitives": dict(list(k.primitives.items())[:6])})
    print(f"[{name}] quantized both engines in {prep_s:.1f}s; pt2e fp32 layers: {qp.fp32_layers(pt2e_int8) or 'none'}; "
          f"pt2e convs run as linear (quantize.convs_as_linear): {', '.join(rewritten) or 'none'}", flush=True)
    return rows


def trained_case(run: Path, bs: int):
    """The run's fp32 final model (models/pruned.pt), its data, quantize section and int8 model."""
    import os

    from pipelines.compression.checkpoint import load_model
    from pipelines.core.config import load_params
    from pipelines.training.context import Context

    models = run / "models"
    if not (models / "pruned.pt").exists():
        return None
    cwd = os.getcwd()
    os.chdir(run)  # data.root and the like are relative to the run's checkout
    try:
        params = load_params("params.yaml")
        ctx = Context(params)
        data = (ctx.example(bs), ctx.calibration_batches())
    finally:
        os.chdir(cwd)
    pruned = load_model(models / "pruned.pt").model
    extra, runtime = {}, "eager"
    if (models / "quantized.pt").exists():  # what compile_benchmark timed: a PT2E graph compiled the same way
        int8 = load_model(models / "quantized.pt").model
        if is_pt2e_int8(int8):
            runtime = "compile-default"
            int8 = compile_for(int8, runtime, data[0], settings=CompileSettings.of(params.benchmark)).fn
        extra["int8 pipeline (models/quantized.pt)"] = int8
    name = f"trained final fp32 {params.student.arch} (models/pruned.pt)"
    return name, pruned, data, params.quantize, extra, runtime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer models and iterations (~1 min)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--run", type=Path, default=Path(__file__).resolve().parents[1],
                    help="checkout of a finished run whose models/*.pt are measured too (default: this one)")
    ap.add_argument("--only", choices=["all", "trained", "random", "resnet18"], default="all")
    ap.add_argument("--cpp-wrapper", choices=CPP_WRAPPER_POLICIES, default="auto",
                    help="benchmark.cpp_wrapper for the compiled variants (auto: C++ for PT2E int8 only)")
    args = ap.parse_args()
    set_threads(args.threads)
    warm_compiler()
    warmup, iters, calib = (3, 15, 2) if args.quick else (20, 150, 4)
    bs = args.batch
    started = time.perf_counter()
    rows = []
    if args.only in ("all", "trained"):
        case = trained_case(args.run, bs)
        if case is None:
            print(f"{args.run}/models/pruned.pt: no finished run there (make repro); trained models skipped")
        else:
            name, model, data, cfg, extra, pipeline_runtime = case
            rows += run_model(name, model, tuple(data[0].shape), warmup, iters, calib, args.cpp_wrapper, data, cfg,
                              extra)
            torch._dynamo.reset()
    cases = [] if args.only in ("trained", "resnet18") else [
        ("cnn [64,128,256] 1x8x8 (random)", lambda: CNN(1, 10, [64, 128, 256]), (bs, 1, 8, 8)),
        ("cnn [16,32,64] 1x8x8 (narrow)", lambda: CNN(1, 10, [16, 32, 64]), (bs, 1, 8, 8))]
    if cases and not args.quick:
        cases.append(("cnn [128,256,512]x2 1x8x8 (teacher)", lambda: CNN(1, 10, [128, 256, 512], depth=2),
                      (bs, 1, 8, 8)))
    if args.only != "trained":
        cases.append(("resnet18 (quantizable) 3x32x32", lambda: build_model(ModelConfig(arch="resnet18"), 3, 10),
                      (bs, 3, 32, 32)))
    for name, build, shape in cases:
        torch.manual_seed(0)
        rows += run_model(name, build(), shape, warmup, iters, calib, args.cpp_wrapper)
        torch._dynamo.reset()

    print(f"\nbatch {bs}, {torch.get_num_threads()} threads, warm-up {warmup}, {iters} interleaved iters, "
          f"torch {torch.__version__}, CPU {cpu_model()} ({isa_summary()})")
    header = f"{'model':44} {'variant':34} {'p50 ms':>7} {'p90 ms':>7} {'x fp32':>6} {'kernel ms':>9} " \
             f"{'p50/kern':>8} {'compile s':>9} {'wrapper':>7} {'call':>6} {'max|err|':>8} {'top1=':>5}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model'][:44]:44} {r['variant'][:34]:34} {r['p50_ms']:7.3f} {r['p90_ms']:7.3f} "
              f"{r['speedup_vs_fp32_eager']:6.2f} {r['kernel_ms']:9.3f} {r['over_kernel']:8.2f} {r['compile_s']:9.1f} "
              f"{r['wrapper']:>7} {r['call']:>6} {r['max_abs_err']:8.4f} {r['top1_agree']:5.2f}")
    print("\nwhere the time goes (per call; kernel ms from the profiler or oneDNN's verbose log, see the column "
          "source):")
    for r in rows:
        if "int8" in r["variant"]:
            ops = ", ".join(f"{op} {ms:.3f}" for op, ms in r["top_ops"])
            prims = ", ".join(f"{p} {ms:.3f}" for p, ms in r["primitives"].items()) or "none"
            print(f"  {r['model'][:44]} / {r['variant']} [{r['kernel_source']}]\n    top ops (self ms): {ops}\n"
                  f"    oneDNN primitives (exec ms): {prims}")
    print("\nratios (p50, same interleaved run):")
    for name in dict.fromkeys(r["model"] for r in rows):
        p = {r["variant"]: r["p50_ms"] for r in rows if r["model"] == name}
        best = min((r for r in rows if r["model"] == name and "int8" in r["variant"]), key=lambda r: r["p50_ms"])
        print(f"  {name}: pt2e int8 latency / eager int8 {p['int8 pt2e compiled'] / p['int8 eager (torch.ao)']:.2f} "
              f"(bar: <= 1.0 with AMX, <= 1.2 without; through dynamo "
              f"{p[PT2E_DYNAMO] / p['int8 eager (torch.ao)']:.2f}, dynamo's cost per call "
              f"{p[PT2E_DYNAMO] - p['int8 pt2e compiled']:.3f} ms); pt2e int8 speedup "
              f"vs fp32 compiled {p['fp32 compiled'] / p['int8 pt2e compiled']:.2f}x, "
              f"vs fp32 eager {p['fp32 eager'] / p['int8 pt2e compiled']:.2f}x; "
              f"eager int8 speedup vs fp32 eager {p['fp32 eager'] / p['int8 eager (torch.ao)']:.2f}x; "
              f"fastest int8 ({best['variant']}) call / kernel time {best['over_kernel']:.2f} (bar <= 1.6), "
              f"{p['fp32 compiled'] / best['p50_ms']:.2f}x faster than fp32 compiled"
              + (f" ({p[FP32_LINEAR] / best['p50_ms']:.2f}x than fp32 compiled with the same convs as linear)"
                 if FP32_LINEAR in p else ""))
    if args.only in ("all", "trained") and case is not None:
        in_pipeline(args.run, bs, rows, pipeline_runtime)
    print(f"\ntotal {time.perf_counter() - started:.0f}s")


def in_pipeline(run: Path, bs: int, rows: list[dict], runtime: str) -> None:
    """The same ratio inside the run's compile_benchmark (reports/benchmark.csv: the final int8
    model's p50 in ``runtime``, compile-default for a PT2E graph, over the pruned fp32 model's
    eager p50, interleaved with every other model and runtime) next to this bench's, so a gap
    between bench and pipeline is a number too."""
    from pipelines.core.io import read_csv

    table = run / "reports" / "benchmark.csv"
    mine = {r["variant"]: r for r in rows if r["model"].startswith("trained")}
    if not table.exists() or "int8 pipeline (models/quantized.pt)" not in mine:
        return
    csv_rows = [r for r in read_csv(table) if r["batch_size"] == str(bs) and r["latency_ms_p50"]]
    p50 = {(r["model"], r["runtime"]): float(r["latency_ms_p50"]) for r in csv_rows}
    if ("quantized", runtime) not in p50 or ("pruned", "eager") not in p50:
        return
    pipeline = p50[("quantized", runtime)] / p50[("pruned", "eager")]
    bench = mine["int8 pipeline (models/quantized.pt)"]["p50_ms"] / mine["fp32 eager"]["p50_ms"]
    kernel = next((r.get("kernel_ms") for r in csv_rows if (r["model"], r["runtime"]) == ("quantized", runtime)), "")
    print(f"\nin-pipeline (reports/benchmark.csv, batch {bs}): final int8 ({runtime}) p50 "
          f"{p50[('quantized', runtime)]:.3f} ms "
          f"= {pipeline:.3f} x pruned fp32 eager{f', kernel {float(kernel):.3f} ms' if kernel else ''}; "
          f"this bench: {bench:.3f} x; pipeline / bench {pipeline / bench:.2f} (bar: within 1.15)")


if __name__ == "__main__":
    main()
