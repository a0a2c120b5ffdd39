"""Latency as a server sees it: the final model's runtimes timed *alone* (each in a fresh process
of its own, in its serving configuration, nothing else loaded, blocks of calls) against the same
variants timed by the pipeline's routine in one process (``pipelines.measurement.timing.measure``:
rotating blocks), per runtime and batch size. The ratios decide how the pipeline times (docs/serving.md); the last part checks the
issue-26 bars against the numbers of the last ``dvc repro``.

    .venv/bin/python bench/serving.py                 # models/ + reports/benchmark.csv of the last run
    .venv/bin/python bench/serving.py --random        # no run needed: a random [64,128,256] CNN, int8
    .venv/bin/python bench/serving.py --bars-only     # only the bars: the run's p50s vs standalone now
    .venv/bin/python bench/serving.py --aoti          # also the PT2E int8 graph as static AOTInductor packages

Each standalone PyTorch runtime also reports ``p50_over_kernel`` (its p50 over its compute
kernels' time, ``pipelines.measurement.kernels``): the per-call overhead a PyTorch-native batch-1
path has to remove to come close to ONNX Runtime int8.

Bars (run mode): each deploy runtime of the final model (``ort-int8``, ``ov-int8``, ``ts-int8``) at batch 1 and
``benchmark.batch_size`` has a pipeline p50 (``reports/benchmark.csv``) within 1.3x of the same
artifact timed alone right after; the runtime the report picked (``metrics/compile_benchmark.json``
``quantized.best_runtime`` / ``best_runtime_bs1``) is the fastest standalone or within 1.1x of it.
Machine speed moves between the pipeline's run and this one: a standalone worker whose reference
workload (``ref_int8_ms``, ``ref_fp32_ms``) ran more than ``benchmark.max_slowdown`` off the run's
is timed again (``benchmark.retries``), the attempt closest to the run's phase kept, and each row
prints how far it still was; a bar read across a speed change of more than
``benchmark.max_speed_change`` is said to be. And the fastest PyTorch-native
path (eager, compiled, AOTInductor, ``ts-int8``) at batch 1 alone is within 1.5x of ``ort-int8`` alone.

The worker mode (``--worker RUNTIME``) is what the script spawns for each standalone timing.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import pipelines  # noqa: E402,F401  (central warning filters)
from pipelines.core.config import load_params  # noqa: E402
from pipelines.core.stats import median_interval  # noqa: E402
from pipelines.measurement.compile import CompileSettings, compile_for, warm_compiler  # noqa: E402
from pipelines.measurement.deploy import Deployer, DeploySettings, aoti, ort, ov, torchscript  # noqa: E402
from pipelines.measurement.kernels import kernel_profile  # noqa: E402
from pipelines.measurement.settle import settle  # noqa: E402
from pipelines.measurement.speed import Speed, SpeedProbe, summarise  # noqa: E402
from pipelines.measurement.timing import NoiseLimits, measure, set_threads, time_blocks  # noqa: E402
from pipelines.training.context import Context  # noqa: E402

RUNTIMES = ["eager", "compile-default", "ort-int8", "ov-int8", "ts-int8"]
DEPLOY = ["ort-int8", "ov-int8", "ts-int8"]
PYTORCH_NATIVE = ("eager", "compile-default", "compile-max-autotune", "compile-reduce-overhead", "aoti", "ts-int8")
BENCH_CSV, SUMMARY = ROOT / "reports" / "benchmark.csv", ROOT / "metrics" / "compile_benchmark.json"


def chain(ctx: Context, random: bool):
    """(teacher, pruned, quantized): the last run's checkpoints, or random weights (seed 0)."""
    from pipelines.compression.checkpoint import load_model

    paths = {name: ROOT / "models" / f"{name}.pt" for name in ("teacher", "pruned", "quantized")}
    if not random:
        return tuple(load_model(paths[n]).model.eval() for n in ("teacher", "pruned", "quantized"))
    from pipelines.compression.quantize.eager import quantize_static
    from pipelines.models import build_model

    torch.manual_seed(0)
    data = ctx.data
    teacher = build_model(ctx.params.teacher, data.in_channels, data.num_classes).eval()
    pruned = build_model(ctx.params.student.model_copy(update={"channels": [64, 128, 256]}), data.in_channels,
                         data.num_classes).eval()
    return teacher, pruned, quantize_static(pruned, ctx.calibration_batches(), ctx.params.quantize)


