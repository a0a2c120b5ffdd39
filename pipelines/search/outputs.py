"""What a search writes: ``pareto.json``, ``best_params.yaml`` and the Optuna plots."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from pipelines.core.config import Params
from pipelines.core.errors import error_line
from pipelines.core.io import atomic_write, write_dir, write_json, write_text
from pipelines.core.decision import explain, is_feasible
from pipelines.search.attrs import curve_of, metrics_of, named_constraints, overrides_of
from pipelines.search.current import current_trial
from pipelines.search.evidence import from_trial
from pipelines.search.pareto import SELECTION_RULE, feasible_front, pick_best, trial_record
from pipelines.search.storage import DIRECTIONS


def best_params_yaml(best: FrozenTrial, study_name: str, current: FrozenTrial | None = None,
                     objectives: list[str] | None = None) -> str:
    metrics = metrics_of(best)
    nan = float("nan")
    lines = [
        f"# Chosen by the search (study {study_name!r}, trial {best.number}).",
        f"# Rule: {SELECTION_RULE}.",
        f"# Trial metrics: val_accuracy {metrics.get('val_accuracy', nan):.4f} (test accuracy "
        f"{metrics.get('accuracy', nan):.4f}, reported only), "
        f"latency_ms_p50 {metrics.get('latency_ms_p50', nan):.3f} ({metrics.get('best_runtime', '?')}), "
        f"speedup_vs_teacher {metrics.get('speedup_vs_teacher', nan):.2f}, "
        f"size_mb {metrics.get('size_mb', nan):.4f}.",
    ]
    if current is not None and current.number == best.number:
        lines.append("# This is the current configuration: no trial improves on it within the intervals.")
    elif current is not None:
        lines.append(f"# Against the current configuration (trial {current.number}): "
                     + explain(from_trial(best), from_trial(current), objectives or ["val_accuracy"],
                               f"trial {best.number}", f"trial {current.number}") + ".")
    lines.append("# Every key is a dotted params.yaml key; `make promote` writes them into params.yaml.")
    import yaml

    body = yaml.safe_dump(dict(sorted(overrides_of(best).items())), sort_keys=False, default_flow_style=None)
    return "\n".join(lines) + "\n" + body


@dataclass
class SearchOutcome:
    study: optuna.Study
    trials: list[FrozenTrial]
    front: list[FrozenTrial]
    best: FrozenTrial | None
    counts: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    current: FrozenTrial | None = None  # the trial of the configuration params.yaml holds now
    pruned: list[FrozenTrial] = field(default_factory=list)


def objectives_of(study: optuna.Study, params: Params | None = None) -> list[str]:
    """The study's objective names (its metric names; else ``search.objectives``; else by direction)."""
    if study.metric_names:
        return list(study.metric_names)
    if params is not None:
        return list(params.search.objectives)
    return list(DIRECTIONS)[:len(study.directions)]


def summarize(study: optuna.Study, context: str | None, params: Params | None = None) -> SearchOutcome:
    """This context's trials, feasible front and chosen trial (:mod:`pipelines.core.decision`);
    ``params`` (the configuration params.yaml holds now) finds the current configuration's
    trial, the incumbent of the selection rule."""
    all_trials = [t for t in study.get_trials(deepcopy=False)
                  if context is None or t.user_attrs.get("context") == context]
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in all_trials if t.state == TrialState.PRUNED]
    objectives = objectives_of(study, params)
    front = feasible_front(complete, objectives)
    current = current_trial(complete, params, context) if params is not None and context is not None else None
    counts = {
        "trials": len(all_trials),
        "complete": len(complete),
        "pruned": len(pruned),
        "failed": sum(t.state == TrialState.FAIL for t in all_trials),
        "feasible": sum(is_feasible(named_constraints(t)) for t in complete),
        "front": len(front),
    }
    best = pick_best(complete, objectives, current)
    return SearchOutcome(study, complete, front, best, counts, current=current,
                         pruned=pruned)


