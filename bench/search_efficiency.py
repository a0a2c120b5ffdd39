"""How good a feasible front does the search find for the time it takes? TPE vs random sampling,
with and without a pruner, several seeds, on this machine.

    python bench/search_efficiency.py [--trials 12] [--budget SECONDS] [--seeds 0 1 2]
                                      [--samplers tpe random] [--pruners none hyperband]
                                      [--set distill.epochs=6 ...] [--runtimes eager] [--threads 1]
                                      [--out reports/search_efficiency.json]

For every (seed, sampler, pruner): a fresh in-memory study that runs exactly what ``make search``
runs (:class:`pipelines.search.Objective`: the current params.yaml configuration first, then
sampled trials through distill -> prune -> quantize -> benchmark, the teacher from
``models/teacher.pt`` with its logits computed once and shared, the pruner fed every epoch's
validation accuracy), for ``--trials`` trials or until ``--budget`` seconds (whichever comes
first). The training seed (``params.seed``) stays fixed, so the variants differ only in which
configurations they pick and which they stop; the sampler seed varies. Runs are interleaved seed
by seed, so machine drift hits every variant alike.

Printed per run and as mean and spread (sd, min..max) per variant:

- ``wall s``, trials, ``pruned``: what the same trial count costs with and without pruning;
- ``hv@T``: hypervolume of the feasible Pareto front formed by the trials that had *completed*
  within the same wall-clock time T (``--budget``, else the shortest run's wall time, so every
  run is compared at a time every run reached), against one reference point shared by every run
  (accuracy floor = teacher - max_accuracy_drop; latency and size: 1.1 x the worst feasible value
  seen in any run); ``hv`` is the same at the end of each run;
- ``1st feasible``: 1-based position of the first feasible trial (budget + 1 if none).

Objectives and constraints are the search's (validation accuracy, latency measured side by side
with the teacher). On a shared machine the latencies are noisy: compare the ratios of one run.
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
import yaml  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

import pipelines  # noqa: E402,F401  (warning filters)
from pipelines import search  # noqa: E402
from pipelines.compression.checkpoint import load_model  # noqa: E402
from pipelines.core.config import load_params  # noqa: E402
from pipelines.core.io import write_json  # noqa: E402
from pipelines.tracking import Run  # noqa: E402
from pipelines.training.context import Context  # noqa: E402


def run_one(params, baseline, sampler: str, pruner: str, seed: int, trials: int | None,
            budget_s: float | None) -> dict:
    """One study as ``make search`` runs it; the trials and when each finished (s after the start)."""
    study = optuna.create_study(directions=search.directions(params.search),
                                sampler=search.make_sampler(sampler, seed))
    run_params = params.with_overrides({"search.pruner": pruner})
    objective = search.Objective(run_params, baseline, Run(None),
                                 fidelity=search.Fidelity(study.study_name, "bench", pruner))
    search.enqueue_current(study, run_params, objective.context)
    started = time.perf_counter()
    finished: dict[int, float] = {}

    def stamp(_study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        finished[trial.number] = time.perf_counter() - started

    study.optimize(objective, n_trials=trials, timeout=budget_s, catch=(Exception,), gc_after_trial=True,
                   callbacks=[stamp])
    return {"study": study, "wall_s": time.perf_counter() - started, "finished_s": finished}


def reference_point(params, teacher_accuracy: float, studies: list[optuna.Study]) -> list[float]:
    cfg = params.search
    feasible = [t for s in studies for t in s.trials
                if t.state == TrialState.COMPLETE and search.is_feasible(t.constraints)]
    ref = []
    for i, name in enumerate(cfg.objectives):
        if name == "val_accuracy":
            ref.append(teacher_accuracy - cfg.max_accuracy_drop / 100.0)
        elif name == "latency_ms_p50" and cfg.max_latency_ms is not None:
            ref.append(cfg.max_latency_ms)
        else:
            ref.append(1.1 * max((t.values[i] for t in feasible), default=1.0))
    return ref


def hv_at(result: dict, dirs: list[str], ref: list[float], at_s: float) -> float:
    """Hypervolume of the feasible front of the trials completed within ``at_s`` seconds."""
    done = [t for t in result["study"].trials
            if t.state == TrialState.COMPLETE and result["finished_s"].get(t.number, float("inf")) <= at_s]
    return search.hypervolume(search.feasible_front(done, search.objectives_of(result["study"])), dirs, ref)


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=os.environ.get("PARAMS_FILE", "params.yaml"))
    parser.add_argument("--teacher", default="models/teacher.pt")
    parser.add_argument("--trials", type=int, default=12, help="trial budget per study (0: no limit, use --budget)")
    parser.add_argument("--budget", type=float, default=None,
                        help="wall-clock budget per study in seconds (default: none; hv@T at the shortest run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samplers", nargs="+", default=["tpe", "random"], choices=["tpe", "random", "nsga2"])
    parser.add_argument("--pruners", nargs="+", default=["none", "hyperband"],
                        choices=["none", "median", "successive_halving", "hyperband"])
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="params overrides (YAML values), e.g. distill.epochs=6 for a cheaper bench")
    parser.add_argument("--runtimes", nargs="+", default=None,
                        help="override benchmark.runtimes (e.g. eager: no compile cost per trial)")
    parser.add_argument("--threads", type=int, default=None,
                        help="override benchmark.num_threads (1 is steadier on a busy machine)")
    parser.add_argument("--out", default="reports/search_efficiency.json")
    args = parser.parse_args(argv)
    if args.trials <= 0 and args.budget is None:
        parser.error("--trials 0 needs --budget")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = load_params(args.params)
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    if args.runtimes:
        overrides["benchmark.runtimes"] = args.runtimes
    if args.threads:
        overrides["benchmark.num_threads"] = args.threads
    params = params.with_overrides(overrides)
    import torch

    torch.set_num_threads(params.benchmark.num_threads)
    ctx = Context(params)
    baseline = search.Baseline.build(ctx, load_model(args.teacher).model)
    variants = [(s, p) for s in args.samplers for p in args.pruners]
    trials = args.trials if args.trials > 0 else None
    print(f"teacher val accuracy {baseline.teacher_val_accuracy:.4f}; {len(variants)} variants x {len(args.seeds)} "
          f"seeds, {trials or 'unlimited'} trials, budget {args.budget or 'none'} s each; overrides {overrides}",
          flush=True)

    results: dict[tuple[str, str, int], dict] = {}
    for seed in args.seeds:  # interleaved: drift hits every variant alike
        for sampler, pruner in variants:
            res = results[(sampler, pruner, seed)] = run_one(params, baseline, sampler, pruner, seed, trials,
                                                             args.budget)
            states = [t.state for t in res["study"].trials]
            print(f"done {sampler}/{pruner} seed {seed}: {len(states)} trials, "
                  f"{states.count(TrialState.PRUNED)} pruned, {res['wall_s']:.0f}s", flush=True)

    dirs = search.directions(params.search)
    ref = reference_point(params, baseline.teacher_val_accuracy, [r["study"] for r in results.values()])
    at_s = args.budget or min(r["wall_s"] for r in results.values())
    runs = []
    for (sampler, pruner, seed), res in results.items():
        study = res["study"]
        done = [t for t in study.trials if t.state == TrialState.COMPLETE]
        feasible = [t for t in done if search.is_feasible(t.constraints)]
        first = search.first_feasible(study.trials)
        runs.append({
            "sampler": sampler, "pruner": pruner, "seed": seed, "trials": len(study.trials),
            "complete": len(done), "pruned": sum(t.state == TrialState.PRUNED for t in study.trials),
            "failed": sum(t.state == TrialState.FAIL for t in study.trials), "feasible": len(feasible),
            "front": len(search.feasible_front(done, search.objectives_of(study))),
            "hypervolume": hv_at(res, dirs, ref, float("inf")), "hypervolume_at_T": hv_at(res, dirs, ref, at_s),
            "trials_to_first_feasible": first if first is not None else len(study.trials) + 1,
            "best_feasible_val_accuracy": max((t.values[0] for t in feasible), default=None),
            "wall_s": res["wall_s"],
        })
    summary = {}
    for sampler, pruner in variants:
        mine = [r for r in runs if (r["sampler"], r["pruner"]) == (sampler, pruner)]
        summary[f"{sampler}/{pruner}"] = {
            "wall_s": spread([r["wall_s"] for r in mine]),
            "pruned": spread([r["pruned"] for r in mine]),
            "hypervolume_at_T": spread([r["hypervolume_at_T"] for r in mine]),
            "hypervolume": spread([r["hypervolume"] for r in mine]),
            "trials_to_first_feasible": spread([r["trials_to_first_feasible"] for r in mine]),
        }
    result = {"objectives": list(params.search.objectives), "directions": dirs, "reference_point": ref,
              "teacher_val_accuracy": baseline.teacher_val_accuracy, "trials_per_study": trials,
              "budget_s": args.budget, "T_s": at_s, "seeds": args.seeds, "overrides": overrides,
              "runtimes": list(params.benchmark.runtimes), "runs": runs, "summary": summary}
    write_json(args.out, result)

    print(f"\nreference point {dict(zip(params.search.objectives, [round(r, 4) for r in ref]))}; "
          f"T = {at_s:.0f} s ({'--budget' if args.budget else 'the shortest run'})")
    head = ("sampler", "pruner", "seed", "trials", "pruned", "feasible", "hv@T", "hv", "1st feas", "wall s")
    print(f"{head[0]:8} {head[1]:18} {head[2]:>4} {head[3]:>6} {head[4]:>6} {head[5]:>8} {head[6]:>9} "
          f"{head[7]:>9} {head[8]:>8} {head[9]:>7}")
    for r in runs:
        print(f"{r['sampler']:8} {r['pruner']:18} {r['seed']:>4} {r['trials']:>6} {r['pruned']:>6} "
              f"{r['feasible']:>8} {r['hypervolume_at_T']:>9.5f} {r['hypervolume']:>9.5f} "
              f"{r['trials_to_first_feasible']:>8} {r['wall_s']:>7.0f}")
    print()
    for name, s in summary.items():
        hv, wall = s["hypervolume_at_T"], s["wall_s"]
        print(f"{name:26} hv@{at_s:.0f}s {hv['mean']:.5f} (sd {hv['sd']:.5f}, {hv['min']:.5f}..{hv['max']:.5f}); "
              f"wall {wall['mean']:.0f}s (sd {wall['sd']:.0f}); pruned {s['pruned']['mean']:.1f}; "
              f"final hv {s['hypervolume']['mean']:.5f}")
    for sampler in args.samplers:
        if "none" in args.pruners:
            base = summary[f"{sampler}/none"]
            for pruner in (p for p in args.pruners if p != "none"):
                other = summary[f"{sampler}/{pruner}"]
                print(f"{sampler}: {pruner} vs none: wall {other['wall_s']['mean'] / base['wall_s']['mean']:.2f}x "
                      f"for the same trial count; hv@T {other['hypervolume_at_T']['mean']:.5f} vs "
                      f"{base['hypervolume_at_T']['mean']:.5f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
