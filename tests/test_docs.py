"""The README and the docs/ pages: every relative link and picture, and every #anchor, resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "docker" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slugs(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", markdown), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def links(markdown: str) -> list[str]:
    prose = re.sub(r"`[^`\n]*`", "", FENCE.sub("", markdown))  # code shows links, it makes none
    return [t for t in LINK.findall(prose) if not re.match(r"[a-z]+:", t)]


def test_slugs_follow_github():
    headings = "# The ROS 2 node: `perception_node`\n## Speed and parity (measured)\n## A\n## A"
    assert slugs(headings) == {
        "the-ros-2-node-perception_node",
        "speed-and-parity-measured",
        "a",
        "a-1",
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(page):
    targets = links(page.read_text())
    assert targets or page != PAGES[0], "no links found in README.md: the pattern is broken"
    for target in targets:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: {target}: no such file"
        if anchor:
            assert anchor in slugs(file.read_text()), f"{page.name}: {target}: no such heading"
