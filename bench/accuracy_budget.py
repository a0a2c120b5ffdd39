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
    .venv/bin/python bench/accuracy_budget.py --deploy              # + the Deploy comparison below

``--deploy``: the budgeted PyTorch model (PT2E, compiled; and ``ts-int8``, torch.ao int8 as
TorchScript with torch.ao's own accuracy control) against the deploy targets built with the same budget (``ort-int8`` with the same layers excluded, ``ov-int8`` by NNCF's
``quantize_with_accuracy_control`` on the same validation images), each row's test accuracy
measured in its own runtime and all of them timed in one measurement (``benchmark_models``, as
``compile_benchmark``'s Deploy section): bar, the PyTorch result no less accurate and no slower
than NNCF's beyond the intervals.
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
from pipelines.chain.accuracy_control import control, range_fix, time_reverts  # noqa: E402
from pipelines.compression.quantize import quantize  # noqa: E402
from pipelines.compression.quantize.budget import candidate  # noqa: E402
from pipelines.core.stats import LatencyRatio, PairedAccuracy  # noqa: E402
from pipelines.training.context import Context, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--channels", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--factor", type=float, default=30.0)
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--equalize", choices=["none", "cle", "smoothquant", "auto"], default="none",
                    help="quantize.equalize: the range fix tried before any layer is reverted")
    ap.add_argument("--bias-correction", choices=["none", "on", "auto"], default="none",
                    help="quantize.bias_correction, after equalize")
    ap.add_argument("--deploy", action="store_true", help="also the deploy targets with the same budget, timed together")
    args = ap.parse_args()
    torch.set_num_threads(2)
    ctx = Context(fast_params(tracking={"enabled": False}, student={"channels": args.channels, "depth": 2},
                              quantize={"engine": "pt2e", "calibration_batches": 8,
                                        "max_accuracy_drop": args.budget, "equalize": args.equalize,
                                        "bias_correction": args.bias_correction},
                              benchmark={"warmup": 10, "iters": 120}))
    fp32 = ctx.new_model("student")
    train(ctx, fp32, args.epochs, 3e-3, "fp32")
    model = plant_range(fp32.cpu().eval(), args.factor)
    model, int8, fixed = range_fix(ctx, model, "pt2e")  # quantize.equalize (none: the planted model as it is)
    for fix in ("equalize", "bias_correction"):
        if fixed.get(f"{fix}_val_drop"):
            print(f"{fix} {fixed[fix]}: applied {fixed.get(f'{fix}_applied')} ({fixed.get(f'{fix}_method', '')}), val "
                  f"drop { {k: round(v['val_drop_pp'], 2) for k, v in fixed[f'{fix}_val_drop'].items()} } pp")
    int8 = int8 if int8 is not None else quantize(model, ctx.params.quantize, ctx, engine="pt2e")
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
    if args.deploy:
        deploy_comparison(ctx, model, out, args.budget)


def deploy_comparison(ctx: Context, fp32: torch.nn.Module, budgeted: torch.nn.Module, budget_pp: float) -> None:
    import tempfile

    from pipelines.compression.quantize import fp32_layers
    from pipelines.measurement.accuracy import with_intervals
    from pipelines.measurement.benchmark import DeployInputs, benchmark_models
    from pipelines.measurement.compile import CompileSettings
    from pipelines.measurement.deploy import DeployBudget, Deployer, DeploySettings
    from pipelines.measurement.timing import NoiseLimits

    bench = ctx.params.benchmark
    test = ctx.split_tensors("test")
    layers = tuple(fp32_layers(budgeted))
    deployer = Deployer(DeploySettings(bench.num_threads, ctx.calibration_batches(), Path(tempfile.mkdtemp()),
                                       DeployBudget(budget_pp, ctx.split_tensors("val"), layers,
                                                    ctx.params.quantize.max_fallback_layers)))
    sizes = sorted({1, bench.batch_size})  # as the Deploy section: batch 1 and benchmark.batch_size
    rows = benchmark_models({"fp32": fp32, "int8": budgeted}, {n: ctx.example(n) for n in sizes},
                            {"fp32": ["eager"], "int8": ["compile-default", "ts-int8", "ort-int8", "ov-int8"]},
                            bench.warmup, bench.iters, reference="fp32", settings=CompileSettings.of(bench),
                            noise=NoiseLimits.of(bench), deploy=DeployInputs(deployer, {"int8": "fp32"}, test))
    by = {}
    for r in rows:
        acc = with_intervals({"accuracy": r["accuracy"]}, len(test[1]))
        by[(r["model"], r["runtime"], r["batch_size"])] = r
        print(f"deploy bs{r['batch_size']:<3d} {r['model']:5s} {r['runtime']:16s} test accuracy {acc['accuracy']:.4f} "
              f"[{acc['accuracy_ci_low']:.4f}, {acc['accuracy_ci_high']:.4f}]  p50 {r.get('latency_ms_p50', float('nan')):.3f} ms "
              f"[{r.get('latency_ms_p50_ci_low', float('nan')):.3f}, {r.get('latency_ms_p50_ci_high', float('nan')):.3f}]  "
              f"{r['error'] or r['note']}")
    for n in sizes:
        nncf = by[("int8", "ov-int8", n)]
        for runtime in ("compile-default", "ts-int8"):  # the lab's PyTorch-native results
            ours = by[("int8", runtime, n)]
            if "latency_ms_p50" not in ours or "latency_ms_p50" not in nncf:
                continue
            ours_acc = with_intervals({"accuracy": ours["accuracy"]}, len(test[1]))
            as_accurate = ours_acc["accuracy_ci_high"] >= nncf["accuracy"]  # the data does not show ours lower
            # the lab's latency rule (pipelines/core/decision.py): slower only when the 95% interval of the
            # ratio, from the rounds both were timed in side by side, lies above 1. With 6 rounds that interval
            # is their min..max, wide where one round hit a slow moment: the p50 intervals (every call) are
            # the stricter reading, and the bar needs both
            ratio = LatencyRatio.of(ours["latency_rounds_ms"], nncf["latency_rounds_ms"])
            p50s_overlap = ours["latency_ms_p50_ci_low"] <= nncf["latency_ms_p50_ci_high"]
            as_fast = p50s_overlap and not ratio.b_faster()
            print(f"bar at batch {n}: PyTorch budgeted ({runtime}) vs NNCF accuracy-controlled OpenVINO: accuracy "
                  f"{ours['accuracy']:.4f} vs {nncf['accuracy']:.4f} "
                  f"({'not less accurate' if as_accurate else 'LESS accurate'}), p50 {ours['latency_ms_p50']:.3f} vs "
                  f"{nncf['latency_ms_p50']:.3f} ms (p50 intervals {'overlap' if p50s_overlap else 'apart'}), "
                  f"{ratio.describe(runtime, 'NNCF')}: {'not slower beyond the intervals' if as_fast else 'SLOWER'}")


if __name__ == "__main__":
    main()
