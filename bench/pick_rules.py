"""Which rule picks a runtime that is still the fastest a minute later? The final model's runtimes
timed again and again by the pipeline's routine (``pipelines.measurement.timing.measure``, the
run's ``benchmark`` limits) for ``--minutes``, in one process; each measurement's pick under
every candidate rule is then judged on the measurements that follow it (``--horizon`` of them,
standing in for "the same artifacts timed alone right after"): how often the pick is within 1.1x
of the fastest there (issue 26's bar), and its median and worst ratio.

    .venv/bin/python bench/pick_rules.py                       # batch benchmark.batch_size, 8 minutes
    .venv/bin/python bench/pick_rules.py --batch 1 --minutes 4
    .venv/bin/python bench/pick_rules.py --load /tmp/picks.json  # re-judge saved measurements

This machine's speed swings up to 2x from second to second and its runtimes do not slow alike
(docs/serving.md), so a rule that reads one measurement's point p50s picks the winner of one
moment. The rules compared (:data:`RULES`): the pipeline's (``judged_runtime``: the lowest median
regret over the rounds, each round's block p50 over that round's fastest), the one before it
(p50 intervals overlapping the lowest p50's are tied, a tie goes to the runtime listed first),
the lowest point p50, the 75th-percentile and worst round regret, and ties decided by the
paired per-round ratio, broken by list order, worst regret, or rounds won. The "always X" lines
are the ceiling a fixed choice would have reached on the same measurements.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import pipelines  # noqa: E402,F401  (central warning filters)
from pipelines.core.config import load_params  # noqa: E402
from pipelines.core.stats import LatencyRatio  # noqa: E402
from pipelines.measurement.comparison import judged_runtime  # noqa: E402
from pipelines.measurement.compile import CompileSettings, warm_compiler  # noqa: E402
from pipelines.measurement.timing import NoiseLimits, measure, set_threads  # noqa: E402
from pipelines.training.context import Context  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from serving import RUNTIMES, artifacts, chain, variant  # noqa: E402


Timed = dict[str, tuple]  # runtime -> (p50, p50 ci_low, p50 ci_high, per-round block medians), in runtimes order


def regrets(timed: Timed) -> dict[str, list[float]]:
    """Per runtime, each round's block median over the fastest block median of that round (rounds
    are aligned across runtimes: round i of every runtime ran at the same machine speed)."""
    count = min(len(v[3]) for v in timed.values())
    best = [min(v[3][i] for v in timed.values()) for i in range(count)]
    return {rt: [v[3][i] / best[i] for i in range(count)] for rt, v in timed.items()}


def quantile(q: float):
    def stat(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]
    return stat


def by_regret(stat):
    def rule(timed: Timed) -> str:
        r = regrets(timed)
        return min(r, key=lambda rt: stat(r[rt]))
    return rule


def paired_tie(tiebreak: str):
    """Tied with the lowest p50 unless its paired per-round ratio shows it slower; then ``tiebreak``."""
    def rule(timed: Timed) -> str:
        best = min(timed, key=lambda rt: timed[rt][0])
        tied = [rt for rt in timed if rt == best or not LatencyRatio.of(timed[rt][3], timed[best][3]).b_faster()]
        r = regrets(timed)
        if tiebreak == "first":
            return tied[0]
        if tiebreak == "wins":
            return max(tied, key=lambda rt: sum(x == 1.0 for x in r[rt]))
        return min(tied, key=lambda rt: max(r[rt]))
    return rule


RULES = {
    "pipeline (judged_runtime): median round regret": lambda timed: judged_runtime(timed),
    "before session 7: interval tie, first listed": lambda timed: judged_runtime({rt: v[:3] for rt, v in timed.items()}),
    "point p50": lambda timed: min(timed, key=lambda rt: timed[rt][0]),
    "p75 round regret": by_regret(quantile(0.75)),
    "worst round regret": by_regret(max),
    "paired tie, first listed": paired_tie("first"),
    "paired tie, worst regret": paired_tie("worst"),
    "paired tie, most rounds won": paired_tie("wins"),
}


def collect(ctx: Context, batch: int, minutes: float, eager_int8: bool = False) -> list[dict]:
    """Measurements back to back for ``minutes``: per runtime its p50, p50 interval and per-round
    block medians, plus the measurement's reference-workload speed."""
    cfg = ctx.params.benchmark
    set_threads(cfg.num_threads)
    warm_compiler(settings=CompileSettings.of(cfg))
    _, pruned, quantized = chain(ctx, False)
    if eager_int8:  # the chain's int8 model as quantize.engine eager makes it (torch.ao x86)
        from pipelines.compression.quantize.eager import quantize_static

        quantized = quantize_static(pruned, ctx.calibration_batches(), ctx.params.quantize)
    files = artifacts(ctx, pruned, None)
    x = ctx.example(batch)
    fns = {}
    for runtime in RUNTIMES:
        fn = variant(runtime, quantized, files, x, ctx)
        fns[runtime] = lambda fn=fn: fn(x)
    limits = NoiseLimits.of(cfg)
    out, end = [], time.perf_counter() + 60 * minutes
    while time.perf_counter() < end:
        m = measure(fns, cfg.warmup if not out else 2, cfg.iters, limits)
        out.append({"t": time.time(), "ref_int8_ms": m.speed.int8_ms if m.speed else None,
                    "slowdown": m.slowdown,
                    "runtimes": {rt: {"p50": lat.p50_ms, "ci": list(lat.p50_interval), "rounds": list(lat.rounds)}
                                 for rt, lat in m.timings.items()}})
        print(f"{len(out)}: " + ", ".join(f"{rt} {v['p50']:.3f}" for rt, v in out[-1]["runtimes"].items()),
              file=sys.stderr)
    torch._dynamo.reset()
    return out


