"""The PyTorch-native ways to serve the final model at batch 1, against ONNX Runtime int8, timed side
by side (rotating blocks of calls in one process, ``time_blocks``), once per thread count: why the
``ts-int8`` deploy runtime exists (docs/serving.md, "A PyTorch-native batch-1 path").

    .venv/bin/python bench/batch_one.py                # after `make repro` (~2 min)
    .venv/bin/python bench/batch_one.py --threads 1 2 --iters 3000

Variants, all of ``models/pruned.pt`` quantized on the run's calibration batches:
- PT2E int8 compiled as ``compile_benchmark`` compiles it (freezing, C++ wrapper, direct call);
- PT2E int8 as a static AOTInductor package;
- torch.ao eager int8 (x86 backend, the ``eager`` engine) as Python modules;
- the same torch.ao model traced and frozen with TorchScript, on the x86, onednn and fbgemm
  backends (fbgemm is what ``ts-int8`` ships);
- ONNX Runtime int8 (``models/deploy/pruned.int8.onnx``, spinning on, as the pipeline serves it).

Prints each variant's p50 [95% interval] and its ratio to ONNX Runtime's p50 (issue 26's bar for
the fastest PyTorch-native path: 1.5x), and the top-1 agreement of each with the PT2E graph on the
run's test split.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import torch  # noqa: E402

import pipelines  # noqa: E402,F401  (central warning filters)
from pipelines.compression.quantize import eager as qz  # noqa: E402
from pipelines.compression.quantize import pt2e as qp  # noqa: E402
from pipelines.core.cpu import cpu_model, isa_summary  # noqa: E402
from pipelines.measurement.compile import CompileSettings, compile_for, warm_compiler  # noqa: E402
from pipelines.measurement.deploy import aoti, ort, torchscript  # noqa: E402
from pipelines.measurement.timing import set_threads, time_blocks  # noqa: E402
from quant_engines import trained_case  # noqa: E402


def variants(threads: int) -> dict:
    set_threads(threads)
    case = trained_case(ROOT, 2)
    if case is None:
        raise SystemExit("models/pruned.pt: no finished run here (make repro)")
    _, pruned, (x, calibration), cfg, _, _ = case
    x1 = x[:1].contiguous()
    graph = qp.quantize_static(pruned, calibration, cfg, x[:2])
    out = {"PT2E compile-default (direct call)": compile_for(graph, "compile-default", x1,
                                                            settings=CompileSettings("auto")).fn}
    directory = Path(tempfile.mkdtemp(prefix="batch_one_"))
    out["PT2E AOTInductor static package"] = aoti.load(aoti.package(graph, x1, directory / "bs1.pt2", static=True))
    out["torch.ao x86, Python modules"] = qz.quantize_static(pruned.eval(), calibration, cfg)
    for engine in ("x86", "onednn", "fbgemm"):  # what ts-int8 builds, on each torch.ao backend
        name = f"torch.ao {engine}, TorchScript frozen" + (" (ts-int8)" if engine == "fbgemm" else "")
        out[name] = torchscript.script(pruned, calibration, x1, engine=engine)
    out["ONNX Runtime int8"] = ort.Session(ROOT / "models" / "deploy" / "pruned.int8.onnx", threads, spinning=True)
    return out, graph, x1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--iters", type=int, default=3000)
    args = ap.parse_args()
    if not (ROOT / "models" / "deploy" / "pruned.int8.onnx").exists():
        raise SystemExit("models/deploy/pruned.int8.onnx: no finished run here (make repro)")
    warm_compiler()
    print(f"CPU {cpu_model()} ({isa_summary()}), torch {torch.__version__}, batch 1")
    for threads in args.threads:
        fns, graph, x1 = variants(threads)
        with torch.inference_mode():
            ref = graph(x1)
            for name, fn in fns.items():
                got = fn(x1)
                if (got.argmax(1) != ref.argmax(1)).any():
                    print(f"  {name}: top-1 differs from the PT2E graph on the timed input")
        t = time_blocks({k: (lambda f=f: f(x1)) for k, f in fns.items()}, warmup=50, iters=args.iters).timings
        base = t["ONNX Runtime int8"].p50_ms
        print(f"\n{threads} thread(s), one measurement ({args.iters} calls each, rotating blocks):")
        for name, timing in t.items():
            low, high = timing.p50_interval
            print(f"  {name:45s} p50 {timing.p50_ms:.4f} ms [{low:.4f}, {high:.4f}]  / ORT int8 {timing.p50_ms / base:.2f}")


if __name__ == "__main__":
    main()
