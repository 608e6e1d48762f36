"""The README stays one document: each section once, and every file it points at exists."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def markdown_headings(text: str) -> list[str]:
    """Heading lines outside fenced code blocks (a shell comment in a block is not a heading)."""
    headings, in_code = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            headings.append(line)
    return headings


def test_every_section_heading_appears_once():
    headings = markdown_headings(README)
    repeated = [heading for heading, count in Counter(headings).items() if count > 1]
    assert repeated == []
    assert headings[:2] == ["# avfix", "## Status"]


def test_every_paragraph_appears_once():
    # A botched edit once pasted whole sections again further down; headings alone would miss a
    # pasted paragraph.
    paragraphs = [p.strip() for p in README.split("\n\n") if len(p.strip()) > 200]
    repeated = [p[:80] for p, count in Counter(paragraphs).items() if count > 1]
    assert repeated == []


def test_referenced_source_files_exist():
    referenced = set(re.findall(r"\b((?:benchmarks|pipeline|models|stores|examples|docs)/[\w./-]+\.(?:py|ipynb|png))", README))
    assert "benchmarks/extract.py" in referenced
    missing = sorted(path for path in referenced if not (ROOT / path).exists())
    assert missing == []


def test_the_stores_section_is_the_declared_schema():
    from stores.schema import readme_section

    section = README[README.index("## Stores\n") : README.index("\n## ", README.index("## Stores\n") + 1)]
    assert readme_section() in section
