"""Never a silent collapse: a chain model whose accuracy cannot be told from chance, or a stage that
lost more than its budget, is named in one warning line (printed by the stage, opening the report,
tagged on the MLflow runs) and keeps the ``champion`` alias where it is.

Chance: the model's 95% Wilson interval (:class:`~pipelines.core.stats.Accuracy`) covers
``1 / num_classes``. Drop: percentage points lost against the model the stage started from, over
``quantize.max_accuracy_drop`` or, without one, :data:`DEFAULT_MAX_DROP_PP`.
"""

from __future__ import annotations

from pipelines.core.stats import Accuracy

DEFAULT_MAX_DROP_PP = 2.0
WARNING_TAG = "collapse_warning"  # MLflow tag (runs) and headline key (metrics/summary.json)


def at_chance(acc: Accuracy, num_classes: int) -> bool:
    lo, hi = acc.interval
    return num_classes > 0 and lo <= 1.0 / num_classes <= hi


def collapse_warnings(name: str, acc: Accuracy, num_classes: int, drop_pp: float | None = None,
                      max_drop_pp: float = DEFAULT_MAX_DROP_PP, against: str = "its fp32 source") -> list[str]:
    """One line per problem of model ``name`` (empty: none)."""
    out = []
    if at_chance(acc, num_classes):
        out.append(f"WARNING: {name} is indistinguishable from chance: accuracy {acc.describe()} covers "
                   f"1/{num_classes} = {1 / num_classes:.4f}")
    if drop_pp is not None and drop_pp > max_drop_pp:
        out.append(f"WARNING: {name} lost {drop_pp:.2f} pp against {against}, over the {max_drop_pp:g} pp allowed")
    return out
