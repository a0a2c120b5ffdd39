"""The whole compression chain, for the search (which runs every step in one process) and tests:
each step lives in its stage's module of :mod:`pipelines.chain` (a stage imports only its own, so
editing one step does not re-run the stages before it). The stages and every Optuna trial call
exactly these functions (no second implementation)."""

from __future__ import annotations

from pipelines.chain.distill import DistillOutcome, distill_student
from pipelines.chain.metrics import model_metrics
from pipelines.chain.prune import PruneOutcome, prune_student
from pipelines.chain.quantize import EngineChooser, quantize_model
from pipelines.chain.teacher import data_record, train_teacher
from pipelines.training.context import Context

__all__ = ["Context", "DistillOutcome", "EngineChooser", "PruneOutcome", "data_record", "distill_student",
           "model_metrics", "prune_student", "quantize_model", "train_teacher"]
