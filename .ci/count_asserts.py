#!/usr/bin/env python3
"""Count the checks the test suite makes, per file, from the source (AST): ``assert`` statements
and ``pytest.raises`` / ``pytest.fail`` calls (``raises`` as a context manager or a call). Test
functions are counted too, parametrized cases as one.

    .ci/count_asserts.py                 # the working tree
    .ci/count_asserts.py --rev main      # a commit, read through git (compare before/after)
    .ci/count_asserts.py --rev main --against HEAD   # both, side by side, with the difference

A static count, not a coverage measure: a helper's assert counts once however many tests call it.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK_CALLS = {"raises", "fail"}  # pytest.raises(...), pytest.fail(...)


def count(source: str) -> tuple[int, int, int]:
    """(asserts, pytest.raises/fail calls, test functions) in one file's source."""
    tree = ast.parse(source)
    asserts = calls = tests = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            asserts += 1
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CHECK_CALLS
              and isinstance(node.func.value, ast.Name) and node.func.value.id == "pytest"):
            calls += 1
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_"):
            tests += 1
    return asserts, calls, tests


def sources(rev: str | None) -> dict[str, str]:
    """``tests/**/*.py`` of the working tree, or of ``rev`` (through ``git show``)."""
    if rev is None:
        return {str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "tests").rglob("*.py"))}
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "tests"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    return {name: subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, check=True, capture_output=True,
                                 text=True).stdout for name in names if name.endswith(".py")}


def table(rev: str | None) -> dict[str, tuple[int, int, int]]:
    return {name: count(text) for name, text in sources(rev).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="a git revision (default: the working tree)")
    parser.add_argument("--against", help="a second revision (or 'worktree') to compare with --rev")
    args = parser.parse_args()
    before = table(args.rev)
    if args.against is None:
        print(f"{'file':<34} {'asserts':>7} {'raises':>6} {'checks':>6} {'tests':>5}")
        for name, (a, r, t) in before.items():
            print(f"{name:<34} {a:>7} {r:>6} {a + r:>6} {t:>5}")
        a, r, t = (sum(col) for col in zip(*before.values()))
        print(f"{'total':<34} {a:>7} {r:>6} {a + r:>6} {t:>5}")
        return 0
    after = table(None if args.against == "worktree" else args.against)
    print(f"{'file':<34} {'checks':>7} {'->':>2} {'checks':>6} {'tests':>6} {'->':>2} {'tests':>5}")
    for name in sorted({*before, *after}):
        b, a = before.get(name, (0, 0, 0)), after.get(name, (0, 0, 0))
        if b != a:
            print(f"{name:<34} {b[0] + b[1]:>7} -> {a[0] + a[1]:>6} {b[2]:>6} -> {a[2]:>5}")
    totals = [tuple(sum(col) for col in zip(*t.values())) for t in (before, after)]
    (ba, br, bt), (aa, ar, at) = totals
    print(f"{'total':<34} {ba + br:>7} -> {aa + ar:>6} {bt:>6} -> {at:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
