"""Where a study lives and how it is opened: storage URLs (RDB with heartbeats, or a journal
file), the sampler, and create-or-resume."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import optuna

from pipelines.core.config import Params, SearchConfig
from pipelines.core.errors import ParamsError, error_line
from pipelines.core.io import project_root
from pipelines.core.urls import mask_url, redact
from pipelines.tracking import PROBE_TIMEOUT_ENV, database_unreachable

STORAGE_ENV = "OPTUNA_STORAGE"
HEARTBEAT_ENV, GRACE_ENV = "OPTUNA_HEARTBEAT_INTERVAL", "OPTUNA_GRACE_PERIOD"
HEARTBEAT_INTERVAL_S, GRACE_PERIOD_S = 10, 60  # defaults: a dead worker's trial is retried ~1 min later
MAX_RETRY = 2  # a trial whose worker died is re-queued at most this many times
TPE_STARTUP_TRIALS = 5
DIRECTIONS = {"val_accuracy": "maximize", "latency_ms_p50": "minimize", "size_mb": "minimize"}


def storage_url(cfg: SearchConfig) -> str:
    """``$OPTUNA_STORAGE``, else ``search.storage``, else ``sqlite:///<project root>/optuna.db``."""
    return os.environ.get(STORAGE_ENV) or cfg.storage or f"sqlite:///{project_root() / 'optuna.db'}"


def _positive_int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise ParamsError(f"${name}: {raw!r} is not a positive whole number of seconds")
    return int(raw)


def heartbeat_settings() -> tuple[int, int]:
    """``(heartbeat_interval, grace_period)`` in seconds, from the environment or the defaults."""
    interval = _positive_int_env(HEARTBEAT_ENV, HEARTBEAT_INTERVAL_S)
    grace = _positive_int_env(GRACE_ENV, max(GRACE_PERIOD_S, 6 * interval))
    if grace <= interval:
        raise ParamsError(f"${GRACE_ENV}: {grace} must exceed ${HEARTBEAT_ENV} ({interval}), or live "
                          "trials would be failed between two heartbeats")
    return interval, grace


def _rdb_storage(url: str, heartbeat: tuple[int, int] | None, attempts: int = 4) -> optuna.storages.RDBStorage:
    """RDBStorage, with ``heartbeat=(interval, grace)`` heartbeats and retry of dead workers'
    trials. Workers that start at the same moment on an empty PostgreSQL database race to create
    Optuna's tables; the losers retry."""
    engine_kwargs = {} if url.startswith("sqlite") else {"pool_pre_ping": True}  # survive server restarts
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                beats = {} if heartbeat is None else {
                    "heartbeat_interval": heartbeat[0], "grace_period": heartbeat[1],
                    "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRY)}
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **beats)
        except Exception as exc:  # noqa: BLE001
            import sqlalchemy.exc

            if attempt + 1 == attempts or not isinstance(exc, (sqlalchemy.exc.IntegrityError,
                                                               sqlalchemy.exc.ProgrammingError)):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def make_storage(url: str, heartbeat: bool = True) -> optuna.storages.BaseStorage:
    """An RDB URL (``sqlite:///``, ``postgresql://`` ...) or a journal file (``journal:<path>`` or a
    path ending in ``.journal``; relative paths are anchored at the project root). RDB storages
    get heartbeats (:func:`heartbeat_settings`) and retry of trials whose worker died, unless
    ``heartbeat=False`` (the pruner's companion study: its trials are closed by the search trial's
    own code); Optuna's journal storage has no heartbeat, so a killed process leaves its trial
    RUNNING there (the outputs only count COMPLETE trials)."""
    if url.startswith("journal:") or url.endswith(".journal"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        path = path if path.is_absolute() else project_root() / path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise ParamsError(f"search.storage: cannot use the journal file {str(path)!r} "
                              f"({type(exc).__name__}: {exc.strerror or exc})") from None
    if "://" not in url:
        raise ParamsError(f"search.storage: {url!r} is not an Optuna storage URL "
                          "(use sqlite:///path.db, postgresql://..., or journal:path)")
    beats = heartbeat_settings() if heartbeat else None
    reason = database_unreachable(url, float(os.environ.get(PROBE_TIMEOUT_ENV) or 5))
    if reason:  # in seconds, with the driver's own reason, instead of a hang on a silent host
        raise ParamsError(f"search.storage: cannot open {mask_url(url)!r} ({reason})")
    try:
        return _rdb_storage(url, beats)
    except Exception as exc:  # noqa: BLE001 - any driver/connection problem becomes one line
        raise ParamsError(f"search.storage: cannot open {mask_url(url)!r} ({redact(error_line(exc), url)})") from None


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    # TPE reads the constraints set through trial.set_constraint (Optuna 5) by itself.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS, multivariate=True)


def directions(cfg: SearchConfig) -> list[str]:
    return [DIRECTIONS[name] for name in cfg.objectives]


def open_study(params: Params, sampler: str | None = None, storage: str | optuna.storages.BaseStorage | None = None,
               study_name: str | None = None, seed: int | None = None) -> optuna.Study:
    """Create or resume (``load_if_exists``) the study; finished trials are never touched."""
    cfg = params.search
    name = study_name or cfg.study_name
    url = storage if storage is not None else storage_url(cfg)
    store = make_storage(url) if isinstance(url, str) else url
    wanted = directions(cfg)
    try:
        existing = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        existing = None
    if existing is not None and [d.name.lower() for d in existing.directions] != wanted:
        got = [d.name.lower() for d in existing.directions]
        raise ParamsError(f"search.study_name: study {name!r} in {mask_url(url) if isinstance(url, str) else 'storage'} "
                          f"optimizes {got}, but search.objectives {list(cfg.objectives)} needs {wanted}; "
                          "pick another search.study_name")
    # A resumed study must not replay the first run's random draws: offset the seed by the
    # number of trials already in the study (still deterministic given the history).
    base_seed = params.seed if seed is None else seed
    offset = len(existing.get_trials(deepcopy=False)) if existing is not None else 0
    study = optuna.create_study(study_name=name, storage=store, directions=wanted, load_if_exists=True,
                                sampler=make_sampler(sampler or cfg.sampler, base_seed + offset))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(cfg.objectives))
    return study
