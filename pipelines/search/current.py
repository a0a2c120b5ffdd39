"""The configuration ``params.yaml`` describes now, inside the search.

A new search context starts with it as an enqueued trial (``study.enqueue_trial``), so the study
always holds the starting point measured exactly like every other trial. It is the incumbent of
the one decision rule (:mod:`pipelines.core.decision`): the selection rule and ``make promote``
take another trial only when it improves on it within the 95% intervals, and promoting one that
does not is refused (``--force`` overrides, saying what is lost).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from pipelines.core.config import Params, SearchDimension
from pipelines.core.errors import ParamsError
from pipelines.search.attrs import overrides_of
from pipelines.core.decision import explain, replaces
from pipelines.search.evidence import from_trial
from pipelines.search.space import in_space, to_optuna
from pipelines.search.storage import make_storage, storage_url

ORIGIN = "params.yaml"  # user attr `origin` of the enqueued current configuration


def current_overrides(params: Params, keys) -> dict[str, Any]:
    """``params``' own values of the dotted ``keys``."""
    out = {}
    for key in keys:
        section, _, name = key.partition(".")
        out[key] = getattr(getattr(params, section), name)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def same_overrides(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return a is not None and b is not None and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)


def check_inside(params: Params) -> None:
    """The current configuration must be a point of ``search.space`` (or the study could not
    measure where it starts): one line naming the key otherwise."""
    for key, dim in params.search.space.items():
        value = current_overrides(params, [key])[key]
        if not in_space(dim, value):
            raise ParamsError(f"search.space.{key}: the current {key} {value!r} is outside the space "
                              f"({_describe(dim)}); widen it so the search can start from params.yaml")


def _describe(dim: SearchDimension) -> str:
    if dim.type == "categorical":
        return f"choices {list(dim.choices or [])}"
    return f"{dim.type} {dim.low}..{dim.high}" + (f" step {dim.step}" if dim.step else "")


def current_trial(trials: list[FrozenTrial], params: Params, context: str) -> FrozenTrial | None:
    """The earliest trial of ``context`` that measured ``params``' current configuration."""
    mine = [t for t in trials if t.user_attrs.get("context") == context]
    for t in sorted(mine, key=lambda t: t.number):
        if not overrides_of(t):  # enqueued, not started yet: only the starting point is enqueued
            if t.user_attrs.get("origin") == ORIGIN:
                return t
            continue
        if same_overrides(overrides_of(t), current_overrides(params, overrides_of(t))):
            return t
    return None


def enqueue_current(study: optuna.Study, params: Params, context: str) -> bool:
    """Enqueue the current configuration unless ``context`` already has a trial of it (in any
    state: waiting, running, finished). True when it was enqueued."""
    check_inside(params)
    if current_trial(study.get_trials(deepcopy=False), params, context) is not None:
        return False
    space = params.search.space
    values = current_overrides(params, space)
    study.enqueue_trial({key: to_optuna(space[key], value) for key, value in values.items()},
                        user_attrs={"context": context, "origin": ORIGIN})
    return True


@dataclass
class Comparison:
    """A candidate trial against the current configuration's trial (same context), under the one
    decision rule (:func:`pipelines.core.decision.replaces`)."""

    candidate: FrozenTrial | None
    current: FrozenTrial | None
    objectives: list[str]

    @property
    def comparable(self) -> bool:
        return (self.candidate is not None and self.current is not None
                and self.candidate.state == TrialState.COMPLETE and self.current.state == TrialState.COMPLETE
                and self.candidate.number != self.current.number)

    @property
    def refused(self) -> bool:
        """The candidate may not replace the current configuration (no improvement within the intervals)."""
        return self.comparable and not replaces(from_trial(self.candidate), from_trial(self.current), self.objectives)

    def evidence(self) -> str:
        return explain(from_trial(self.candidate), from_trial(self.current), self.objectives,
                       f"trial {self.candidate.number}", f"trial {self.current.number}")

    def refusal(self) -> str:
        return (f"trial {self.candidate.number} does not improve on trial {self.current.number}, the current "
                f"configuration, within the 95% intervals ({self.evidence()}); params.yaml left as it is "
                "(`make promote FORCE=1` or --force promotes it anyway)")

    def loss(self) -> str:
        return (f"promoting trial {self.candidate.number} although it does not improve on trial "
                f"{self.current.number} (the current configuration): {self.evidence()}")

    def gain(self) -> str:
        return f"trial {self.candidate.number} improves on the current configuration: {self.evidence()}"

    def note(self) -> str | None:
        if self.candidate is None:
            return "no finished trial in the study measured these values; not compared with the current configuration"
        if self.current is None:
            return (f"the current configuration has no finished trial in trial {self.candidate.number}'s context; "
                    "not compared (run `make search` to measure it)")
        return None


def compare_to_current(params: Params, overrides: dict[str, Any]) -> Comparison:
    """Look up, in the study of ``params.search``, the latest finished trial that measured
    ``overrides`` and the trial of the current configuration in the same context."""
    cfg = params.search
    objectives = list(cfg.objectives)
    url = storage_url(cfg)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return Comparison(None, None, objectives)
    try:
        study = optuna.load_study(study_name=cfg.study_name, storage=make_storage(url))
    except KeyError:
        return Comparison(None, None, objectives)
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    matches = [t for t in trials if same_overrides(overrides_of(t), overrides)]
    if not matches:
        return Comparison(None, None, objectives)
    candidate = max(matches, key=lambda t: t.number)
    current = current_trial(trials, params, candidate.user_attrs.get("context"))
    return Comparison(candidate, current, list(study.metric_names or objectives))
