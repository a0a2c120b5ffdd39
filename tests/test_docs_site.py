"""The README and docs/ as a reader meets them: `make docs` builds the site offline with no broken
link or anchor, and every `make` target, `python -m` module, repository path, params key and test
named in them still exists (a rename that forgets the docs fails here)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pydantic

from pipelines.core.config import Params
from tests.conftest import ROOT, venv_env

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
INDENTED = re.compile(r"(?:^ {4}.*\n?)+", re.M)  # indented code blocks
PATH = re.compile(r"(?<![\w/.-])((?:pipelines|stages|tests|bench|examples|docs|\.ci)/[\w./-]*[\w/])")
SECTIONS = [name for name in Params.model_fields if name != "seed"]
KEY = re.compile(rf"^((?:{'|'.join(SECTIONS)})\.[a-z_][a-z0-9_.]*)(?:=.*)?$")


def _code(text: str) -> list[str]:
    """What a page shows as code: fenced blocks, indented blocks and inline spans."""
    blocks = FENCE.findall(text)
    rest = FENCE.sub("", text)
    blocks += INDENTED.findall(rest)
    return blocks + SPAN.findall(INDENTED.sub("", rest))


def _shown(pattern: re.Pattern[str], group: int = 1) -> dict[str, set[str]]:
    """``{match: pages}`` of ``pattern`` in the code of every page."""
    found: dict[str, set[str]] = {}
    for page in PAGES:
        for code in _code(page.read_text()):
            for match in pattern.finditer(code):
                found.setdefault(match.group(group), set()).add(page.name)
    return found


def _build(project: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "--site-dir", str(out)],
                          cwd=project, env=venv_env(), capture_output=True, text=True, timeout=120)


def test_docs_build_offline_with_every_link_and_anchor_resolved(tmp_path):
    proc = _build(ROOT, tmp_path / "site")
    assert proc.returncode == 0 and "WARNING" not in proc.stderr, proc.stderr[-3000:]
    built = {p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("*.html")}
    assert {"index.html", "results.html", "deploy.html", "search.html", "tracking.html", "many-machines.html",
            "troubleshooting.html", "extending.html", "own-model.html"} <= built
    home = (tmp_path / "site" / "index.html").read_text()
    assert 'id="compress-your-own-model"' in home and 'href="results.html"' in home  # README, docs/ links mapped
    assert "https://" not in "".join(re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', home))  # nothing from a CDN


def test_a_broken_link_or_anchor_fails_the_build(tmp_path):
    """The check above can fail: the same project with one dead link and one dead anchor does not build."""
    project = tmp_path / "p"
    shutil.copytree(ROOT / "docs", project / "docs")
    shutil.copytree(ROOT / ".ci", project / ".ci")
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    page = project / "docs" / "search.md"
    page.write_text(page.read_text() + "\nSee [gone](no-such-page.md) and [there](results.md#no-such-heading).\n")
    proc = _build(project, tmp_path / "site")
    assert proc.returncode != 0
    assert "no-such-page.md" in proc.stderr and "no-such-heading" in proc.stderr, proc.stderr[-3000:]


def test_readme_links_only_to_pages_that_exist():
    """On GitHub and in an editor the README's links are paths from the repository root; the site
    maps `docs/<page>.md` (see .ci/docs_hooks.py), so those are the only relative links it may hold."""
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    relative = [link for link in links if "://" not in link]
    assert relative, "the README links to the docs"
    for link in relative:
        assert link.startswith("docs/") and (ROOT / link).is_file(), link
    assert "BAR_RESULTS" not in "".join(page.read_text() for page in PAGES)


def test_readme_stays_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 220, len(lines)
    assert "## Compress your own model" in lines


def _make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))


def test_every_make_target_named_exists():
    named = _shown(re.compile(r"\bmake ([a-z][a-z-]*)"))
    assert {"repro", "test", "docs"} <= set(named)
    missing = {target: pages for target, pages in named.items() if target not in _make_targets()}
    assert not missing, f"make targets the Makefile lacks: {missing}"


def test_every_module_and_path_named_exists():
    modules = _shown(re.compile(r"python -m ([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?![\w.<])"))
    assert "stages.promote" in modules or "examples.digits_folder" in modules
    missing = {m: p for m, p in modules.items() if m != "pytest" and importlib.util.find_spec(m) is None}
    paths = _shown(PATH)
    missing |= {path: pages for path, pages in paths.items() if not (ROOT / path).exists()}
    assert not missing, f"named in the docs, absent from the repository: {missing}"


def _key_exists(dotted: str) -> bool:
    """Whether ``dotted`` (``section.key[.sub...]``) is a key of the params schema (anything goes
    below a free-form mapping such as ``benchmark.inductor`` or ``search.space``)."""
    model: type[pydantic.BaseModel] | None = Params
    for part in dotted.split("."):
        if model is None:
            return True  # below a mapping: its keys are the user's
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel) else None
    return True


def test_every_params_key_named_exists():
    keys = {}
    for page in PAGES:
        for code in _code(page.read_text()):
            for token in re.split(r"[\s'\"(),\[\]{}]+", code):
                match = KEY.match(token.strip("`:;"))
                if match:
                    keys.setdefault(match.group(1).rstrip("."), set()).add(page.name)
    assert {"quantize.method", "prune.amount", "benchmark.runtimes"} <= set(keys)
    missing = {key: pages for key, pages in keys.items() if not _key_exists(key)}
    assert not missing, f"params keys the schema lacks: {missing}"


def test_every_test_named_exists():
    named = _shown(re.compile(r"^(test_[a-z0-9]+(?:_[a-z0-9]+){2,})$", re.M))  # a span that is a test's name
    defined = set(re.findall(r"^def (test_\w+)", "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py")),
                             re.M))
    names = {n: p for n, p in named.items() if not (ROOT / "tests" / f"{n}.py").exists()}  # files: checked above
    assert names, "the docs name the tests to copy"
    missing = {name: pages for name, pages in names.items() if name not in defined}
    assert not missing, f"tests named in the docs that do not exist: {missing}"



def test_every_markdown_file_the_code_points_to_exists():
    """Docstrings and comments send readers to pages: those pages exist (no DESIGN.md that is
    not in the repository)."""
    named: dict[str, set[str]] = {}
    for folder in ("pipelines", "stages", "examples", "bench"):
        for source in (ROOT / folder).rglob("*.py"):
            # documentation pages: docs/<page>.md and the upper-case ones (README.md, DESIGN.md), not
            # the run's own outputs (summary.md)
            for page in re.findall(r"(?<![\w/.-])((?:docs/[\w/.-]+|[A-Z][A-Z_]+)\.md)\b", source.read_text()):
                named.setdefault(page, set()).add(str(source.relative_to(ROOT)))
    assert named, "the code points readers to the README and the docs"
    missing = {page: files for page, files in named.items() if not (ROOT / page).is_file()}
    assert not missing, f"pages the code points to that do not exist: {missing}"
