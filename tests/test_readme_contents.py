"""README.md's contents line links every section heading, in order (GitHub's heading anchors)."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation but '-' and '_' dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_contents_line_links_every_section_heading_in_order():
    text = README.read_text(encoding="utf-8")
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)  # (a '## ' inside a code block is no heading)
    headings = re.findall(r"^## (.+)$", prose, flags=re.M)
    contents = re.search(r"^Contents: (.*?)\n\n", text, flags=re.M | re.S)
    assert contents, "README.md has no 'Contents: ' paragraph"
    links = re.findall(r"\[[^\]]+\]\(#([^)]+)\)", contents.group(1))
    assert links == [github_anchor(h) for h in headings]
