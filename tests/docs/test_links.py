"""The README stays one screen per reader, and no link in the docs points nowhere.

Every relative link in README.md and docs/**/*.md must name an existing file (relative to the
page), and a ``#fragment`` must name a heading of the target page (GitHub's heading anchors).
"""

import re
from pathlib import Path

import pytest

from tests.docs.test_runnable_blocks import ROOT, doc_files

README_MAX_LINES = 220
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target><[^>]+>|[^)\s]+)(?:\s+\"[^\"]*\")?\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(?P<target>\S+)", re.MULTILINE)
FENCED = re.compile(r"^ *(`{3,}|~{3,}).*?^ *\1[`~]* *$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """`text` without fenced blocks and inline code (their brackets are not links)."""
    return INLINE_CODE.sub("", FENCED.sub("", text))


def links(path: Path) -> list[str]:
    """Every link target in `path`'s prose, inline and reference-style."""
    text = prose(path.read_text(encoding="utf-8"))
    found = [m["target"].strip("<>") for m in LINK.finditer(text)]
    return found + [m["target"] for m in REFERENCE.finditer(text)]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for `path`'s headings: lower case, punctuation dropped, spaces to '-',
    a repeated heading numbered ``-1``, ``-2``, ...
    """
    seen: dict[str, int] = {}
    result = set()
    for match in HEADING.finditer(FENCED.sub("", path.read_text(encoding="utf-8"))):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match["title"])  # a link's text only
        slug = re.sub(r"[^\w\- ]", "", title.lower().replace("`", "")).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def is_external(target: str) -> bool:
    """Whether `target` leaves the repository (a URL scheme or a mail address)."""
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) is not None


def test_readme_is_one_screen_per_reader() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail to docs/")


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file(page: Path) -> None:
    broken = []
    for target in links(page):
        if is_external(target):
            continue
        file_part, _, fragment = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        if not destination.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"{target} (no heading #{fragment} in {destination.name})")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_link_checks_find_links_and_anchors(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# The `fedcare` command\n## Set-up: two commands\n## Set-up: two commands\n"
                    "See [a](other.md#x), ![img](pic.png) and [web](https://example.org).\n"
                    "`[not](code.md)`\n```\n[nor](block.md)\n```\n[ref]: ref.md\n")
    assert links(page) == ["other.md#x", "pic.png", "https://example.org", "ref.md"]
    assert anchors(page) == {"the-fedcare-command", "set-up-two-commands",
                             "set-up-two-commands-1"}
    assert is_external("https://example.org") and not is_external("docs/privacy.md")
