"""Reading texts to store: arguments, plain lines or JSON Lines, all validated up front.

Any problem rejects the whole batch with one line naming it (and the line number), so a
bad input never leaves half a batch stored.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Callable, Generic, Iterator, Sequence, TypeVar

from . import clock, controls
from .errors import InputError
from .records import LAYERS, NewRecord

JSONL_FIELDS = {"text", "layer", "tags", "project", "session", "kind", "importance",
                "created_at"}


def check_text(text: str, max_bytes: int, where: str = "text") -> str:
    """The text to store (surrounding whitespace removed), or an InputError saying why not."""
    if "\0" in text:
        raise InputError(f"{where}: contains a NUL byte")
    check_unicode(text, where)
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        raise InputError(f"{where}: {size} bytes is over the limit of {max_bytes} "
                         "(setting max_text_bytes)")
    text = text.strip()
    if not text:
        raise InputError(f"{where}: text is empty or only whitespace")
    return text


def check_unicode(value: Any, where: str) -> None:
    """Refuse a string (or any string inside a list or dict) holding a lone surrogate: bytes
    that were not UTF-8 (Python reads arguments with surrogateescape) or a JSON ``\\ud800``
    with no partner. Stored, it would make every export and --json listing fail."""
    if isinstance(value, str):
        if controls.has_surrogate(value):
            bad = next(ch for ch in value if controls.has_surrogate(ch))
            raise InputError(f"{where}: not valid Unicode (a lone surrogate "
                             f"{controls.escape_char(bad)}, or bytes that are not UTF-8)")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_unicode(key, f"{where}: a field name")
            check_unicode(item, f"{where}: field {key!r}")
    elif isinstance(value, list):
        for item in value:
            check_unicode(item, where)


def check_layer(layer: Any, where: str = "layer", *, param: bool = False) -> str:
    """``layer`` if it names one; ``param``: ``where`` is the library parameter's name."""
    if layer not in LAYERS:
        raise InputError(f"{where}: unknown layer {layer!r} (choose {', '.join(LAYERS)})",
                         param=where if param else None)
    return layer


def check_name(value: str | None, where: str) -> str | None:
    """A tag, project, session or kind: trimmed; given but blank is an error."""
    if value is not None and not value.strip():
        raise InputError(f"{where}: must not be empty")
    return None if value is None else value.strip()


def check_importance(value: Any, where: str = "importance") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InputError(f"{where}: importance must be a number from 0 to 1, got {value!r}")
    return float(value)


def from_args(texts: Sequence[str], template: NewRecord, max_bytes: int) -> list[NewRecord]:
    for name in ("layer", "tags", "project", "session", "kind", "created_at"):
        # the metadata too (library and MCP callers reach here without the CLI's checks)
        value = getattr(template, name)
        check_unicode(list(value) if isinstance(value, tuple) else value, name)
    where = "argument {}" if len(texts) > 1 else "text"
    return [replace(template, text=check_text(t, max_bytes, where.format(n)))
            for n, t in enumerate(texts, 1)]


def _lines(stream: IO[bytes], max_bytes: int) -> Iterator[tuple[int, str]]:
    """(line number, decoded line) without ever holding more than one over-long line."""
    number = 0
    while True:
        raw = stream.readline(max_bytes + 2)
        if not raw:
            return
        number += 1
        if len(raw) > max_bytes + 1 or (len(raw) == max_bytes + 1 and not raw.endswith(b"\n")):
            raise InputError(f"line {number}: over the limit of {max_bytes} bytes "
                             "(setting max_text_bytes)")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"line {number}: invalid UTF-8 at byte {exc.start}") from None
        yield number, line.rstrip("\r\n")


def from_lines(stream: IO[bytes], template: NewRecord, max_bytes: int) -> list[NewRecord]:
    """One record per non-empty line."""
    items = []
    for number, line in _lines(stream, max_bytes):
        if "\0" in line:
            raise InputError(f"line {number}: contains a NUL byte")
        if line.strip():
            items.append(replace(template, text=check_text(line, max_bytes, f"line {number}")))
    if not items:
        raise InputError("no text to store: the input is empty")
    return items


T = TypeVar("T")


