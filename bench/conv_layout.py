"""When torch.compile is slower than eager: Inductor's convolution layout, per model width.

    .venv/bin/python bench/conv_layout.py            # the default teacher, student and pruned CNNs
    .venv/bin/python bench/conv_layout.py --quick    # fewer iterations

With freezing on (as in ``compile_benchmark``), Inductor rewrites every fp32 convolution into a
prepacked oneDNN kernel on channels-last tensors. For narrow CNNs that wins; for wide ones on
tiny feature maps (256-512 channels at 2x2-4x4, as in the 8x8-digit CNNs) oneDNN's channels-last
kernels can be several times slower than the blocked NCHW kernels eager PyTorch picks, and the
compiled model ends up slower than eager. ``benchmark.inductor: {cpp.weight_prepack: false,
layout_optimization: false}`` keeps Inductor on NCHW ``aten.convolution``.

Inductor reads ``cpp.weight_prepack`` once per process, at its first compile, so the two
settings cannot share a process: each runs in its own child process, where every model is
timed eager vs compiled side by side (interleaved). Compare the compiled/eager ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {
    "Inductor default (channels-last, prepacked)": {},
    "NCHW (cpp.weight_prepack / layout_optimization off)": {"cpp.weight_prepack": False,
                                                            "layout_optimization": False},
}
MODELS = {
    "teacher [128,256,512]x2": ([128, 256, 512], 2),
    "student [128,256,512]x1": ([128, 256, 512], 1),
    "pruned [64,128,256]x1": ([64, 128, 256], 1),
    "narrow [16,32,64]x1": ([16, 32, 64], 1),
}


def child(inductor: dict, batch: int, threads: int, warmup: int, iters: int) -> dict:
    """One process, one Inductor setting: eager vs compiled per model, interleaved."""
    import torch

    import pipelines  # noqa: F401  (central warning filters)
    from pipelines.measurement.compile import CompileSettings, compile_for, warm_compiler
    from pipelines.measurement.timing import set_threads, time_blocks
    from pipelines.models import CNN

    set_threads(threads)
    settings = CompileSettings(inductor=tuple(sorted(inductor.items())))
    warm_compiler("cpu", settings)
    x = torch.randn(batch, 1, 8, 8)
    fns, compile_s = {}, {}
    for name, (channels, depth) in MODELS.items():
        torch.manual_seed(0)
        model = CNN(1, 10, channels, depth).eval()
        comp = compile_for(model, "compile-default", x, settings=settings)
        if comp.error:
            raise SystemExit(f"{name}: {comp.error}")
        fns[(name, "eager")] = lambda m=model: m(x)
        fns[(name, "compiled")] = lambda c=comp: c.fn(x)
        compile_s[name] = comp.compile_time_s
    lat = time_blocks(fns, warmup, iters).timings
    return {name: {"eager": lat[(name, "eager")].p50_ms, "compiled": lat[(name, "compiled")].p50_ms,
                   "compile_s": compile_s[name]} for name in MODELS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    warmup, iters = (3, 10) if args.quick else (5, 30)
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child), args.batch, args.threads, warmup, iters)))
        return
    results = {}
    for label, inductor in SETTINGS.items():
        cmd = [sys.executable, __file__, "--child", json.dumps(inductor), "--batch", str(args.batch),
               "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{label}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
        results[label] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"batch {args.batch}, {args.threads} threads, p50 ms; eager and compiled timed side by side in each "
          "setting's own process\n")
    print(f"{'model':26} {'setting':52} {'eager':>7} {'compiled':>9} {'eager/compiled':>14} {'compile s':>9}")
    for name in MODELS:
        for label in SETTINGS:
            r = results[label][name]
            print(f"{name:26} {label:52} {r['eager']:7.2f} {r['compiled']:9.2f} {r['eager'] / r['compiled']:13.2f}x "
                  f"{r['compile_s']:9.1f}")


if __name__ == "__main__":
    main()
