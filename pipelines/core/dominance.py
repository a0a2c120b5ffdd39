"""Pareto dominance over named numbers (one concept, used wherever two results are compared)."""

from __future__ import annotations

from collections.abc import Mapping


def dominates(a: Mapping[str, float], b: Mapping[str, float], directions: Mapping[str, str]) -> bool:
    """True when ``a`` is at least as good as ``b`` in every named number and better in one;
    ``directions`` maps each name to ``maximize`` or ``minimize``."""
    signed = [(float(a[k]), float(b[k])) if d == "minimize" else (-float(a[k]), -float(b[k]))
              for k, d in directions.items()]
    return all(x <= y for x, y in signed) and any(x < y for x, y in signed)
