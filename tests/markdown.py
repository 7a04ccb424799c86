"""Reading the README and docs/ as GitHub renders them: sections, heading anchors, relative links.

Tests that check a manifest against its documentation (runbooks, the metrics table, the ACL
user) read the text through here, so a moved section fails loudly instead of matching nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from tests.servers import ROOT

DOCS = ROOT / "docs"
ALERTS_DOC = DOCS / "alerts.md"
CONFIGURATION_DOC = DOCS / "configuration.md"
LOCK_LIBRARIES_DOC = DOCS / "lock-libraries.md"

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_TARGET = r'\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)'  # (target "title")
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]" + _TARGET)
_IMAGE = re.compile(r"!\[[^\]]*\]" + _TARGET)
_REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (whose `#` and `[x](y)` are not markdown)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped but - and _, spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of each ATX heading outside code blocks, in order."""
    found = []
    for line in prose_lines(text):
        match = _HEADING.match(line)
        if match:
            found.append((len(match.group(1)), match.group(2)))
    return found


def anchors(path: Path) -> set[str]:
    """Every #anchor GitHub makes for `path`: a repeated heading gets -1, -2, ... appended."""
    seen: Counter[str] = Counter()
    result = set()
    for _, heading in headings(path.read_text()):
        base = slug(heading)
        result.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
        seen[base] += 1
    return result


def section(path: Path, title: str, level: int = 2) -> str:
    """The text under heading `title` of `level`, up to the next heading of that level or above."""
    text = path.read_text()
    marks = "#" * level
    match = re.search(
        rf"^{marks} {re.escape(title)}\n(.*?)(?=^#{{1,{level}}} |\Z)", text, re.S | re.M
    )
    assert match, f"{path.name} has no section '{marks} {title}'"
    return match.group(1)


def table(text: str) -> list[dict[str, str]]:
    """The first markdown table in `text`: one dict per row, keyed by the header cells."""
    rows = [line for line in prose_lines(text) if line.startswith("|")]
    assert len(rows) > 2, "no table"

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    header = cells(rows[0])
    return [dict(zip(header, cells(line), strict=True)) for line in rows[2:]]


def link_targets(text: str) -> list[str]:
    """The targets of inline and reference links outside code (blocks and spans)."""
    targets = []
    for line in prose_lines(text):
        line = _CODE_SPAN.sub("code", line)
        targets += [m.group(1) for m in _IMAGE.finditer(line)]
        line = _IMAGE.sub("image", line)  # an image as a link's text: the link counts too
        targets += [m.group(1) for m in _INLINE_LINK.finditer(line)]
        reference = _REFERENCE_LINK.match(line)
        if reference:
            targets.append(reference.group(1))
    return targets


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Relative links of `path` whose file does not exist or whose #anchor no heading makes."""
    broken = []
    for target in link_targets(path.read_text()):
        if _SCHEME.match(target):
            continue  # http(s), mailto: not checked offline
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.is_relative_to(root) or not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
            broken.append(f"{target}: no heading makes #{anchor}")
    return broken
