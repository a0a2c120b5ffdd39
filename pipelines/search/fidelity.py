"""Multi-fidelity search: every trial reports its validation accuracy after each training epoch,
and an Optuna pruner (``search.pruner``) stops the trials that are hopeless by then.

Optuna's ``Trial.report`` / ``Trial.should_prune`` serve single-objective studies only, and the
search study has several objectives. So each search context gets a companion single-objective
study, ``<study>:val_accuracy:<context>``, in the same storage, whose trials mirror the search's
trials one to one (user attrs ``search_trial`` / ``fidelity_trial`` link them): the companion
trial receives each epoch's validation accuracy (``trial.report``) and asks the pruner
(``trial.should_prune``); when the pruner says so, the search trial ends with
``optuna.TrialPruned`` and is PRUNED in the search study too. The companion study is also where
optuna-dashboard draws the learning curves (its intermediate-values plot).

A step is one training epoch anywhere in the trial's chain: the distillation epochs first, then
every fine-tuning epoch of the pruning steps and of QAT, counted on.
"""

from __future__ import annotations

from collections.abc import Callable
import optuna
from optuna.trial import TrialState

PRUNERS = ("none", "median", "successive_halving", "hyperband")


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """Optuna's pruner for ``search.pruner`` (library defaults)."""
    if name == "median":
        return optuna.pruners.MedianPruner()
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; allowed: {', '.join(PRUNERS)}")


def fidelity_study_name(study_name: str, context: str) -> str:
    return f"{study_name}:val_accuracy:{context}"


class Fidelity:
    """The companion study of one search context (``storage=None``: in memory)."""

    def __init__(self, study_name: str, context: str, pruner: str,
                 storage: str | optuna.storages.BaseStorage | None = None) -> None:
        self.pruner = pruner
        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
        try:
            self.study = optuna.create_study(study_name=fidelity_study_name(study_name, context), storage=storage,
                                             direction="maximize", pruner=make_pruner(pruner), load_if_exists=True)
        finally:
            optuna.logging.set_verbosity(level)
        self.study.set_user_attr("search_study", study_name)
        self.study.set_user_attr("context", context)

    def curve(self, trial: optuna.Trial, may_prune: bool = True,
              log: Callable[[dict[str, float], int], None] | None = None) -> "Curve":
        return Curve(self, trial, may_prune and self.pruner != "none", log)


class Curve:
    """One trial's learning curve: the ``after_epoch`` callback of its training loops."""

    def __init__(self, fidelity: Fidelity, trial: optuna.Trial, may_prune: bool,
                 log: Callable[[dict[str, float], int], None] | None) -> None:
        self.fidelity = fidelity
        self.twin = fidelity.study.ask()
        self.twin.set_user_attr("search_trial", trial.number)
        trial.set_user_attr("fidelity_trial", self.twin.number)
        self.may_prune = may_prune
        self.log = log
        self.values: list[float] = []

    @property
    def step(self) -> int:
        return len(self.values)

    def __call__(self, epoch: int, val_accuracy: float) -> None:
        """The training loop's ``after_epoch``: report, and stop the trial if the pruner says so."""
        value = float(val_accuracy)
        self.values.append(value)
        self.twin.report(value, self.step)
        if self.log is not None:
            self.log({"val_accuracy_epoch": value}, self.step)
        # Asked even when this trial may not be pruned: the pruner records its rungs, so the trial
        # still counts as a reference for the others.
        if self.twin.should_prune() and self.may_prune:
            raise optuna.TrialPruned(f"pruned at step {self.step} (val accuracy {value:.4f})")

    def finish(self, state: TrialState, value: float | None = None) -> None:
        """Close the companion trial: COMPLETE with the final model's validation accuracy, or
        PRUNED / FAIL like the search trial."""
        if state == TrialState.COMPLETE:
            self.fidelity.study.tell(self.twin, value)
        else:
            self.fidelity.study.tell(self.twin, state=state)
