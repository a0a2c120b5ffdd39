"""Each DVC stage's code dependencies, derived from its imports.

A stage ``<name>`` runs ``python -m stages.<name>``; every module of ``pipelines`` it imports,
directly or not (grimp's import graph, function-level imports included), is code that decides
its outputs, so ``dvc.yaml`` must list that file as a dependency or ``dvc repro`` keeps stale
results after it changes. Importing a module runs its packages' ``__init__`` first, and what
those import (``pipelines/__init__.py`` installs ``pipelines.core.quiet`` in every stage), so they
count too. ``tests/test_layers.py`` checks that dvc.yaml lists exactly these;

    .venv/bin/python tests/dvc_deps.py             # show what differs
    .venv/bin/python tests/dvc_deps.py --write     # rewrite dvc.yaml's code deps and params (comments kept)
    .venv/bin/python tests/dvc_deps.py --affected  # per module, the stages an edit of it re-runs
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_PREFIXES = ("pipelines/", "stages/")


def module_file(module: str) -> str:
    """``pipelines.core.io`` -> ``pipelines/core/io.py`` (a package -> its ``__init__.py``)."""
    path = ROOT / Path(*module.split("."))
    rel = (path / "__init__.py") if path.is_dir() else path.with_suffix(".py")
    return rel.relative_to(ROOT).as_posix()


@functools.cache
def import_graph():
    import grimp

    return grimp.build_graph("pipelines", "stages", include_external_packages=False, cache_dir=None)


def parents(module: str) -> set[str]:
    """``pipelines.core.io`` -> ``{pipelines, pipelines.core}``: the packages importing it runs first."""
    return {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}


def imported_modules(entry: str) -> set[str]:
    """Every module running ``entry`` can execute: what it imports, directly or not, with the
    ``__init__`` of every package on the way (and what those import)."""
    graph = import_graph()
    modules: set[str] = set()
    todo = [entry]
    while todo:
        module = todo.pop()
        if module not in modules:
            modules.add(module)
            todo.extend(graph.find_modules_directly_imported_by(module) | parents(module))
    return modules


def code_deps(stage: str) -> list[str]:
    """Every source file ``stages/<stage>.py`` imports, itself and the packages' ``__init__``s included."""
    files = {module_file(m) for m in imported_modules(f"stages.{stage}")}
    # an empty file (stages/__init__.py) runs nothing, and DVC warns about empty deps on every run
    return sorted(f for f in files if (ROOT / f).exists() and (ROOT / f).stat().st_size)


def dvc_stages(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict:
    import yaml

    return yaml.safe_load(dvc_yaml.read_text())["stages"]


def declared_code_deps(stage: dict) -> list[str]:
    return sorted(d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith(CODE_PREFIXES))


def affected(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, list[str]]:
    """Every source file under ``pipelines/`` and ``stages/`` -> the stages whose ``dvc.yaml`` deps
    list it (what ``dvc repro`` re-runs after an edit of it; empty: none), in pipeline order."""
    users: dict[str, list[str]] = {f.relative_to(ROOT).as_posix(): [] for prefix in CODE_PREFIXES
                                   for f in sorted((ROOT / prefix).rglob("*.py"))}
    for name, stage in dvc_stages(dvc_yaml).items():
        for path in declared_code_deps(stage):
            users.setdefault(path, []).append(name)
    return users


def write(dvc_yaml: Path = ROOT / "dvc.yaml") -> None:
    """Rewrite each stage's code deps (from its imports) and params (``pipelines.stage.SECTIONS``)."""
    from ruamel.yaml import YAML

    from pipelines.stage import SECTIONS

    rt = YAML()
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    doc = rt.load(dvc_yaml.read_text())
    for name, stage in doc["stages"].items():
        others = [d for d in stage.get("deps", []) if not (isinstance(d, str) and d.startswith(CODE_PREFIXES))]
        stage["deps"] = code_deps(name) + others
        stage["params"] = list(SECTIONS[name])
    with dvc_yaml.open("w") as handle:
        rt.dump(doc, handle)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps")
    parser.add_argument("--affected", action="store_true",
                        help="print, for every module, the stages an edit of it re-runs (from dvc.yaml)")
    args = parser.parse_args()
    if args.affected:
        users = affected()
        width = max(map(len, users))
        for path, stages in users.items():
            print(f"{path:<{width}}  {' '.join(stages) or '-'}")
    if args.write:
        write()
    differs = 0
    for name, stage in dvc_stages().items():
        want, have = code_deps(name), declared_code_deps(stage)
        for path in sorted(set(want) - set(have)):
            print(f"{name}: missing {path}")
        for path in sorted(set(have) - set(want)):
            print(f"{name}: not imported {path}")
        differs += want != have
    return 1 if differs else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