def artifacts(ctx: Context, pruned, directory: Path | None) -> dict[str, Path]:
    """The final model's deploy artifacts: the run's (``models/deploy``) or built into ``directory``."""
    if directory is None:
        return {"ort-int8": ROOT / "models" / "deploy" / "pruned.int8.onnx",
                "ov-int8": ROOT / "models" / "deploy" / "pruned.int8.xml",
                "ts-int8": ROOT / "models" / "deploy" / "pruned.int8.ts"}
    deployer = Deployer(DeploySettings(ctx.params.benchmark.num_threads, ctx.calibration_batches(), directory))
    example = ctx.example(2)
    return {"ort-int8": deployer.ort_int8("pruned", pruned, example)[0],
            "ov-int8": deployer.ov_int8("pruned", pruned, example)[0][0],
            "ts-int8": Path(deployer.build("ts-int8", "pruned", pruned, example).artifact)}


def variant(runtime: str, model, files: dict[str, Path], example: torch.Tensor, ctx: Context):
    """``runtime`` of the final model as the pipeline builds it, in its serving configuration."""
    threads = ctx.params.benchmark.num_threads
    if runtime == "ort-int8":
        return ort.Session(files[runtime], threads, spinning=True)
    if runtime == "ov-int8":
        return ov.Compiled(ov.read_ir(files[runtime]), "f32", threads)
    if runtime == "ts-int8":
        return torchscript.load(files[runtime])
    if runtime == "eager":
        return model
    if runtime == "aoti":  # the PT2E int8 graph, one static package for this batch size
        from pipelines.core.kinds import is_pt2e

        if not is_pt2e(model):
            raise SystemExit("aoti: the final model is not a PT2E int8 graph (quantize.engine); --random is eager int8")
        directory = Path(tempfile.mkdtemp(prefix="serving_aoti_"))
        return aoti.Padded(aoti.load(aoti.package(model, example, directory / f"bs{len(example)}.pt2", static=True)),
                           len(example))
    comp = compile_for(model, runtime, example, settings=CompileSettings.of(ctx.params.benchmark))
    if comp.error:
        raise RuntimeError(f"{runtime}: {comp.error}")
    return comp.fn


def sizes(ctx: Context) -> list[int]:
    return sorted({1, ctx.params.benchmark.batch_size})


def worker(runtime: str, random: bool, directory: str | None, seconds: float = 0.0) -> None:
    """One runtime alone in this process: every batch size in rotating blocks, measured again and
    again for ``seconds`` (at least once), the p50 over all of it; JSON on stdout."""
    ctx = Context(load_params(ROOT / "params.yaml"))
    cfg = ctx.params.benchmark
    set_threads(cfg.num_threads)
    quantized = None if runtime in DEPLOY else chain(ctx, random)[2]
    files = artifacts(ctx, None, None) if directory is None else {
        "ort-int8": Path(directory) / "pruned.int8.onnx", "ov-int8": Path(directory) / "pruned.int8.xml",
        "ts-int8": Path(directory) / "pruned.int8.ts"}
    if runtime.startswith("compile"):
        warm_compiler(settings=CompileSettings.of(cfg))
    fns = {}
    for bs in sizes(ctx):
        x = ctx.example(bs)
        fn = variant(runtime, quantized, files, x, ctx)
        fns[bs] = lambda fn=fn, x=x: fn(x)
    limits, probe = NoiseLimits.of(cfg), SpeedProbe()
    measured, end = [], time.perf_counter() + seconds
    while not measured or time.perf_counter() < end:  # measurements back to back for ``seconds``
        measured.append(time_blocks(fns, cfg.warmup if not measured else 0, cfg.iters, limits, probe))
    samples = {bs: [t for m in measured for t in m.timings[bs].samples] for bs in fns}
    out = {str(bs): {"p50": statistics.median(s), "ci": median_interval(s), "calls": len(s)} for bs, s in samples.items()}
    speed = summarise([p for m in measured for r in m.rounds for p in r.probes])
    if runtime in PYTORCH_NATIVE:  # how much of a call is kernels
        for bs, fn in fns.items():
            out[str(bs)]["p50_over_kernel"] = kernel_profile(fn, iters=20, timed_iters=60).overhead_ratio()
    print(json.dumps({"timings": out, "ref_int8_ms": speed.int8_ms, "ref_fp32_ms": speed.fp32_ms}))


