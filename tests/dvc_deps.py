"""Each DVC stage's code dependencies, derived from its imports.

A stage ``<name>`` runs ``python -m stages.<name>``; every module of ``pipelines`` it imports,
directly or not (grimp's import graph, function-level imports included), is code that decides
its outputs, so ``dvc.yaml`` must list that file as a dependency or ``dvc repro`` keeps stale
results after it changes. ``tests/test_layers.py`` checks that dvc.yaml lists exactly these;

    .venv/bin/python tests/dvc_deps.py          # show what differs
    .venv/bin/python tests/dvc_deps.py --write  # rewrite dvc.yaml's code deps and params (comments kept)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_PREFIXES = ("pipelines/", "stages/")


def module_file(module: str) -> str:
    """``pipelines.core.io`` -> ``pipelines/core/io.py`` (a package -> its ``__init__.py``)."""
    path = ROOT / Path(*module.split("."))
    rel = (path / "__init__.py") if path.is_dir() else path.with_suffix(".py")
    return rel.relative_to(ROOT).as_posix()


def code_deps(stage: str) -> list[str]:
    """Every source file ``stages/<stage>.py`` imports, itself and the packages' ``__init__``s included."""
    import grimp

    graph = grimp.build_graph("pipelines", "stages", include_external_packages=False, cache_dir=None)
    entry = f"stages.{stage}"
    modules = graph.find_upstream_modules(entry) | {entry}
    parents = {".".join(m.split(".")[:i]) for m in modules for i in range(1, m.count(".") + 1)}
    files = {module_file(m) for m in modules | parents}
    return sorted(f for f in files if (ROOT / f).exists() and f != "stages/__init__.py")


def dvc_stages(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict:
    import yaml

    return yaml.safe_load(dvc_yaml.read_text())["stages"]


def declared_code_deps(stage: dict) -> list[str]:
    return sorted(d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith(CODE_PREFIXES))


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
    args = parser.parse_args()
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
