"""Export and import: every record as one JSON object per line, or a Markdown document.

A line holds the record's fields, always these keys in this order::

    id, text, layer, kind, tags, project, session, created_at, updated_at, last_access,
    access_count, importance, content_hash

and, with vectors, ``vector_model`` (the model key the vector was made with) and ``vector``
(base64 of the little-endian float32 embedding). An import takes a file's vectors as they
are when they come from the model this memory uses, and re-embeds the text otherwise.

Importing merges: a text already stored in the same layer is not stored again; the two
copies' metadata are joined (tags united, earliest creation, latest update and access,
highest access count and importance), which makes a repeated import change nothing.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterable

from . import clock, controls
from .errors import InputError
from .ingest import (Validated, check_importance, check_layer, check_text, json_object,
                     validate)
from .records import Record, content_hash

if TYPE_CHECKING:
    import numpy as np

FIELDS = tuple(f.name for f in fields(Record))
VECTOR_FIELDS = ("vector_model", "vector")
IGNORED_FIELDS = ("score", "similarity")  # `magray search --jsonl` output imports as is
FORMATS = ("jsonl", "markdown")


@dataclass(frozen=True)
class Entry:
    """One record on its way out of or into a memory, with its vector when it travels too.
    On import, ``record.id`` is 0 when the file named no id."""

    record: Record
    vector: "np.ndarray | None" = None
    vector_model: str | None = None


@dataclass(frozen=True)
class ImportReport:
    """What an import did: records added, merged into an existing one, left unchanged (already
    present with nothing new), how many texts had to be embedded (not taken from the file),
    and how many records had credentials redacted (setting secrets)."""

    added: int = 0
    merged: int = 0
    unchanged: int = 0
    embedded: int = 0
    redacted: int = 0

    def to_dict(self) -> dict:
        return {"added": self.added, "merged": self.merged, "unchanged": self.unchanged,
                "embedded": self.embedded, "redacted": self.redacted}


# -- writing ------------------------------------------------------------------------------

def to_json(entry: Entry) -> dict:
    """The JSON object for one record (key order is part of the format)."""
    data = entry.record.to_dict()
    if entry.vector is not None:
        data["vector_model"] = entry.vector_model
        data["vector"] = encode_vector(entry.vector)
    return data


def encode_vector(vector: "np.ndarray") -> str:
    import numpy as np

    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def write_jsonl(entries: Iterable[Entry], out: IO[str]) -> int:
    """Write one JSON line per record; returns how many. Control and format characters are
    written as \\uXXXX escapes: the same text to a JSON reader, inert on a terminal, and a
    lone surrogate stored by an older magray exports escaped instead of failing."""
    count = 0
    for entry in entries:
        out.write(controls.dumps(to_json(entry)) + "\n")
        count += 1
    return count


def write_markdown(entries: Iterable[Entry], out: IO[str]) -> int:
    """A readable document: a section per layer (entries must come layer by layer), a
    heading per record with its id and creation time, its metadata, its text quoted.
    Control and format characters are shown escaped (``\\x1b``): a document is for reading."""
    out.write("# magray export\n")
    layer, count = None, 0
    for entry in entries:
        record = entry.record
        if record.layer != layer:
            layer = record.layer
            out.write(f"\n## {layer}\n")
        out.write(f"\n### {record.id} · {record.created_at[:16].replace('T', ' ')} UTC\n\n")
        if details := _details(record):
            out.write(controls.visible(details) + "\n\n")
        text = controls.visible(record.text, keep="\n\t")
        out.write("\n".join(f"> {line}".rstrip() for line in text.split("\n")) + "\n")
        count += 1
    if not count:
        out.write("\nNo records.\n")
    return count


def _details(record: Record) -> str:
    parts = []
    if record.tags:
        parts.append("tags: " + ", ".join(f"`{tag}`" for tag in record.tags))
    parts += [f"{name}: {value}" for name, value in
              (("kind", record.kind), ("project", record.project), ("session", record.session))
              if value]
    if record.importance:
        parts.append(f"importance: {record.importance:g}")
    if record.access_count:
        parts.append(f"accessed {record.access_count}×, last {record.last_access[:16]}"
                     .replace("T", " "))
    return " · ".join(parts)


# -- reading ------------------------------------------------------------------------------

def read(stream: IO[bytes], max_text_bytes: int, directory: Path | None = None,
         default_layer: str = "assets") -> Validated[Entry]:
    """Validate a whole JSON Lines export (InputError naming the first bad line; nothing is
    kept in memory but a count) and return it, spooled, for reading back in batches. A
    line without a layer goes to ``default_layer``."""
    dims: dict[str, int] = {}

    def parse(number: int, line: str) -> Entry | None:
        if not line.strip():
            return None
        entry = parse_line(line, number, max_text_bytes, default_layer)
        if entry.vector is not None:
            known = dims.setdefault(entry.vector_model, len(entry.vector))
            if known != len(entry.vector):
                raise InputError(f"line {number}: a {len(entry.vector)}-dimensional vector, but "
                                 f"earlier {entry.vector_model} vectors have {known}")
        return entry

    # JSON may escape a character as \uXXXX: six bytes for one.
    line_limit = 6 * max_text_bytes + (1 << 20)
    validated = validate(stream, parse, line_limit, directory)
    if not validated.count:
        validated.close()
        raise InputError("nothing to import: the input is empty")
    return validated


def parse_line(line: str, number: int, max_text_bytes: int, default_layer: str = "assets"
               ) -> Entry:
    """One exported record, fully checked; InputError names the line and the field."""
    where = f"line {number}"
    data = json_object(line, where)
    allowed = set(FIELDS) | set(VECTOR_FIELDS) | set(IGNORED_FIELDS)
    if unknown := sorted(set(data) - allowed):
        raise InputError(f"{where}: unknown field {unknown[0]!r}")
    if not isinstance(data.get("text"), str):
        raise InputError(f"{where}: 'text' must be a string")
    text = data["text"]
    check_text(text, max_text_bytes, where)  # kept exactly as exported, spaces and all
    digest = content_hash(text)
    if data.get("content_hash") not in (None, digest):
        raise InputError(f"{where}: content_hash does not match the text")
    created = _time(data, "created_at", where) or clock.now_iso()
    record = Record(
        id=_record_id(data.get("id"), where),
        text=text,
        layer=check_layer(data.get("layer", default_layer), f"{where}: layer"),
        kind=_name(data, "kind", where),
        tags=_tags(data.get("tags", []), where),
        project=_name(data, "project", where),
        session=_name(data, "session", where),
        created_at=created,
        updated_at=_time(data, "updated_at", where) or created,
        last_access=_time(data, "last_access", where),
        access_count=_count(data.get("access_count", 0), where),
        importance=check_importance(data.get("importance", 0.0), where),
        content_hash=digest,
    )
    vector, model = _vector(data, where)
    return Entry(record, vector, model)


def _record_id(value: Any, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{where}: 'id' must be a positive integer")
    return value


def _name(data: dict, key: str, where: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: {key!r} must be a non-empty string or null")
    return value.strip()


def _tags(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
        raise InputError(f"{where}: 'tags' must be a list of non-empty strings")
    return tuple(sorted({t.strip() for t in value}))


def _time(data: dict, key: str, where: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    return clock.iso(clock.parse_time(value, what=f"{where}: {key}"))


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{where}: 'access_count' must be a non-negative integer")
    return value


def _vector(data: dict, where: str) -> tuple["np.ndarray | None", str | None]:
    if data.get("vector") is None:
        return None, None
    import numpy as np

    model = data.get("vector_model")
    if not isinstance(model, str) or not model:
        raise InputError(f"{where}: a 'vector' needs its 'vector_model'")
    if not isinstance(data["vector"], str):
        raise InputError(f"{where}: 'vector' must be base64 text")
    try:
        raw = base64.b64decode(data["vector"], validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{where}: 'vector' is not valid base64") from None
    if not raw or len(raw) % 4:
        raise InputError(f"{where}: 'vector' is not a whole number of float32 values")
    vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.isfinite(vector).all() or abs(float(np.linalg.norm(vector)) - 1.0) > 1e-3:
        raise InputError(f"{where}: 'vector' is not a finite unit-length embedding")
    return vector, model


# -- merging ------------------------------------------------------------------------------

def merge(current: Record, incoming: Record) -> Record:
    """The stored record joined with an imported copy of the same text in the same layer
    (``layers.join`` of two copies of one history: merging twice changes nothing more)."""
    from .layers import join

    return join([current, incoming], copies=True)
