"""Deploy targets side by side: the final model and the teacher on PyTorch (eager, int8, CPU bf16),
ONNX Runtime (fp32, int8), OpenVINO (fp32, bf16, int8) and optionally AOTInductor, at batch 1 and
at batch 64, through the pipeline's own routine (``pipelines.benchmark.benchmark_models``: one
interleaved loop per batch size, fixed threads, warm-up, p50/p90, accuracy measured in each
runtime on the test split). Each measurement is repeated to show the noise.

Fairness: the same models are also timed with PyTorch's runtimes only, alternating with the full
set (PyTorch-only, all, PyTorch-only, all), and the script prints PyTorch's p50 and p90 with the
other runtimes present over PyTorch's alone: the foreign runtimes' thread pools (ONNX Runtime with
spinning off, OpenVINO without pinning, both on ``benchmark.num_threads``) must not slow PyTorch.

    .venv/bin/python bench/deploy_targets.py                  # models/*.pt of the last dvc repro
    .venv/bin/python bench/deploy_targets.py --random         # default architectures, random weights
    .venv/bin/python bench/deploy_targets.py --aoti --repeats 3

With ``--random`` (or without a run's checkpoints) the int8 model is a static PTQ of a random
[64,128,256] CNN: its latency is real, its accuracy means nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import pipelines  # noqa: E402,F401  (central warning filters)
from pipelines.compression.checkpoint import load_model  # noqa: E402
from pipelines.compression.quantize.eager import quantize_static  # noqa: E402
from pipelines.core.config import load_params  # noqa: E402
from pipelines.measurement.benchmark import DeployInputs, benchmark_models  # noqa: E402
from pipelines.core.cpu import isa_summary  # noqa: E402
from pipelines.measurement.deploy import Deployer, DeploySettings  # noqa: E402
from pipelines.measurement.timing import NoiseLimits, set_threads  # noqa: E402
from pipelines.models import build_model  # noqa: E402
from pipelines.training.context import Context  # noqa: E402

PYTORCH = ["eager", "eager-cpu-bf16"]
FOREIGN = ["ort-fp32", "ort-int8", "ov-fp32", "ov-bf16", "ov-int8"]


def load_models(ctx: Context, random: bool) -> dict[str, torch.nn.Module]:
    paths = {name: Path("models") / f"{name}.pt" for name in ("teacher", "pruned", "quantized")}
    if not random and all(p.exists() for p in paths.values()):
        return {name: load_model(path).model for name, path in paths.items()}
    print("(random weights: the checkpoints of a run are not there or --random; accuracies mean nothing)")
    data = ctx.data
    teacher = build_model(ctx.params.teacher, data.in_channels, data.num_classes).eval()
    pruned = build_model(ctx.params.student.model_copy(update={"channels": [64, 128, 256]}), data.in_channels,
                         data.num_classes).eval()
    return {"teacher": teacher, "pruned": pruned,
            "quantized": quantize_static(pruned, ctx.calibration_batches(), ctx.params.quantize)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--random", action="store_true", help="random weights instead of models/*.pt")
    parser.add_argument("--aoti", action="store_true", help="add AOTInductor (~30 s compile per model)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    ctx = Context(load_params())
    threads = ctx.params.benchmark.num_threads
    set_threads(threads)
    models = load_models(ctx, args.random)
    examples = {1: ctx.example(1), args.batch: ctx.example(args.batch)}
    foreign = FOREIGN + (["aoti"] if args.aoti else [])
    print(f"threads {threads}; CPU int8/bf16 features: {isa_summary()}; "
          f"{len(ctx.data.test.tensors[1])} test images; {args.iters} timed calls per variant")
    with tempfile.TemporaryDirectory(prefix="deploy_targets_") as tmp:
        deploy = DeployInputs(Deployer(DeploySettings(threads, ctx.calibration_batches(), Path(tmp))),
                              {"quantized": "pruned"}, ctx.data.test.tensors)
        runs: dict[str, list[list[dict]]] = {"pytorch": [], "all": []}
        for _ in range(args.repeats):
            for kind, runtimes in (("pytorch", PYTORCH), ("all", PYTORCH + foreign)):
                start = time.perf_counter()
                runs[kind].append(benchmark_models(models, examples, runtimes, 10, args.iters, reference="teacher",
                                                   deploy=deploy, noise=NoiseLimits(retries=0)))
                print(f"  measured {kind} run {len(runs[kind])} in {time.perf_counter() - start:.0f} s", flush=True)
    report(runs, sorted(examples))


def _ms(rows: list[dict], model: str, runtime: str, bs: int, key: str = "latency_ms_p50") -> float | None:
    row = next((r for r in rows if (r["model"], r["runtime"], r["batch_size"]) == (model, runtime, bs)), None)
    return row.get(key) if row else None


def report(runs: dict[str, list[list[dict]]], sizes: list[int]) -> None:
    for kind, measured in runs.items():  # what the machine was doing meanwhile (pipelines.measurement.timing)
        busy = [max((r.get("other_cpu") or 0.0) for r in run if r["batch_size"] == bs) for run in measured
                for bs in sizes]
        print(f"{kind} runs: other processes took up to " + " / ".join(f"{b:.0%}" for b in busy)
              + " of our CPUs per loop")
    rows = runs["all"]
    keys = list(dict.fromkeys((r["model"], r["runtime"]) for r in rows[0]))
    head = " | ".join(f"p50 ms @bs{bs} (runs)" for bs in sizes)
    print(f"\n| model | runtime | accuracy | {head} | p90 ms @bs{sizes[-1]} | artifact MB | build s |")
    print("|---|---|---|" + "---|" * len(sizes) + "---|---|---|")
    for model, runtime in keys:
        first = next(r for r in rows[0] if (r["model"], r["runtime"]) == (model, runtime))
        if first["skipped"] or first["error"]:
            print(f"| {model} | {runtime} | {first['skipped'] or first['error']} |")
            continue
        cells = [" / ".join(f"{_ms(run, model, runtime, bs):.3f}" for run in rows) for bs in sizes]
        p90 = " / ".join(f"{_ms(run, model, runtime, sizes[-1], 'latency_ms_p90'):.3f}" for run in rows)
        size = f"{first['artifact_mb']:.3f}" if first["artifact_mb"] else "checkpoint"
        print(f"| {model} | {runtime} | {first['accuracy']:.4f} | {' | '.join(cells)} | {p90} "
              f"| {size} | {first['compile_time_s']:.1f} |")
    print("\nPer batch size, the fastest runtime of each model (median p50 over the runs) and PyTorch int8 eager:")
    for bs in sizes:
        for model in dict.fromkeys(m for m, _ in keys):
            p50 = {rt: statistics.median(v for run in rows if (v := _ms(run, model, rt, bs)) is not None)
                   for m, rt in keys if m == model and _ms(rows[0], model, rt, bs) is not None}
            best = min(p50, key=p50.get)
            print(f"  bs{bs} {model}: fastest {best} {p50[best]:.3f} ms = {p50['eager'] / p50[best]:.2f}x "
                  f"PyTorch eager ({p50['eager']:.3f} ms)")
    print("\nPyTorch with the foreign runtimes in the process / PyTorch alone (same models, runs alternated):")
    for model, runtime in keys:
        if runtime not in PYTORCH:
            continue
        for bs in sizes:
            for key in ("latency_ms_p50", "latency_ms_p90"):
                pairs = [(_ms(run_all, model, runtime, bs, key), _ms(run_pt, model, runtime, bs, key))
                         for run_all, run_pt in zip(runs["all"], runs["pytorch"])]
                ratios = [a / p for a, p in pairs if a and p]
                if ratios:
                    print(f"  {model} {runtime} bs{bs} {key.removeprefix('latency_ms_')}: "
                          + " / ".join(f"{r:.2f}x" for r in ratios))


if __name__ == "__main__":
    main()
