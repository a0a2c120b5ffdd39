"""Does TPE find a better feasible front than random sampling on the same trial budget?

    python bench/search_efficiency.py [--trials 24] [--seeds 0 1 2 3] [--samplers tpe random]
                                      [--runtimes eager] [--out reports/search_efficiency.json]

For every (sampler, seed) pair: a fresh in-memory study over ``search.space`` of params.yaml,
the real trial (:func:`pipelines.search.run_chain`: distill -> prune -> quantize -> benchmark,
the teacher from ``models/teacher.pt`` and its logits computed once and shared), the same
constraints. The training seed (``params.seed``) stays fixed, so the samplers differ only in
which configurations they pick; the sampler seed varies.

Reported per run and averaged per sampler:

- ``hypervolume``: of the feasible Pareto front, objectives as in ``search.objectives``, against
  one reference point shared by every run (accuracy floor = teacher - max_accuracy_drop; latency
  and size: 1.1 x the worst feasible value seen in any run), so runs are comparable;
- ``trials_to_first_feasible``: 1-based position of the first feasible trial (budget + 1 if none);
- feasible count, front size, best feasible accuracy, wall time.

Latency is measured on this machine, side by side with the teacher, as in the search; on a
shared machine its noise hits both samplers alike (the runs are interleaved seed by seed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")  # before anything imports tqdm

import optuna  # noqa: E402

import pipelines  # noqa: E402,F401  (warning filters)
from pipelines import search  # noqa: E402
from pipelines.compression.checkpoint import load_model  # noqa: E402
from pipelines.core.config import load_params  # noqa: E402
from pipelines.core.io import write_json  # noqa: E402
from pipelines.tracking import Run  # noqa: E402
from pipelines.training.context import Context  # noqa: E402


def run_one(params, baseline, sampler: str, seed: int, trials: int) -> tuple[optuna.Study, float]:
    study = optuna.create_study(directions=search.directions(params.search),
                                sampler=search.make_sampler(sampler, seed))
    objective = search.Objective(params, baseline, Run(None))
    started = time.perf_counter()
    study.optimize(objective, n_trials=trials, catch=(Exception,), gc_after_trial=True)
    return study, time.perf_counter() - started


def reference_point(params, teacher_accuracy: float, studies: list[optuna.Study]) -> list[float]:
    cfg = params.search
    feasible = [t for s in studies for t in s.trials
                if t.state == optuna.trial.TrialState.COMPLETE and search.is_feasible(t.constraints)]
    ref = []
    for i, name in enumerate(cfg.objectives):
        if name == "accuracy":
            ref.append(teacher_accuracy - cfg.max_accuracy_drop / 100.0)
        elif name == "latency_ms_p50" and cfg.max_latency_ms is not None:
            ref.append(cfg.max_latency_ms)
        else:
            ref.append(1.1 * max((t.values[i] for t in feasible), default=1.0))
    return ref


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=os.environ.get("PARAMS_FILE", "params.yaml"))
    parser.add_argument("--teacher", default="models/teacher.pt")
    parser.add_argument("--trials", type=int, default=24, help="trial budget per study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--samplers", nargs="+", default=["tpe", "random"], choices=["tpe", "random", "nsga2"])
    parser.add_argument("--runtimes", nargs="+", default=None,
                        help="override benchmark.runtimes (e.g. eager: no compile cost per trial)")
    parser.add_argument("--threads", type=int, default=None,
                        help="override benchmark.num_threads (1 is steadier on a busy machine)")
    parser.add_argument("--out", default="reports/search_efficiency.json")
    args = parser.parse_args(argv)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = load_params(args.params)
    if args.runtimes:
        params = params.with_overrides({"benchmark.runtimes": args.runtimes})
    if args.threads:
        params = params.with_overrides({"benchmark.num_threads": args.threads})
    import torch

    torch.set_num_threads(params.benchmark.num_threads)
    ctx = Context(params)
    baseline = search.Baseline.build(ctx, load_model(args.teacher).model)
    print(f"teacher accuracy {baseline.teacher_accuracy:.4f}; {len(args.samplers)} samplers x "
          f"{len(args.seeds)} seeds x {args.trials} trials", flush=True)

    studies: dict[tuple[str, int], tuple[optuna.Study, float]] = {}
    for seed in args.seeds:  # interleave samplers so machine drift hits both alike
        for sampler in args.samplers:
            studies[(sampler, seed)] = run_one(params, baseline, sampler, seed, args.trials)
            print(f"done {sampler} seed {seed} in {studies[(sampler, seed)][1]:.0f}s", flush=True)

    dirs = search.directions(params.search)
    ref = reference_point(params, baseline.teacher_accuracy, [s for s, _ in studies.values()])
    runs = []
    for (sampler, seed), (study, wall) in studies.items():
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        front = search.feasible_front(done, dirs)
        first = search.first_feasible(study.trials)
        feasible = [t for t in done if search.is_feasible(t.constraints)]
        runs.append({
            "sampler": sampler, "seed": seed, "trials": len(study.trials),
            "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials),
            "feasible": len(feasible), "front": len(front),
            "hypervolume": search.hypervolume(front, dirs, ref),
            "trials_to_first_feasible": first if first is not None else args.trials + 1,
            "best_feasible_accuracy": max((t.user_attrs["metrics"]["accuracy"] for t in feasible), default=None),
            "wall_s": wall,
        })
    summary = {}
    for sampler in args.samplers:
        mine = [r for r in runs if r["sampler"] == sampler]
        hv = [r["hypervolume"] for r in mine]
        summary[sampler] = {
            "hypervolume_mean": statistics.fmean(hv),
            "hypervolume_std": statistics.stdev(hv) if len(hv) > 1 else 0.0,
            "trials_to_first_feasible_mean": statistics.fmean(r["trials_to_first_feasible"] for r in mine),
            "feasible_mean": statistics.fmean(r["feasible"] for r in mine),
            "front_mean": statistics.fmean(r["front"] for r in mine),
        }
    result = {"objectives": list(params.search.objectives), "directions": dirs, "reference_point": ref,
              "teacher_accuracy": baseline.teacher_accuracy, "trials_per_study": args.trials,
              "seeds": args.seeds, "runtimes": list(params.benchmark.runtimes), "runs": runs, "summary": summary}
    write_json(args.out, result)

    print(f"\nreference point {dict(zip(params.search.objectives, [round(r, 4) for r in ref]))}")
    head = ("sampler", "seed", "feasible", "front", "hypervolume", "1st feasible", "wall s")
    print(f"{head[0]:8} {head[1]:>4} {head[2]:>8} {head[3]:>5} {head[4]:>12} {head[5]:>12} {head[6]:>7}")
    for r in runs:
        print(f"{r['sampler']:8} {r['seed']:>4} {r['feasible']:>8} {r['front']:>5} {r['hypervolume']:>12.5f} "
              f"{r['trials_to_first_feasible']:>12} {r['wall_s']:>7.0f}")
    for sampler, s in summary.items():
        print(f"{sampler:8} mean hypervolume {s['hypervolume_mean']:.5f} (sd {s['hypervolume_std']:.5f}), "
              f"trials to first feasible {s['trials_to_first_feasible_mean']:.1f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
