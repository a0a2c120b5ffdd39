"""Graph breaks, before and after: ``python bench/graph_breaks.py [--batch 64] [--iters 200]``.

For the model in :mod:`pipelines.graph_break_demo` (a Python ``if`` on ``x.sum() > 0``) and its
two fixes (``torch.cond``, ``torch.where``) prints dynamo's graph/break counts and reasons,
the compile time, the latency of eager and compiled variants measured side by side
(interleaved, one process), and whether every variant's output equals the original's for a
positive and a negative input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import pipelines  # noqa: E402,F401  (central warning filters)
from pipelines.measurement.compile import compile_for, warm_compiler  # noqa: E402
from pipelines.measurement.timing import set_threads, time_blocks  # noqa: E402
from pipelines.measurement.graph_break_demo import explain_breaks, variants  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--iters", type=int, default=200)
    args = ap.parse_args()
    set_threads(args.threads)

    models = variants(dim=args.dim, hidden=4 * args.dim)
    pos = torch.rand(args.batch, args.dim) + 0.1
    neg = -pos

    print(f"# graph breaks: Python `if x.sum() > 0` vs torch.cond vs torch.where "
          f"(batch {args.batch}, dim {args.dim}, {args.threads} threads, torch {torch.__version__})\n")
    reports = {name: explain_breaks(model, pos) for name, model in models.items()}  # before any compile
    for name, rep in reports.items():
        print(f"{name:12} graphs {rep.graphs}  graph breaks {rep.graph_breaks}")
        for reason in rep.reasons:
            print(f"{'':12}   - {reason}")
    print()

    warm_compiler()
    torch._dynamo.reset()
    compiled = {name: compile_for(model, "compile-default", pos) for name, model in models.items()}
    with torch.inference_mode():
        for name, comp in compiled.items():
            if comp.error is None:
                comp.fn(neg)  # the other branch of the original compiles here, not while timed
    fns = {}
    for name, model in models.items():
        fns[f"{name} eager"] = (lambda m=model: m(pos))
        if compiled[name].error is None:
            fns[f"{name} compiled"] = (lambda c=compiled[name]: c.fn(pos))
    lat = time_blocks(fns, args.warmup, args.iters).timings
    ref = lat["branchy eager"].p50_ms

    with torch.inference_mode():
        expected = {x_name: models["branchy"](x) for x_name, x in (("pos", pos), ("neg", neg))}
    print(f"{'variant':24} {'compile s':>9} {'p50 ms':>8} {'p90 ms':>8} {'vs branchy eager':>17}  same output (+/-)")
    for key, latency in lat.items():
        name, kind = key.rsplit(" ", 1)
        comp = compiled[name]
        run = comp.fn if kind == "compiled" else models[name]
        with torch.inference_mode():
            same = [torch.allclose(run(x), expected[x_name], atol=1e-5, rtol=1e-4)
                    for x_name, x in (("pos", pos), ("neg", neg))]
        compile_s = f"{comp.compile_time_s:9.2f}" if kind == "compiled" else f"{'-':>9}"
        print(f"{key:24} {compile_s} {latency.p50_ms:8.3f} {latency.p90_ms:8.3f} {ref / latency.p50_ms:16.2f}x"
              f"  {'yes' if same[0] else 'NO'}/{'yes' if same[1] else 'NO'}")
    for name, comp in compiled.items():
        if comp.error:
            print(f"{name}: compile failed: {comp.error}")


if __name__ == "__main__":
    main()
