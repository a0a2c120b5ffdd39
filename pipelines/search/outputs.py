"""What a search writes: ``pareto.json``, ``best_params.yaml`` and the Optuna plots."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from pipelines.core.errors import error_line
from pipelines.core.io import atomic_write, write_json, write_text
from pipelines.search.constraints import is_feasible
from pipelines.search.pareto import SELECTION_RULE, feasible_front, pick_best, trial_record
from pipelines.search.storage import DIRECTIONS


def best_params_yaml(best: FrozenTrial, study_name: str) -> str:
    metrics = best.user_attrs.get("metrics", {})
    lines = [
        f"# Chosen by the search (study {study_name!r}, trial {best.number}).",
        f"# Rule: {SELECTION_RULE}.",
        f"# Trial metrics: accuracy {metrics.get('accuracy', float('nan')):.4f}, "
        f"latency_ms_p50 {metrics.get('latency_ms_p50', float('nan')):.3f} ({metrics.get('best_runtime', '?')}), "
        f"speedup_vs_teacher {metrics.get('speedup_vs_teacher', float('nan')):.2f}, "
        f"size_mb {metrics.get('size_mb', float('nan')):.4f}.",
        "# Every key is a dotted params.yaml key; `make promote` writes them into params.yaml.",
    ]
    import yaml

    body = yaml.safe_dump(dict(sorted(best.user_attrs["overrides"].items())), sort_keys=False,
                          default_flow_style=False)
    return "\n".join(lines) + "\n" + body


@dataclass
class SearchOutcome:
    study: optuna.Study
    trials: list[FrozenTrial]
    front: list[FrozenTrial]
    best: FrozenTrial | None
    counts: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def summarize(study: optuna.Study, context: str | None) -> SearchOutcome:
    all_trials = [t for t in study.get_trials(deepcopy=False)
                  if context is None or t.user_attrs.get("context") == context]
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    dirs = [d.name.lower() for d in study.directions]
    front = feasible_front(complete, dirs)
    counts = {
        "trials": len(all_trials),
        "complete": len(complete),
        "failed": sum(t.state == TrialState.FAIL for t in all_trials),
        "feasible": sum(is_feasible(t.constraints) for t in complete),
        "front": len(front),
    }
    return SearchOutcome(study, complete, front, pick_best(complete), counts)


def write_outputs(outcome: SearchOutcome, out_dir: Path, objectives: list[str],
                  meta: dict[str, Any] | None = None) -> list[Path]:
    """``pareto.json``, ``best_params.yaml`` (when any trial is feasible), Pareto-front and
    parameter-importance plots (HTML + PNG)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = outcome.study
    files = [write_json(out_dir / "pareto.json", {
        "study": study.study_name,
        **(meta or {}),
        "objectives": {name: DIRECTIONS[name] for name in objectives},
        "selection_rule": SELECTION_RULE,
        "best_trial": outcome.best.number if outcome.best else None,
        "counts": outcome.counts,
        "trials": [trial_record(t) for t in outcome.front],
    })]
    best_path = out_dir / "best_params.yaml"
    if outcome.best is not None:
        files.append(write_text(best_path, best_params_yaml(outcome.best, study.study_name)))
    else:
        best_path.unlink(missing_ok=True)
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
