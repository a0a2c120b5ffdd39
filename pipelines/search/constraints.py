"""Constraints of a trial (Optuna 5 ``trial.set_constraint``; feasible = every value <= 0)."""

from __future__ import annotations

from pipelines.core.config import SearchConfig


def constraint_values(metrics: dict[str, float], teacher_val_accuracy: float, cfg: SearchConfig) -> dict[str, float]:
    """Named constraint values; the trial is feasible when every one is <= 0. Accuracy is the
    validation split's, the trial's and the teacher's (the test split never steers the search)."""
    out = {"accuracy": 100.0 * (teacher_val_accuracy - metrics["val_accuracy"]) - cfg.max_accuracy_drop}
    if cfg.max_latency_ms is not None:
        out["latency_ms"] = metrics["latency_ms_p50"] - cfg.max_latency_ms
    if cfg.min_speedup is not None:
        out["speedup"] = cfg.min_speedup - metrics["speedup_vs_teacher"]
    return out


def is_feasible(constraints: dict[str, float]) -> bool:
    return all(value <= 0.0 for value in constraints.values())
