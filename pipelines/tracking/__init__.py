"""The one MLflow module: store location, experiment, parent/stage/trial runs, logging.

Layout in the store (docs/tracking.md):

- experiment ``tracking.experiment``, tagged ``mlflow.experimentKind=custom_model_development``;
- one *pipeline* parent run per pipeline execution (keyed by the DVC experiment name, or
  ``workspace``), opened by the first stage that runs and closed by ``report``;
- one run per stage execution under it, tagged ``stage``, ``git_commit``, ``params_hash`` and
  ``dvc_exp``; Optuna trials are nested runs under the search run;
- the parent carries every params section, the headline metrics (``metrics/summary.json``) and
  the report as its description; it is named by the DVC experiment (or params hash) and time;
- each stage's model is a logged model named after it (``teacher`` ... ``quantized``), tagged with
  its checkpoint's sha256 so later stages find it and link their measurements to it; the final
  one is registered under ``tracking.registered_model``, and the ``champion`` alias moves to the
  new version only when it improves on the version holding it within the 95% intervals
  (:mod:`pipelines.core.decision`), on the same test images (by digest).

Modules: :mod:`.store` (where the store is, whether it answers, the experiment), :mod:`.run` (a
run handle and its tags), :mod:`.pipeline` (parent, stage and trial runs), :mod:`.registry`
(logged models and the Model Registry).
"""

from pipelines.tracking.pipeline import (PIPELINE_ROLE, all_params, child_run, close_pipeline, mark_killed,
                                         pipeline_key, pipeline_label, pipeline_parent, stage_run)
from pipelines.tracking.registry import (CHAMPION, CHAMPION_DIRECTIONS, CHAMPION_OBJECTIVES, Registration,
                                         find_logged_model,
                                         link_model_metrics, register_final, version_checkpoint)
from pipelines.tracking.run import (CHECKPOINT_TAG, MAX_DESCRIPTION, Run, environment_tags, flatten, git_commit,
                                    numeric_leaves, params_hash)
from pipelines.tracking.store import (DATABASE_PORTS, PROBE_TIMEOUT_ENV, check_reachable, database_unreachable,
                                      experiment_id, runs_url, tracking_uri, ui_base)

__all__ = ["CHAMPION", "CHAMPION_DIRECTIONS", "CHAMPION_OBJECTIVES", "CHECKPOINT_TAG", "DATABASE_PORTS", "MAX_DESCRIPTION", "PIPELINE_ROLE",
           "PROBE_TIMEOUT_ENV", "Registration", "Run", "all_params", "check_reachable", "child_run", "close_pipeline",
           "database_unreachable", "environment_tags", "experiment_id", "find_logged_model", "flatten", "git_commit",
           "link_model_metrics", "mark_killed", "numeric_leaves", "params_hash", "pipeline_key", "pipeline_label",
           "pipeline_parent", "register_final", "runs_url", "stage_run", "tracking_uri", "ui_base",
           "version_checkpoint"]
