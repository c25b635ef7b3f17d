"""Which files an ingest reads: text files under the paths given, as git would see them
(``.gitignore`` respected, hidden files and directories left out), binary and oversized
files skipped with a note."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .. import units

MAX_FILE_BYTES = 4 << 20  # larger files are data or generated, not notes
MARKDOWN = frozenset({".md", ".markdown", ".mdown", ".mkd"})
TEXT = MARKDOWN | frozenset({
    ".txt", ".text", ".rst", ".org", ".adoc",
    ".py", ".pyi", ".js", ".jsx", ".ts", ".tsx", ".go", ".rs", ".java", ".kt", ".c", ".h",
    ".cc", ".cpp", ".hpp", ".cs", ".rb", ".php", ".swift", ".scala", ".sh", ".bash", ".zsh",
    ".fish", ".sql", ".lua", ".pl", ".r", ".jl", ".ex", ".exs", ".hs", ".ml", ".clj",
    ".toml", ".yaml", ".yml", ".ini", ".cfg", ".tex", ".css", ".scss", ".html", ".vue",
})


@dataclass(frozen=True)
class Skipped:
    """A file left out, and why (shown as a note)."""

    path: str
    reason: str


@dataclass(frozen=True)
class Found:
    """A text file to ingest: its absolute path, bytes and decoded text."""

    path: str
    data: bytes
    text: str

    @property
    def markdown(self) -> bool:
        return Path(self.path).suffix.lower() in MARKDOWN


def walk(paths: Iterable[str | Path]) -> Iterator[Found | Skipped]:
    """Every text file under ``paths`` (files named directly are read whatever their name)."""
    for given in paths:
        path = Path(given).expanduser().absolute()
        if path.is_dir():
            yield from _directory(path, [])
        elif path.is_file():
            yield _read(path)
        else:
            yield Skipped(str(path), "not found")


def _directory(directory: Path, rules: list["_Rules"]) -> Iterator[Found | Skipped]:
    rules = rules + [_Rules.read(directory)]
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        yield Skipped(str(directory), f"cannot be read ({exc.strerror})")
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue  # hidden, like .git: never notes
        is_dir = entry.is_dir(follow_symlinks=False)
        if any(r.ignores(Path(entry.path), is_dir) for r in rules):
            continue
        if is_dir:
            yield from _directory(Path(entry.path), rules)
        elif entry.is_file(follow_symlinks=False) and \
                Path(entry.name).suffix.lower() in TEXT:
            yield _read(Path(entry.path))


def _read(path: Path) -> Found | Skipped:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return Skipped(str(path), f"larger than {units.size(MAX_FILE_BYTES)}")
        data = path.read_bytes()
    except OSError as exc:
        return Skipped(str(path), f"cannot be read ({exc.strerror})")
    if b"\0" in data[:8192]:
        return Skipped(str(path), "binary")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return Skipped(str(path), "not UTF-8 text")
    return Found(str(path), data, text.replace("\r\n", "\n"))


class _Rules:
    """One directory's .gitignore: the common subset of git's rules (globs, ``**``,
    anchored patterns, directory-only patterns, ``!`` negation)."""

    def __init__(self, base: Path, patterns: list[tuple[str, bool, bool, bool]]):
        self.base = base
        self.patterns = patterns  # (glob, negated, directory only, anchored)

    @classmethod
    def read(cls, directory: Path) -> "_Rules":
        patterns = []
        try:
            lines = (directory / ".gitignore").read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        for line in lines:
            line = line.rstrip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            line = line[1:] if negated else line
            only_dirs = line.endswith("/")
            line = line.rstrip("/")
            anchored = "/" in line
            patterns.append((line.lstrip("/"), negated, only_dirs, anchored))
        return cls(directory, patterns)

    def ignores(self, path: Path, is_dir: bool) -> bool:
        try:
            relative = path.relative_to(self.base).as_posix()
        except ValueError:
            return False
        ignored = False
        for glob, negated, only_dirs, anchored in self.patterns:
            if only_dirs and not is_dir:
                continue
            target = relative if anchored else path.name
            if fnmatch.fnmatchcase(target, glob) or (
                    "**/" in glob and fnmatch.fnmatchcase(target, glob.replace("**/", ""))):
                ignored = not negated
        return ignored