def alone(runtime: str, random: bool, directory: Path | None, seconds: float = 0.0) -> dict:
    cmd = [sys.executable, __file__, "--worker", runtime, "--seconds", str(seconds)] + \
        (["--random", "--dir", str(directory)] if random else [])
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"worker {runtime} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def tails(fns: dict, limits: NoiseLimits, repeats: int = 3) -> dict:
    """How long each variant's thread pool keeps burning CPU after a block of its calls (ms,
    median of ``repeats``): what :func:`~pipelines.measurement.settle.settle` waits for before
    the next block. Capped at 500 ms."""
    out: dict = {}
    with torch.inference_mode():
        for name, fn in fns.items():
            waits = []
            for _ in range(repeats):
                settle(500.0)
                end = time.perf_counter() + 2 * limits.block_warm_ms / 1e3  # about one block's calls
                while time.perf_counter() < end:
                    fn()
                waits.append(settle(500.0))
            out[name] = statistics.median(waits)
    return out


def in_process(ctx: Context, teacher, quantized, files, runtimes: list[str],
               settles: list[float]) -> dict[str, dict[tuple[str, int], float]]:
    """The same variants plus the teacher's eager reference, in one process, by the pipeline's
    routine (rotating blocks) once per ``settles`` value of ``benchmark.settle_ms``, per batch
    size: ``{f"settle {ms}": {(rt, bs): p50}, "tail": {(rt, bs): ms}}``."""
    cfg = ctx.params.benchmark
    warm_compiler(settings=CompileSettings.of(cfg))
    out: dict[str, dict[tuple[str, int], float]] = {f"settle {ms:g}": {} for ms in settles}
    out["tail ms"] = {}
    for bs in sizes(ctx):
        x = ctx.example(bs)
        fns = {"teacher": lambda x=x: teacher(x)}
        for runtime in runtimes:
            fn = variant(runtime, quantized, files, x, ctx)
            fns[runtime] = lambda fn=fn, x=x: fn(x)
        for ms in settles:
            limits = replace(NoiseLimits.of(cfg), retries=0, settle_ms=ms)
            blocks = measure(fns, cfg.warmup, cfg.iters, limits).timings
            for runtime in runtimes:
                out[f"settle {ms:g}"][(runtime, bs)] = blocks[runtime].p50_ms
        waited = tails(fns, NoiseLimits.of(cfg))
        for runtime in runtimes:
            out["tail ms"][(runtime, bs)] = waited[runtime]
    torch._dynamo.reset()
    return out


