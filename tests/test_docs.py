"""The README and docs/ link to each other: every relative link names a file that exists, and every #anchor a
heading of that file (GitHub's slugs), so moving a section cannot leave a dead link behind."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return "".join(part for i, part in enumerate(re.split(r"^```.*$", text, flags=re.M)) if i % 2 == 0)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", prose(path.read_text()), flags=re.M)}


def test_slugs_follow_github():
    assert slug("Semantics (CLIP-GS)") == "semantics-clip-gs"
    assert slug("The `clipgs` command") == "the-clipgs-command"
    assert slug("Earlier runs: fusion, keeping up, drift") == "earlier-runs-fusion-keeping-up-drift"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path):
    links = [m.group(1) for m in LINK.finditer(prose(doc.read_text()))]
    dead = []
    for link in links:
        if re.match(r"[a-z]+:", link):  # http(s), mailto: not checked here
            continue
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        if not path.exists():
            dead.append(f"{link}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            dead.append(f"{link}: no heading '#{anchor}' in {path.name}")
    assert not dead, f"{doc.name}: " + "; ".join(dead)


def test_docs_are_linked_from_the_readme():
    readme = ROOT.joinpath("README.md").read_text()
    for doc in DOCS[1:]:
        assert f"docs/{doc.name}" in readme, f"docs/{doc.name} is not linked from the README"