def pooled(measurements: list[dict]) -> Timed:
    """Several measurements read as one: their rounds concatenated, the median p50, the widest interval."""
    out = {}
    for rt in measurements[0]["runtimes"]:
        got = [m["runtimes"][rt] for m in measurements]
        out[rt] = (statistics.median(g["p50"] for g in got), min(g["ci"][0] for g in got),
                   max(g["ci"][1] for g in got), tuple(x for g in got for x in g["rounds"]))
    return out


def judge(measurements: list[dict], horizon: int, pool: int = 1) -> None:
    """Each rule's picks (from ``pool`` consecutive measurements) against the fastest of each of the
    next ``horizon`` measurements."""
    print(f"\n{len(measurements)} measurements; each pick made on {pool} and judged on each of the next {horizon}\n")
    print("| rule | picks | within 1.1x of the later fastest | median ratio | p90 ratio | worst |")
    print("| --- | --- | --- | --- | --- | --- |")
    runtimes = list(measurements[0]["runtimes"])
    always = {f"always {rt}": (lambda timed, rt=rt: rt) for rt in runtimes}
    for name, rule in {**RULES, **always}.items():
        ratios, picks = [], []
        for i in range(pool - 1, len(measurements) - 1):
            picked = rule(pooled(measurements[i - pool + 1:i + 1]))
            picks.append(picked)
            for later in measurements[i + 1:i + 1 + horizon]:
                p50 = {rt: v["p50"] for rt, v in later["runtimes"].items()}
                ratios.append(p50[picked] / min(p50.values()))
        ordered = sorted(ratios)
        share = sum(r <= 1.1 for r in ratios) / len(ratios)
        counts = ", ".join(f"{rt} {picks.count(rt)}" for rt in dict.fromkeys(picks))
        print(f"| {name} | {counts} | {share:.0%} | {statistics.median(ratios):.3f} | "
              f"{ordered[int(0.9 * (len(ordered) - 1))]:.3f} | {ordered[-1]:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, help="batch size (default benchmark.batch_size)")
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--horizon", type=int, default=5, help="later measurements each pick is judged on")
    parser.add_argument("--eager-int8", action="store_true",
                        help="the int8 model as torch.ao x86 eager mode makes it (quantize.engine: eager), not the run's")
    parser.add_argument("--pool", type=int, default=1, help="consecutive measurements each pick is made on")
    parser.add_argument("--save", type=Path, help="write the measurements here (JSON)")
    parser.add_argument("--load", type=Path, help="judge saved measurements instead of measuring")
    args = parser.parse_args()
    if args.load:
        measurements = json.loads(args.load.read_text())
    else:
        ctx = Context(load_params(ROOT / "params.yaml"))
        measurements = collect(ctx, args.batch or ctx.params.benchmark.batch_size, args.minutes,
                               args.eager_int8)
        if args.save:
            args.save.write_text(json.dumps(measurements))
    judge(measurements, args.horizon, args.pool)


if __name__ == "__main__":
    main()
