"""MkDocs hook (mkdocs.yml `hooks:`): the README is the site's home page.

README.md links to the pages as `docs/<page>.md` and the pages link back to `../README.md`
(right on GitHub and in an editor); on the site the README becomes `index.md` beside the pages,
so those links become `<page>.md` and `index.md`."""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

DOCS_LINK = re.compile(r"\]\(docs/([^)]+)\)")
README_LINK = re.compile(r"\]\(\.\./README\.md")


def home_page(readme: str) -> str:
    """The README's text as the site's home page."""
    return DOCS_LINK.sub(r"](\1)", readme)


def on_files(files, config):
    readme = Path(config.config_file_path).parent / "README.md"
    files.append(File.generated(config, "index.md", content=home_page(readme.read_text())))
    return files


def on_page_markdown(markdown, page, config, files):
    return README_LINK.sub("](index.md", markdown)
