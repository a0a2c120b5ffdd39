"""Where the MLflow store is and whether it answers: the tracking URI, a fast reachability probe
(HTTP server or database), the UI's base URL, and the experiment."""

from __future__ import annotations

import base64
import logging
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from pipelines.core.errors import TrackingError, error_line, first_line
from pipelines.core.io import project_root
from pipelines.core.urls import mask_url, redact, without_userinfo

# A remote server gets this many seconds to answer the start-up probe (env var overrides).
PROBE_TIMEOUT_ENV = "COMPRESSION_LAB_TRACKING_PROBE_TIMEOUT_S"
_reachable: set[str] = set()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def check_reachable(uri: str | None = None) -> None:
    """Fail in seconds, before any compute, when a remote tracking store does not answer: MLflow's
    own client retries a refused connection for minutes (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` x
    backoff for a server, ten attempts over ~100 s for a database). For an ``http(s)://`` server an
    HTTP answer such as 200 or 401/403 from an auth proxy counts as reachable; a refused/timed-out
    connection or a 5xx is a :class:`TrackingError` naming the URI (password masked), and so is a
    404 (something answers, but it is not an MLflow server). A database URL (PostgreSQL, MySQL,
    SQL Server) gets one connection attempt, which reports the real reason (refused, unknown host,
    authentication failed). Local stores (sqlite, file) are not probed."""
    uri = uri or tracking_uri()
    if uri in _reachable:
        return
    timeout = float(os.environ.get(PROBE_TIMEOUT_ENV) or 5)
    if uri.lower().startswith(("http://", "https://")):
        _probe_http(uri, timeout)
    else:
        reason = database_unreachable(uri, timeout)
        if reason:
            raise TrackingError(f"MLflow tracking store {mask_url(uri)} is not reachable ({reason}); "
                                "check the URL and the database server, or unset MLFLOW_TRACKING_URI")
    _reachable.add(uri)


def _probe_http(uri: str, timeout: float) -> None:
    context = None
    if uri.lower().startswith("https://"):  # honour MLflow's own TLS settings
        import ssl

        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            context = ssl._create_unverified_context()  # noqa: S323 - the user asked for it
        else:
            context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"))
    bare, credentials = without_userinfo(uri)  # user:password@ goes in a header, as MLflow sends it
    headers = {}
    if credentials:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
    try:
        request = urllib.request.Request(bare.rstrip("/") + "/health", headers=headers)
        with urllib.request.urlopen(request, timeout=timeout, context=context):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 404:  # 404: whatever answers there has no MLflow /health
            raise TrackingError(f"MLflow tracking server {mask_url(uri)} answers HTTP {exc.code} on /health "
                                "(is an MLflow server running there? see `make server`)") from None
    except (urllib.error.URLError, OSError, socket.timeout, ValueError) as exc:
        reason = redact(str(getattr(exc, "reason", exc))[:120], uri)
        raise TrackingError(f"MLflow tracking server {mask_url(uri)} is not reachable ({reason}); "
                            "start it with `make server` or unset MLFLOW_TRACKING_URI") from None


DATABASE_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433}


def database_unreachable(url: str, timeout: float) -> str | None:
    """Why the database server of an SQLAlchemy URL (PostgreSQL, MySQL, SQL Server) cannot be
    used, found with one connection attempt of at most ``timeout`` seconds (secrets masked), or
    None when it can be. Other URLs (sqlite, journal files, http) are not probed: None."""
    dialect = url.partition("://")[0].split("+")[0].lower()
    if dialect not in DATABASE_PORTS or "://" not in url:
        return None
    try:
        parts = urllib.parse.urlsplit(without_userinfo(url)[0])
        address = (parts.hostname, parts.port or DATABASE_PORTS[dialect])
    except ValueError as exc:  # a port that is not a number
        return redact(str(exc), url)
    if address[0]:  # no host: a local socket, left to the driver
        try:
            socket.create_connection(address, timeout=timeout).close()
        except OSError as exc:
            return redact(f"{address[0]}:{address[1]}: {exc.strerror or exc}", url)
    import sqlalchemy

    args = {"connect_timeout": max(1, round(timeout))} if dialect != "mssql" else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - driver missing, authentication, unknown database ...
        return redact(error_line(exc), url)
    return None


def ui_base() -> str:
    """Where this store's MLflow UI answers: the tracking server itself, else what `make ui`
    serves (127.0.0.1 on ``$MLFLOW_PORT``, default 5000)."""
    uri = tracking_uri()
    if uri.lower().startswith(("http://", "https://")):
        return uri.rstrip("/")
    return f"http://127.0.0.1:{os.environ.get('MLFLOW_PORT') or 5000}"


def runs_url(experiment_id: str) -> str:
    """The experiment's training-runs view (MLflow 3.17 may otherwise open its GenAI overview)."""
    return f"{ui_base()}/#/experiments/{experiment_id}/runs"


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def experiment_id(name: str) -> str:
    import mlflow

    for noisy in ("alembic", "mlflow.store.db.utils"):  # "Creating initial MLflow database tables..."
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else client.create_experiment(name)
        client.set_experiment_tag(exp_id, "mlflow.experimentKind", "custom_model_development")
    except Exception as exc:  # noqa: BLE001 - any store failure becomes one clear line
        raise TrackingError(f"MLflow store {mask_url(uri)} is not usable: {redact(first_line(exc), uri)}") from None
    return exp_id
