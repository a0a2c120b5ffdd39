"""The accuracy budget's bar numbers on a planted model (issue 22): a CNN trained on digits with one
channel of the tensor between ``features.0`` and ``features.1`` scaled up (and the next conv's
weights down) so that static int8 loses >= 2 pp; then ``quantize.max_accuracy_drop`` brings it back.

Prints: the all-int8 and the budgeted model's drop against fp32 on validation and on test (paired
interval, McNemar), the layers kept in fp32 and the sensitivity ranking, and the speedup over
fp32 of the all-int8 and of the budgeted model from ONE side-by-side measurement (compiled with
Inductor freezing, as compile_benchmark compiles them), with the share of the all-int8 speedup
kept (bar: >= 80%).

    .venv/bin/python bench/accuracy_budget.py                      # student [64, 128] depth 2, factor 30
    .venv/bin/python bench/accuracy_budget.py --channels 128 256 --factor 100 --budget 0.5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402

import pipelines  # noqa: E402,F401
from conftest import fast_params  # noqa: E402
from planted import plant_range  # noqa: E402
from pipelines.chain.accuracy_control import control, time_reverts  # noqa: E402
from pipelines.compression.quantize import quantize  # noqa: E402
from pipelines.compression.quantize.budget import candidate  # noqa: E402
from pipelines.core.stats import PairedAccuracy  # noqa: E402
from pipelines.training.context import Context, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--factor", type=float, default=30.0)
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(2)
    ctx = Context(fast_params(tracking={"enabled": False}, student={"channels": args.channels, "depth": 2},
                              quantize={"engine": "pt2e", "calibration_batches": 8,
                                        "max_accuracy_drop": args.budget},
                              benchmark={"warmup": 10, "iters": 120}))
    fp32 = ctx.new_model("student")
    train(ctx, fp32, args.epochs, 3e-3, "fp32")
    model = plant_range(fp32.cpu().eval(), args.factor)
    int8 = quantize(model, ctx.params.quantize, ctx, engine="pt2e")
    out, _, m = control(ctx, model, int8, "pt2e", timed=False)
    for r in m["sensitivity"]:
        print(f"sensitivity {r['rank']}. {r['layer']}: sqnr {r['sqnr_db']:.1f} dB, "
              f"val {r['val_accuracy_delta']:+.2f} pp with only it in fp32")
    for split in ("val", "test"):
        ref = ctx.correct(model, split).tolist()
        for name, q in (("all-int8", int8), ("budgeted", out)):
            print(f"{split}: {PairedAccuracy.of(ref, ctx.correct(q, split).tolist()).describe('fp32', name)}")
    print(f"budget {args.budget} pp met: {m.get('budget_met')}, kept in fp32: {m.get('fallback_layers')}")
    start = candidate(int8, ctx.correct(int8, "val"), ctx.correct(model, "val"))
    kept = candidate(out, ctx.correct(out, "val"), ctx.correct(model, "val"), m.get("fallback_layers", []))
    timing = time_reverts(ctx, model, start, [kept] if out is not int8 else [])
    s = timing["speedup_vs_fp32"]
    for name, v in s.items():
        print(f"speedup over fp32 ({name}): {v['ratio']:.2f}x [{v['ci_low']:.2f}, {v['ci_high']:.2f}]")
    if "revert1" in s:
        print(f"share of the all-int8 speedup kept: {s['revert1']['ratio'] / s['int8']['ratio']:.0%} "
              f"(p50 budgeted / all-int8 {timing['p50_over_all_int8']['revert1']}); noisy: {timing['noisy']}")


if __name__ == "__main__":
    main()
