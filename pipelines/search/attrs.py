"""What a search writes on its Optuna study and trials, laid out for optuna-dashboard 0.21.

- Trial user attrs are flat numbers (``accuracy``, ``latency_ms_p50``, ``speedup_vs_teacher``,
  ``size_mb``, ``feasible`` as 1/0 ...) plus the fastest ``best_runtime`` and the MLflow run's
  URL, so the dashboard's trial table sorts them; the complete records the outputs need
  (``metrics``, ``overrides``) are system attrs, which the table does not show.
- Constraints: Optuna 5's ``trial.set_constraint`` writes one system attr ``constraints:<name>``
  per constraint, while optuna-dashboard 0.21 reads the pre-5 list attr ``constraints``
  (``optuna_dashboard/_serializer.py``). Both are written, in the order of the names; readers of
  the outputs use :func:`named_constraints` (Optuna itself reads the list as ``"0"``, ``"1"``...).
- The study's user attrs say what it optimizes under which constraints against which teacher;
  each trial's dashboard note links its MLflow run.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

METRICS, OVERRIDES, CURVE = "metrics", "overrides", "val_accuracy_curve"  # system attrs: records for the outputs
DASHBOARD_CONSTRAINTS = "constraints"  # the list optuna-dashboard 0.21 reads
FLAT = ("val_accuracy", "accuracy", "accuracy_drop_vs_teacher", "latency_ms_p50", "speedup_vs_teacher", "size_mb",
        "compile_time_s")


def _set_system_attr(trial: optuna.Trial, key: str, value: Any) -> None:
    storage = trial.storage
    study_id = storage.get_study_id_from_name(trial.study.study_name)
    storage.set_trial_system_attr(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number), key, value)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def record_overrides(trial: optuna.Trial, overrides: dict[str, Any]) -> None:
    _set_system_attr(trial, OVERRIDES, _plain(overrides))


def record_result(trial: optuna.Trial, metrics: dict[str, Any], constraints: dict[str, float], feasible: bool,
                  mlflow_url: str = "") -> None:
    """Constraints (both formats), flat user attrs, the full metrics record and the MLflow link."""
    for name, value in constraints.items():
        trial.set_constraint(name, value)
    _set_system_attr(trial, DASHBOARD_CONSTRAINTS, [float(v) for v in constraints.values()])
    _set_system_attr(trial, METRICS, _plain(metrics))
    for key in FLAT:
        if isinstance(metrics.get(key), (int, float)):
            trial.set_user_attr(key, float(metrics[key]))
    trial.set_user_attr("best_runtime", str(metrics.get("best_runtime", "")))
    trial.set_user_attr("feasible", int(feasible))
    if "noisy" in metrics:
        trial.set_user_attr("noisy", int(bool(metrics["noisy"])))
    if mlflow_url:
        trial.set_user_attr("mlflow_run", mlflow_url)
        from optuna_dashboard import save_note

        save_note(trial, f"MLflow run: [{mlflow_url}]({mlflow_url})")


def record_curve(trial: optuna.Trial, values: list[float]) -> None:
    """The validation accuracy after each epoch the trial trained (a system attr: a list, not a table column)."""
    _set_system_attr(trial, CURVE, [float(v) for v in values])


def curve_of(trial: FrozenTrial) -> list[float]:
    return trial.system_attrs.get(CURVE) or trial.user_attrs.get(CURVE, [])


def metrics_of(trial: FrozenTrial) -> dict[str, Any]:
    """A trial's full metrics record (studies written before the flat attrs kept it as a user attr)."""
    return trial.system_attrs.get(METRICS) or trial.user_attrs.get(METRICS, {})


def overrides_of(trial: FrozenTrial) -> dict[str, Any]:
    return trial.system_attrs.get(OVERRIDES) or trial.user_attrs.get(OVERRIDES, {})


def named_constraints(trial: FrozenTrial) -> dict[str, float]:
    """The named constraint values, without the dashboard's positional copies."""
    named = {k: v for k, v in trial.constraints.items() if not k.isdigit()}
    return named or dict(trial.constraints)


def describe_study(study: optuna.Study, objectives: dict[str, str], constraints: dict[str, Any],
                   teacher_accuracy: float, context: str, mlflow_url: str = "") -> None:
    """Study user attrs: objectives, constraints, the teacher's accuracy, the trials' context."""
    study.set_user_attr("objectives", ", ".join(f"{k} ({v})" for k, v in objectives.items()))
    study.set_user_attr("constraints", "; ".join(f"{k} = {v}" for k, v in constraints.items() if v is not None))
    study.set_user_attr("teacher_val_accuracy", float(teacher_accuracy))  # the constraint is relative to it
    study.set_user_attr("context", context)
    if mlflow_url:
        study.set_user_attr("mlflow_run", mlflow_url)


def describe_resolution(res: dict[str, Any]) -> str:
    """The accuracy objective's resolution in words (study user attr, report)."""
    return (f"{res['images']} validation images: one image is {res['one_image_pp']:.2f} pp; two models that agree on "
            f"every image are within +-{res['undetectable_pp']:.2f} pp (95%), and a difference is shown only from "
            f"{res['detectable_images']} images one way and none the other ({res['detectable_pp']:.2f} pp)")