def decide(ctx: Context, random: bool, repeats: int, directory: Path | None,
           runtimes: list[str], settles: list[float]) -> dict[tuple[str, int], list[float]]:
    """In-process schedules vs alone, ``repeats`` times alternating; prints the ratio table."""
    teacher, pruned, quantized = chain(ctx, random)
    files = artifacts(ctx, pruned, directory)
    ratios: dict[str, dict[tuple[str, int], list[float]]] = {}
    standalone: dict[tuple[str, int], list[float]] = {}
    overhead: dict[tuple[str, int], list[float]] = {}
    for rep in range(repeats):
        inside = in_process(ctx, teacher, quantized, files, runtimes, settles)
        for runtime in runtimes:
            got = alone(runtime, random, directory)
            for bs in sizes(ctx):
                p50 = got["timings"][str(bs)]["p50"]
                standalone.setdefault((runtime, bs), []).append(p50)
                if "p50_over_kernel" in got["timings"][str(bs)]:
                    overhead.setdefault((runtime, bs), []).append(got["timings"][str(bs)]["p50_over_kernel"])
                for schedule, p50s in inside.items():
                    value = p50s[(runtime, bs)] if schedule == "tail ms" else p50s[(runtime, bs)] / p50
                    ratios.setdefault(schedule, {}).setdefault((runtime, bs), []).append(value)
        print(f"repeat {rep + 1}/{repeats} done", file=sys.stderr)
    cfg = ctx.params.benchmark
    print(f"\nin one process / alone (p50 ratio, median of {repeats} repeats [min, max]) for each "
          f"benchmark.settle_ms; tail ms: how long the runtime's threads burn CPU after its block; "
          f"{cfg.num_threads} threads, blocks {cfg.blocks} x {-(-cfg.iters // cfg.blocks)} calls\n")
    print(f"| runtime | batch | alone p50 ms | {' | '.join(ratios)} | alone p50 / kernels |\n"
          f"| --- | --- | --- | {' | '.join('---' for _ in ratios)} | --- |")
    for key, values in standalone.items():
        cells = [f"{statistics.median(ratios[s][key]):.2f} [{min(ratios[s][key]):.2f}, {max(ratios[s][key]):.2f}]"
                 for s in ratios]
        kern = f"{statistics.median(overhead[key]):.2f}" if key in overhead else ""
        print(f"| {key[0]} | {key[1]} | {statistics.median(values):.3f} | {' | '.join(cells)} | {kern} |")
    ort1 = statistics.median(standalone.get(("ort-int8", 1), [float("nan")]))
    for runtime in ("compile-default", "aoti", "ts-int8"):
        if (runtime, 1) in standalone:
            print(f"batch 1, alone: {runtime} / ort-int8 = {statistics.median(standalone[(runtime, 1)]) / ort1:.2f} "
                  "(issue 26's bar for the fastest PyTorch-native path: 1.5)")
    return standalone


def _phase_change(got: dict, usual: Speed | None) -> float:
    """How far from ``usual`` (the run's reference workload: int8 ms, fp32 ms) a worker's machine
    speed was, either way (>= 1)."""
    if usual is None:
        return 1.0
    return Speed(got["ref_int8_ms"], got["ref_fp32_ms"]).change(usual)


def in_phase(runtime: str, seconds: float, usual: Speed | None, max_slowdown: float,
             retries: int) -> dict:
    """:func:`alone`, timed again (at most ``retries`` more times) while its reference workload ran
    more than ``max_slowdown`` slower or faster than ``usual``, the pipeline's own: as the pipeline
    re-measures a slow-phase measurement (``benchmark.max_slowdown``), a standalone timing in
    another phase of the machine than the run's compares phases, not runtimes (measured: the
    torch.ao x86 int8 graph 0.663 ms in the run and 1.035 alone with the machine 1.27x slower,
    OpenVINO 0.664 and 0.733). The attempt closest to ``usual`` is kept, with its ``phase_change``."""
    best = None
    for _ in range(retries + 1):
        got = alone(runtime, False, None, seconds)
        got["phase_change"] = _phase_change(got, usual)
        best = got if best is None or got["phase_change"] < best["phase_change"] else best
        if not max_slowdown or got["phase_change"] <= max_slowdown:
            break
    return best


