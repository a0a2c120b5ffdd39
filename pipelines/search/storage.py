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

STORAGE_ENV = "OPTUNA_STORAGE"
HEARTBEAT_ENV, GRACE_ENV = "OPTUNA_HEARTBEAT_INTERVAL", "OPTUNA_GRACE_PERIOD"
HEARTBEAT_INTERVAL_S, GRACE_PERIOD_S = 10, 60  # defaults: a dead worker's trial is retried ~1 min later
MAX_RETRY = 2  # a trial whose worker died is re-queued at most this many times
TPE_STARTUP_TRIALS = 5
DIRECTIONS = {"accuracy": "maximize", "latency_ms_p50": "minimize", "size_mb": "minimize"}


def storage_url(cfg: SearchConfig) -> str:
    """``$OPTUNA_STORAGE``, else ``search.storage``, else ``sqlite:///<project root>/optuna.db``."""
    return os.environ.get(STORAGE_ENV) or cfg.storage or f"sqlite:///{project_root() / 'optuna.db'}"


def display_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs, MLflow tags and error lines)."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}"


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


def _rdb_storage(url: str, interval: int, grace: int, attempts: int = 4) -> optuna.storages.RDBStorage:
    """RDBStorage with heartbeats and retry of dead workers' trials. Workers that start at the same
    moment on an empty PostgreSQL database race to create Optuna's tables; the losers retry."""
    engine_kwargs = {} if url.startswith("sqlite") else {"pool_pre_ping": True}  # survive server restarts
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=interval, grace_period=grace,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRY))
        except Exception as exc:  # noqa: BLE001
            import sqlalchemy.exc

            if attempt + 1 == attempts or not isinstance(exc, (sqlalchemy.exc.IntegrityError,
                                                               sqlalchemy.exc.ProgrammingError)):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB URL (``sqlite:///``, ``postgresql://`` ...) or a journal file (``journal:<path>`` or a
    path ending in ``.journal``; relative paths are anchored at the project root). RDB storages
    get heartbeats (:func:`heartbeat_settings`) and retry of trials whose worker died; Optuna's
    journal storage has no heartbeat, so a killed process leaves its trial RUNNING there (the
    outputs only count COMPLETE trials)."""
    if url.startswith("journal:") or url.endswith(".journal"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        path = path if path.is_absolute() else project_root() / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ParamsError(f"search.storage: {url!r} is not an Optuna storage URL "
                          "(use sqlite:///path.db, postgresql://..., or journal:path)")
    interval, grace = heartbeat_settings()
    try:
        return _rdb_storage(url, interval, grace)
    except Exception as exc:  # noqa: BLE001 - any driver/connection problem becomes one line
        raise ParamsError(f"search.storage: cannot open {display_url(url)!r} ({error_line(exc)})") from None


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
        raise ParamsError(f"search.study_name: study {name!r} in {display_url(url) if isinstance(url, str) else 'storage'} "
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
