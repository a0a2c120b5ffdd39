"""Filesystem helpers: project root and atomic writes (temp file in the same folder + rename),
so a killed stage never leaves a half-written file where a reader would take it for real."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def project_root() -> Path:
    """Where stores live: ``DVC_ROOT`` when DVC runs us (also in ``exp run --temp`` copies),
    else the current directory."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def cache_dir() -> Path:
    """This machine's decision caches (what was measured once and holds until the machine or the
    library changes, like Inductor's cache in ``/tmp/torchinductor_<user>``): ``$COMPRESSION_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/compression-lab`` (``~/.cache/compression-lab``). Per machine and user,
    not per checkout: every clone, worktree and DVC experiment on the machine takes the same
    decision (a fresh clone used to measure it again, ~25 s of ``make repro``, and could ship
    another engine on a close call). Delete a file there to measure again."""
    if explicit := os.environ.get("COMPRESSION_CACHE_DIR"):
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "compression-lab"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path`` atomically. The file gets the mode a
    plain ``open(path, "w")`` would give it (mkstemp's private 0600 would hide outputs from the
    team that shares a checkout or serves the models)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (names one checkpoint across stages, runs and stores)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
def write_dir(path: str | Path, fill: Callable[[Path], list[Path]]) -> list[Path]:
    """Call ``fill(tmp_dir)`` (it writes files there and returns them), then put that folder in
    the place of ``path`` as a whole: a reader finds the old folder complete, none for an instant,
    or the new one, never a mix. Returns the files at their final paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = staging.with_suffix(".old")
    try:
        files = fill(staging)
        os.chmod(staging, 0o777 & ~_umask())
        if path.exists():
            os.replace(path, old)
        os.replace(staging, path)
    except BaseException:
        if old.exists() and not path.exists():
            os.replace(old, path)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return [path / Path(f).relative_to(staging) for f in files]


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    import csv
    import io

    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
