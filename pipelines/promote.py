"""Apply a search result to ``params.yaml``: every dotted key of ``best_params.yaml`` is written
into its section, keeping the file's comments, order and layout (ruamel.yaml round trip).

The result is validated by the schema before anything is written, and written atomically, so a
bad ``best_params.yaml`` leaves ``params.yaml`` untouched.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.errors import ParamsError
from pipelines.core.config import read_yaml, validate
from pipelines.core.io import write_text

BEST_PARAMS = Path("reports/search/best_params.yaml")


def read_best(path: str | Path) -> dict[str, Any]:
    best = read_yaml(path, "not found (run `make search` first; it is written when a trial is feasible)")
    if not isinstance(best, dict) or not best:
        raise ParamsError(f"{path}: expected a mapping of dotted params keys (e.g. prune.amount: 0.3)")
    for key in best:
        if not isinstance(key, str) or "." not in key:
            raise ParamsError(f"{path}: {key!r} is not a dotted params key (section.field)")
    return best


def _round_trip():
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))  # keep `null`
    return rt


def promote(best_path: str | Path = BEST_PARAMS, params_path: str | Path = "params.yaml",
            dry_run: bool = False) -> dict[str, tuple[Any, Any]]:
    """Write ``best_path``'s values into ``params_path``; returns ``{key: (old, new)}`` for the
    keys whose value changed. Raises :class:`ParamsError` (nothing written) when the result would
    not validate."""
    best = read_best(best_path)
    params_path = Path(params_path)
    if not params_path.exists():
        raise ParamsError(f"{params_path}: file not found")
    text = params_path.read_text()
    current = validate(yaml.safe_load(text))
    current.with_overrides(best)  # every key and value must pass the schema (names the bad key)

    rt = _round_trip()
    doc = rt.load(text)
    changes: dict[str, tuple[Any, Any]] = {}
    for key, value in best.items():
        section, _, name = key.partition(".")
        block = doc.get(section)
        if block is None:
            from ruamel.yaml.comments import CommentedMap

            block = doc[section] = CommentedMap()
        old = block.get(name) if hasattr(block, "get") else None
        if old != value or name not in block:
            changes[key] = (getattr(current, section).model_dump().get(name), value)
            block[name] = value
    if not changes or dry_run:
        return changes
    buffer = io.StringIO()
    rt.dump(doc, buffer)
    new_text = buffer.getvalue()
    validate(yaml.safe_load(new_text))  # what we write is what the stages will read
    write_text(params_path, new_text)
    return changes
