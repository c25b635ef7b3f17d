"""Files split into sections at their structure. Markdown at its headings, each section
carrying its heading path ("Runbook > Database > Failover") into its text, and so into its
embedding; long sections, and other text files, at blank lines between paragraphs, lists
and whole code fences, grouped up to about one model window each."""

from __future__ import annotations

import re
from dataclasses import dataclass

SECTION_CHARS = 1200  # about one window of all-MiniLM-L6-v2; longer blocks become passages
HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})")


@dataclass(frozen=True)
class Section:
    """One record's worth of a file: its heading path, its lines' text, and their span."""

    heading: tuple[str, ...]
    body: str
    line_start: int  # from 1
    line_end: int

    @property
    def prefix(self) -> str:
        return f"{' > '.join(self.heading)}\n\n" if self.heading else ""

    @property
    def text(self) -> str:
        return self.prefix + self.body


def sections(text: str, markdown: bool) -> list[Section]:
    """The file's sections, in order; blank ones left out."""
    lines = text.split("\n")
    found: list[Section] = []
    for heading, start, end in (_headed(lines) if markdown else [((), 0, len(lines))]):
        for a, b in _blocks(lines, start, end):
            body = "\n".join(lines[a:b]).strip("\n")
            if body.strip():
                first = a + next(i for i, line in enumerate(lines[a:b]) if line.strip())
                found.append(Section(heading, body, first + 1, first + body.count("\n") + 1))
    return found


def _headed(lines: list[str]) -> list[tuple[tuple[str, ...], int, int]]:
    """(heading path, first body line, end) for the text under each heading (0-based)."""
    parts: list[tuple[tuple[str, ...], int, int]] = []
    path: list[tuple[int, str]] = []
    start, fence = 0, None
    for n, line in enumerate(lines):
        fence = _fence_state(line, fence)
        match = HEADING.match(line) if fence is None and not FENCE.match(line) else None
        if match:
            parts.append((tuple(t for _, t in path), start, n))
            level = len(match.group(1))
            path = [(lv, t) for lv, t in path if lv < level] + [(level, match.group(2))]
            start = n + 1
    parts.append((tuple(t for _, t in path), start, len(lines)))
    return parts


def _blocks(lines: list[str], start: int, end: int) -> list[tuple[int, int]]:
    """Line ranges within [start, end) of at most about SECTION_CHARS, cut only at blank
    lines outside code fences (a fence longer than that stays whole)."""
    cuts, fence = [start], None
    for n in range(start, end):
        fence = _fence_state(lines[n], fence)
        if fence is None and not lines[n].strip():
            cuts.append(n)
    cuts.append(end)
    ranges: list[tuple[int, int]] = []
    a = start
    size = 0
    for prev, cut in zip(cuts, cuts[1:]):
        block = sum(len(line) + 1 for line in lines[prev:cut])
        if size and size + block > SECTION_CHARS:
            ranges.append((a, prev))
            a, size = prev, 0
        size += block
    ranges.append((a, end))
    return ranges


def _fence_state(line: str, fence: str | None) -> str | None:
    """The open fence's marker after ``line`` (None: outside any fence)."""
    match = FENCE.match(line)
    if not match:
        return fence
    marker = match.group(1)
    if fence is None:
        return marker
    return None if marker[0] == fence[0] and len(marker) >= len(fence) else fence