def repeated_alone(runtimes: list[str], repeats: int, seconds: float, usual: Speed | None = None,
                   max_slowdown: float = 0.0, retries: int = 0) -> dict[str, dict]:
    """Each runtime alone (its own process), ``repeats`` rounds in rotating order; per runtime and
    batch size the median p50 of the rounds and the interval of the round closest to it. Each
    worker runs at a different moment of the machine's drift: one round per runtime compares
    moments as much as runtimes, and a worker timed for one second compares seconds (measured: the
    same artifact alone 0.64 ms in one round and 1.51 ms in the next, batch 64), so each worker
    times its runtime for ``seconds``, measurement after measurement, one p50 over all, in the
    run's phase of the machine where it can (:func:`in_phase`)."""
    rounds: dict[str, list[dict]] = {rt: [] for rt in runtimes}
    for r in range(repeats):
        shift = r % len(runtimes)
        for rt in runtimes[shift:] + runtimes[:shift]:
            rounds[rt].append(in_phase(rt, seconds, usual, max_slowdown, retries))
    out = {}
    for rt, got in rounds.items():
        timings = {}
        for bs in got[0]["timings"]:
            p50s = [g["timings"][bs]["p50"] for g in got]
            mid = statistics.median(p50s)
            closest = min(got, key=lambda g: abs(g["timings"][bs]["p50"] - mid))["timings"][bs]
            timings[bs] = {**closest, "p50": mid, "rounds": p50s}
        out[rt] = {"timings": timings, "ref_int8_ms": statistics.median(g["ref_int8_ms"] for g in got),
                   "phase_change": statistics.median(g["phase_change"] for g in got)}
    return out


