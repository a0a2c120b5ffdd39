"""The one family of user errors and the one way to turn an exception into a line.

A :class:`UserError` is something the user can fix (a params key, a data file, a checkpoint, a
tracking URI). Its message is already one line that says what and where; ``stage.main`` prints
it as ``<stage>: error: <message>`` and exits 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

ERROR_LINE_LIMIT = 200  # characters of an exception's first line quoted in a message


class UserError(Exception):
    """A user error, already phrased as one line."""


class ParamsError(UserError, ValueError):
    """A user error in params.yaml (or a file or variable standing in for it)."""


class DataError(UserError, RuntimeError):
    """The dataset cannot be loaded as configured."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used, with the file named."""


class TrackingError(UserError, RuntimeError):
    """The tracking store cannot be reached or used; names the URI."""


class ModelError(UserError, RuntimeError):
    """A model that cannot be built or given its weights as configured (names the arch/weights key)."""


class QuantizeError(UserError, RuntimeError):
    """A model this quantize config cannot handle (e.g. not exportable for PT2E); names the key."""


class TrainingError(UserError, RuntimeError):
    """Training cannot go on with these settings (e.g. the loss diverged: lower the learning rate)."""


def first_line(exc: BaseException, limit: int = ERROR_LINE_LIMIT) -> str:
    """The first non-empty line of ``exc``'s message, cut to ``limit`` characters ('' if none)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0][:limit] if lines else ""


def error_line(exc: BaseException, limit: int = ERROR_LINE_LIMIT) -> str:
    """``Type: first line of the message`` (just ``Type`` for an empty message)."""
    text = first_line(exc, limit)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
