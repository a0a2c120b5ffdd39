"""One line per params error: the dotted key, what is wrong, why (a bound's reason), the value.

Kept apart from the schema (:mod:`pipelines.core.config`): this is how any pydantic validation
error of the params file is worded, whatever the sections are.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError


# keys that existed once: "unknown key" plus what to write instead
REMOVED_KEYS = {
    ("search", "distill_epochs"): "trials train with the pipeline's own distill.epochs (so what is promoted is "
                                  "what was measured); put distill.epochs in search.space to search it, and "
                                  "search.pruner to stop hopeless trials early",
    ("search", "finetune_epochs"): "trials train with the pipeline's own prune.finetune_epochs; put "
                                   "prune.finetune_epochs in search.space to search it",
}

SHOWN_MAX = 120  # characters of a bad value quoted in the message


def _plain(part: Any) -> bool:
    return isinstance(part, str) and part != "" and part.isprintable() and not any(c.isspace() for c in part)


def dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("search", "space", "prune.amount")`` -> ``search.space.prune.amount``; a key that is not a
    plain printable word (newline, space, empty) is quoted with repr() so the message stays one
    line and says exactly which key."""
    return ".".join(str(p) if _plain(p) or isinstance(p, int) else repr(p) for p in loc)


def _shown(value: Any) -> str:
    text = repr("{...}" if isinstance(value, dict) else value)
    return text if len(text) <= SHOWN_MAX else text[:SHOWN_MAX - 3] + "..."


def format_error(err: ValidationError, root: type[BaseModel]) -> str:
    """The first error of ``err`` as one line: dotted key, what is wrong (and why, for bounds), the value."""
    first = err.errors()[0]
    loc = dotted(first["loc"]) or "<root>"
    value = first.get("input")
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        removed = REMOVED_KEYS.get(tuple(first["loc"]))
        msg = f"unknown key (removed: {removed})" if removed else "unknown key"
    elif value is None and len(first["loc"]) == 1 and first["loc"][0] in root.model_fields \
            and first["type"] == "model_type":
        msg = f"section is empty; write its keys, or `{first['loc'][0]}: {{}}` (or no section) for the defaults"
    elif first["type"] == "literal_error":
        msg = f"unknown value; allowed: {first['ctx']['expected']}"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if not first["loc"] and first["type"] == "value_error":  # model-level check: it names its dotted key
        return msg
    why = _bound_reason(first, root)
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{loc}: {msg}{why} (got {_shown(value)}){more}"


_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_long"}


def _bound_reason(error: dict[str, Any], root: type[BaseModel]) -> str:
    """``; <why>`` from the description of the field an out-of-bounds error is about (list items
    take their list's), or ''."""
    if error["type"] not in _BOUND_ERRORS:
        return ""
    model: Any = root
    info = None
    for part in error["loc"]:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return ""
        info = model.model_fields[part]
        model = info.annotation
    return f"; {info.description}" if info is not None and info.description else ""


def non_string_key(raw: dict[Any, Any], where: tuple[Any, ...] = ()) -> str | None:
    """YAML keys such as ``1:`` or ``yes:`` load as int/bool; name them as written."""
    for key, value in raw.items():
        if not isinstance(key, str):
            return f"{dotted(where + (repr(key),))}: keys must be strings (got {key!r} of type {type(key).__name__})"
        if isinstance(value, dict):
            found = non_string_key(value, where + (key,))
            if found:
                return found
    return None


def one_line(message: str) -> str:
    return message.replace("\r", "\\r").replace("\n", "\\n")