def bars(ctx: Context, repeats: int, seconds: float) -> bool:
    """The issue-26 bars on the last run's numbers, each runtime timed alone now (``repeats``
    rotating rounds, :func:`repeated_alone`)."""
    rows = [r for r in csv.DictReader(BENCH_CSV.open()) if r["model"] == "quantized" and r["latency_ms_p50"]]
    summary = json.loads(SUMMARY.read_text())["quantized"]
    runtimes = sorted({r["runtime"] for r in rows})
    cfg = ctx.params.benchmark
    refs = [Speed(float(r["ref_int8_ms"]), float(r["ref_fp32_ms"])) for r in rows if r.get("ref_int8_ms")]
    usual = summarise(refs) if refs else None
    standalone = repeated_alone(runtimes, repeats, seconds, usual, cfg.max_slowdown, cfg.retries)
    ok = True
    print("\n| runtime | batch | pipeline p50 ms [95%] | alone p50 ms [95%] | pipeline / alone | alone vs run machine speed | bar |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        rt, bs = r["runtime"], r["batch_size"]
        a = standalone[rt]["timings"][bs]
        ratio = float(r["latency_ms_p50"]) / a["p50"]
        bar = ""
        if rt in DEPLOY:
            bar = "ok" if ratio <= 1.3 else "FAIL (> 1.3)"
            ok &= ratio <= 1.3
        print(f"| {rt} | {bs} | {float(r['latency_ms_p50']):.3f} [{float(r['latency_ms_p50_ci_low']):.3f}, "
              f"{float(r['latency_ms_p50_ci_high']):.3f}] | {a['p50']:.3f} [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}] | "
              f"{ratio:.2f} | {standalone[rt]['phase_change']:.2f}x | {bar} |")
    for bs, suffix in ((cfg.batch_size, ""), (1, "_bs1")):
        picked = summary.get(f"best_runtime{suffix}")
        if picked not in standalone:
            continue
        p50 = {rt: standalone[rt]["timings"][str(bs)]["p50"] for rt in standalone}
        best = min(p50, key=p50.get)
        within = p50[picked] / p50[best]
        ok &= within <= 1.1
        per_round = ", ".join(f"{p / q:.2f}" for p, q in zip(standalone[picked]["timings"][str(bs)]["rounds"],
                                                              standalone[best]["timings"][str(bs)]["rounds"]))
        tied = [t.strip() for t in str(summary.get(f"best_tied_with{suffix}") or "").split(",") if t.strip()]
        print(f"batch {bs}: the report picked {picked}" + (f" (tied with {', '.join(tied)})" if tied else "")
              + f"; fastest alone {best}; picked / fastest alone {within:.2f} (round by round: {per_round}): "
              + ('ok' if within <= 1.1 else 'FAIL (> 1.1)' + (f"; {best} was named tied with the pick in the run"
                                                              if best in tied else "")))
    ok &= native_bar(rows, standalone)
    run_ref = [float(r["ref_int8_ms"]) for r in rows if r.get("ref_int8_ms")]
    now_ref = [s["ref_int8_ms"] for s in standalone.values()]
    if run_ref:
        change = statistics.median(now_ref) / statistics.median(run_ref)
        print(f"machine speed: reference int8 p50 {statistics.median(run_ref):.4f} ms in the run, "
              f"{statistics.median(now_ref):.4f} ms now ({change:.2f}x"
              + ("; the machine changed speed in between: read the ratios with that in mind)"
                 if max(change, 1 / change) > cfg.max_speed_change else ")"))
    return ok


def native_bar(rows: list[dict], standalone: dict) -> bool:
    """Issue 26's second bar: the fastest PyTorch-native path of the final model at batch 1, timed
    alone, within 1.5x of ONNX Runtime int8 alone, at the same accuracy (the rows' test accuracy
    with its interval, each measured in its own runtime by the pipeline)."""
    if "ort-int8" not in standalone:
        return True
    p50 = {rt: got["timings"]["1"]["p50"] for rt, got in standalone.items() if "1" in got["timings"]}
    native = {rt: v for rt, v in p50.items() if rt in PYTORCH_NATIVE}
    if not native or "ort-int8" not in p50:
        return True
    best = min(native, key=native.get)
    ratio = native[best] / p50["ort-int8"]
    acc = {r["runtime"]: r for r in rows if r["batch_size"] == "1" and r.get("accuracy")}

    def described(rt: str) -> str:
        r = acc.get(rt)
        return (f"{float(r['accuracy']):.4f} [{float(r['accuracy_ci_low']):.4f}, {float(r['accuracy_ci_high']):.4f}]"
                if r and r.get("accuracy_ci_low") else "not measured")

    print(f"batch 1, alone: fastest PyTorch-native {best} {native[best]:.4f} ms / ort-int8 {p50['ort-int8']:.4f} ms "
          f"= {ratio:.2f}: {'ok' if ratio <= 1.5 else 'FAIL (> 1.5)'}; test accuracy {best} {described(best)}, "
          f"ort-int8 {described('ort-int8')}")
    return ratio <= 1.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--random", action="store_true", help="random weights, artifacts built in a temp dir")
    parser.add_argument("--bars-only", action="store_true", help="only check the bars against the last run")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of the in-process vs alone comparison, and of each runtime alone for the bars")
    parser.add_argument("--settle-ms", type=float, nargs="+", default=[0.0, 200.0],
                        help="benchmark.settle_ms values the in-process schedule is timed with, side by side")
    parser.add_argument("--aoti", action="store_true", help="add the PT2E int8 graph as static AOTInductor packages")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="how long each standalone runtime is timed for the bars (measured again and again, "
                             "one p50 over all): this machine's speed swings up to 2x from one second to the next")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.random, args.dir, args.seconds)
        return
    ctx = Context(load_params(ROOT / "params.yaml"))
    set_threads(ctx.params.benchmark.num_threads)
    run_mode = not args.random and BENCH_CSV.exists() and SUMMARY.exists()
    if not args.bars_only:
        with tempfile.TemporaryDirectory(prefix="serving_") as tmp:
            decide(ctx, not run_mode, args.repeats, None if run_mode else Path(tmp),
                   RUNTIMES + (["aoti"] if args.aoti else []), args.settle_ms)
    if run_mode and not bars(ctx, args.repeats, args.seconds):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
