"""Apply a search result to ``params.yaml``: every dotted key of ``best_params.yaml`` is written
into its section, keeping the file's comments, order and layout (ruamel.yaml round trip).

The result is validated by the schema before anything is written, and written atomically, so a
bad ``best_params.yaml`` leaves ``params.yaml`` untouched. A trial that does not improve on the
current configuration's own trial (same study and context) within the 95% intervals, i.e. is not
at least as good on every objective and better on one (:mod:`pipelines.core.decision`), is
refused unless ``force``, which says what is lost.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.core.config import load_params, parse_yaml, read_yaml, validate
from pipelines.core.errors import ParamsError, UserError
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
    """ruamel configured as DVC's own `dvc exp run -S` writer (``dvc.utils.serialize._yaml``), so
    promote and -S leave the same text: block lists at the key's indent, ``key:`` for null."""
    from ruamel.yaml import YAML

    rt = YAML()
    rt.default_flow_style = False
    rt.preserve_quotes = True
    return rt


class DominatedError(UserError):
    """The trial to promote does not improve on the current configuration's trial within the 95%
    intervals (:func:`pipelines.core.decision.replaces`): no better on any objective, or worse on one."""


def promote(best_path: str | Path = BEST_PARAMS, params_path: str | Path = "params.yaml",
            dry_run: bool = False, force: bool = False,
            say: Callable[[str], None] = lambda line: None) -> dict[str, tuple[Any, Any]]:
    """Write ``best_path``'s values into ``params_path``; returns ``{key: (old, new)}`` for the
    keys whose value changed. Raises :class:`ParamsError` (nothing written) when the result would
    not validate, :class:`DominatedError` when the trial to promote does not improve on the
    current configuration's trial (unless ``force``). ``say`` gets the notes (what ``force`` loses, a check
    that could not be made)."""
    from pipelines.search import compare_to_current

    best = read_best(best_path)
    params_path = Path(params_path)
    if not params_path.exists():
        raise ParamsError(f"{params_path}: file not found")
    current = load_params(params_path)  # refuses what a stage would refuse (not UTF-8, empty, ...)
    text = params_path.read_text()
    promoted = current.with_overrides(best)  # every key and value must pass the schema (names the bad key)
    if promoted != current:
        comparison = compare_to_current(current, best)
        if comparison.refused and not force:
            raise DominatedError(f"{best_path}: {comparison.refusal()}")
        if comparison.refused:
            say(comparison.loss())
        elif comparison.comparable:
            say(comparison.gain())
        elif comparison.note():
            say(comparison.note())

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
    validate(parse_yaml(new_text, str(params_path)))  # what we write is what the stages will read
    write_text(params_path, new_text)
    return changes