class Validated(Generic[T]):
    """Input that passed validation, spooled to a private temporary file.

    Validation reads the whole stream first (so a bad line rejects everything before a
    single write), but keeps only a count in memory; iterating parses the spooled lines
    again, lazily, so a consumer that works in batches holds one batch at a time however
    long the input is. Iterating is repeatable; ``close`` deletes the spool.
    """

    def __init__(self, spool: IO[bytes], count: int, parse: Callable[[int, str], T | None],
                 max_bytes: int):
        self._spool, self._parse, self._max_bytes = spool, parse, max_bytes
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[T]:
        return (item for _, item in self.numbered())

    def numbered(self) -> Iterator[tuple[int, T]]:
        """(input line number, item): how messages name a line (magray/secrets.py)."""
        self._spool.seek(0)
        for number, line in _lines(self._spool, self._max_bytes):
            item = self._parse(number, line)
            if item is not None:
                yield number, item

    def close(self) -> None:
        self._spool.close()

    def __enter__(self) -> "Validated[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def validate(stream: IO[bytes], parse: Callable[[int, str], T | None], max_bytes: int,
             directory: Path | None = None) -> Validated[T]:
    """Check every line of ``stream`` with ``parse`` (which raises InputError naming the
    line, or returns None for a line to skip) and spool the input to an unnamed private
    file in ``directory``, which should be on disk, not a RAM-backed /tmp."""
    spool = tempfile.TemporaryFile(dir=directory)
    count = 0
    try:
        for number, line in _lines(stream, max_bytes):
            if parse(number, line) is not None:
                count += 1
            spool.write(line.encode("utf-8") + b"\n")  # every line: numbers stay the same
    except BaseException:
        spool.close()
        raise
    return Validated(spool, count, parse, max_bytes)


def stream_lines(stream: IO[bytes], template: NewRecord, max_bytes: int, *, jsonl: bool = False,
                 directory: Path | None = None) -> Validated[NewRecord]:
    """``from_lines``/``from_jsonl`` for inputs of any length: validated up front, then
    read back lazily (see ``Validated``)."""

    def parse(number: int, line: str) -> NewRecord | None:
        if not jsonl and "\0" in line:
            raise InputError(f"line {number}: contains a NUL byte")
        if not line.strip():
            return None
        if jsonl:
            return parse_object(line, number, template, max_bytes)
        return replace(template, text=check_text(line, max_bytes, f"line {number}"))

    validated = validate(stream, parse, max_bytes, directory)
    if not validated.count:
        validated.close()
        raise InputError("no text to store: the input is empty")
    return validated


def from_jsonl(stream: IO[bytes], template: NewRecord, max_bytes: int) -> list[NewRecord]:
    """One JSON object per non-empty line: ``text`` required, metadata optional."""
    items = []
    for number, line in _lines(stream, max_bytes):
        if line.strip():
            items.append(parse_object(line, number, template, max_bytes))
    if not items:
        raise InputError("no text to store: the input is empty")
    return items


def json_object(line: str, where: str) -> dict:
    """One JSON Lines line that must hold an object; InputError says where and why not."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise InputError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(data).__name__}")
    check_unicode(data, where)
    return data


def parse_object(line: str, number: int, template: NewRecord, max_bytes: int) -> NewRecord:
    where = f"line {number}"
    data = json_object(line, where)
    unknown = sorted(set(data) - JSONL_FIELDS)
    if unknown:
        raise InputError(f"{where}: unknown field {unknown[0]!r} "
                         f"(allowed: {', '.join(sorted(JSONL_FIELDS))})")
    if "text" not in data:
        raise InputError(f"{where}: missing field 'text'")
    if not isinstance(data["text"], str):
        raise InputError(f"{where}: 'text' must be a string, got {_json_type(data['text'])}")
    changes: dict[str, Any] = {"text": check_text(data["text"], max_bytes, where)}
    if "layer" in data:
        changes["layer"] = check_layer(data["layer"], f"{where}: layer")
    if "tags" in data:
        tags = data["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
            raise InputError(f"{where}: 'tags' must be a list of non-empty strings")
        changes["tags"] = tuple(sorted(set(template.tags) | {t.strip() for t in tags}))
    for key in ("project", "session", "kind"):
        if key in data and data[key] is not None:
            if not isinstance(data[key], str) or not data[key].strip():
                raise InputError(f"{where}: {key!r} must be a non-empty string")
            changes[key] = data[key].strip()
    if "importance" in data:
        changes["importance"] = check_importance(data["importance"], f"{where}")
    if "created_at" in data:
        changes["created_at"] = clock.iso(clock.parse_time(data["created_at"],
                                                           what=f"{where}: created_at"))
    return replace(template, **changes)


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)
