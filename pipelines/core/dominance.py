"""Pareto dominance (one concept, used wherever two results are compared: the search's front and
selection rule, ``make promote``'s refusal, the Model Registry's champion alias)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def _signed(values: Sequence[float], dirs: Sequence[str]) -> list[float]:
    """Values with every axis turned into 'lower is better'."""
    return [float(v) if d == "minimize" else -float(v) for v, d in zip(values, dirs)]


def no_worse(a: Sequence[float], b: Sequence[float], dirs: Sequence[str]) -> bool:
    """``a`` is at least as good as ``b`` on every axis (``dirs``: ``maximize``/``minimize`` each)."""
    return all(x <= y for x, y in zip(_signed(a, dirs), _signed(b, dirs)))


def dominates(a: Sequence[float], b: Sequence[float], dirs: Sequence[str]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere."""
    return no_worse(a, b, dirs) and any(x < y for x, y in zip(_signed(a, dirs), _signed(b, dirs)))


def dominates_named(a: Mapping[str, float], b: Mapping[str, float], directions: Mapping[str, str]) -> bool:
    """:func:`dominates` over named numbers; ``directions`` maps each name to its direction."""
    names = list(directions)
    return dominates([a[k] for k in names], [b[k] for k in names], [directions[k] for k in names])
