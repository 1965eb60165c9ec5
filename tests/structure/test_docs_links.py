"""Every relative link in the repository's markdown resolves to a file or folder that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def markdown_files() -> list[Path]:
    """The project's own pages: hidden folders (.venv, .pytest_cache: tools' pages) and build output are not."""
    skip = {"site", "runs", "node_modules"}
    return sorted(p for p in ROOT.rglob("*.md")
                  if not any(part in skip or part.startswith(".") for part in p.relative_to(ROOT).parts))


def broken_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold no links
    bad = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # URLs and anchors within the page
        file = target.split("#")[0]
        if not (path.parent / file).exists():
            bad.append(target)
    return bad


def test_the_checker_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("")
    page.write_text("[ok](there.md) [url](https://x.org) [anchor](#a) [bad](missing/file.json)\n```\n[code](no.md)\n```")
    assert broken_links(page) == ["missing/file.json"]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert broken_links(path) == []