def write_outputs(outcome: SearchOutcome, out_dir: Path, objectives: list[str],
                  meta: dict[str, Any] | None = None, plots_dir: Path | None = None) -> list[Path]:
    """``pareto.json``, ``best_params.yaml`` (when any trial is feasible), Pareto-front and
    parameter-importance plots (HTML + PNG, in ``plots_dir``, default ``out_dir``), replacing
    ``out_dir`` as a whole: nothing of an earlier search (a plot this one cannot draw) stays
    beside them."""
    files = write_dir(out_dir, lambda staging: _write_outputs(outcome, staging, objectives, meta,
                                                              with_plots=plots_dir is None))
    if plots_dir is not None:
        Path(plots_dir).mkdir(parents=True, exist_ok=True)
        files += write_plots(outcome, Path(plots_dir), objectives)
    return files


def _write_outputs(outcome: SearchOutcome, out_dir: Path, objectives: list[str],
                   meta: dict[str, Any] | None, with_plots: bool) -> list[Path]:
    study = outcome.study
    files = [write_json(out_dir / "pareto.json", {
        "study": study.study_name,
        **(meta or {}),
        "objectives": {name: DIRECTIONS[name] for name in objectives},
        "selection_rule": SELECTION_RULE,
        "best_trial": outcome.best.number if outcome.best else None,
        "current_trial": trial_record(outcome.current) if outcome.current else None,
        "counts": outcome.counts,
        "trials": [trial_record(t) for t in outcome.front],
        "pruned": [{"number": t.number, "pruned_at_step": t.user_attrs.get("pruned_at_step"),
                    "overrides": overrides_of(t),
                    "val_accuracy_curve": curve_of(t)} for t in outcome.pruned],
    })]
    if outcome.best is not None:
        files.append(write_text(out_dir / "best_params.yaml",
                                best_params_yaml(outcome.best, study.study_name, outcome.current, objectives)))
    if with_plots:
        files += write_plots(outcome, out_dir, objectives)
    return files


def _view(outcome: SearchOutcome) -> optuna.Study:
    """An in-memory study holding only this context's completed trials (what the plots show)."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" line
    try:
        view = optuna.create_study(directions=[d.name.lower() for d in outcome.study.directions])
    finally:
        optuna.logging.set_verbosity(level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if outcome.study.metric_names:
            view.set_metric_names(outcome.study.metric_names)
    view.add_trials(outcome.trials)
    return view


def write_plots(outcome: SearchOutcome, out_dir: Path, objectives: list[str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    files: list[Path] = []
    if not outcome.trials:
        return files
    view = _view(outcome)
    plots: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "pareto_front": (lambda: ovm.plot_pareto_front(view, target_names=objectives),
                         lambda: optuna.visualization.plot_pareto_front(view, target_names=objectives)),
    }
    if len(outcome.trials) >= 2 and outcome.study.directions:
        def first(t: FrozenTrial) -> float:
            return t.values[0]

        # fANOVA: share of the variance of the first objective explained by each parameter
        # (direction-agnostic, unlike PED-ANOVA which ranks for *low* values).
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        plots["param_importances"] = (
            lambda: ovm.plot_param_importances(view, evaluator, target=first, target_name=objectives[0]),
            lambda: optuna.visualization.plot_param_importances(view, evaluator, target=first,
                                                                 target_name=objectives[0]),
        )
    for name, (mpl_plot, plotly_plot) in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = mpl_plot()
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(8, 5.5)
            fig.tight_layout()
            png = out_dir / f"{name}.png"
            atomic_write(png, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=110))
            plt.close(fig)
            html = plotly_plot().to_html(include_plotlyjs=True, full_html=True)  # interactive, self-contained
            files += [png, write_text(out_dir / f"{name}.html", html)]
        except Exception as exc:  # noqa: BLE001 - a plot that cannot be drawn must not lose the study
            print(f"[search] plot {name} skipped: {error_line(exc)}", flush=True)
    return files
