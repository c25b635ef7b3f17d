"""The values that cross magray's library boundary: frozen, plain, JSON-ready."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

LAYERS = ("interact", "insights", "assets")  # from short-lived to permanent


def content_hash(text: str) -> str:
    """The identity of a text: same text in the same layer = same record."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_key(name: str, truncate_dim: int = 0) -> str:
    """The identity of a vector space: the model, and its Matryoshka truncation if any."""
    return f"{name}@{truncate_dim}" if truncate_dim else name


@dataclass(frozen=True)
class NewRecord:
    """A validated text waiting to be stored."""

    text: str
    layer: str = "interact"
    tags: tuple[str, ...] = ()
    project: str | None = None
    session: str | None = None
    kind: str | None = None
    importance: float = 0.0
    created_at: str | None = None  # ISO 8601 UTC; None = now

    @property
    def content_hash(self) -> str:
        return content_hash(self.text)


@dataclass(frozen=True)
class Record:
    """A stored record (its embedding stays in the database)."""

    id: int
    text: str
    layer: str
    kind: str | None
    tags: tuple[str, ...]
    project: str | None
    session: str | None
    created_at: str
    updated_at: str
    last_access: str | None
    access_count: int
    importance: float
    content_hash: str

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tags"] = list(self.tags)
        return data


@dataclass(frozen=True)
class Passage:
    """The part of a long record's text that was embedded on its own (character span)."""

    ordinal: int
    start: int
    end: int


@dataclass(frozen=True)
class Source:
    """The file a record was ingested from, and the lines of the file it holds."""

    path: str
    line_start: int
    line_end: int
    body_at: int = 0  # where the file's text starts in the record's (after a heading path)

    def line_of(self, text: str, offset: int) -> int:
        """The file's line at character ``offset`` of the record's text."""
        return self.line_start + text[self.body_at:max(offset, self.body_at)].count("\n")


@dataclass(frozen=True)
class Hit:
    """One search result: the record, the rank score of the mode used, and its cosine
    similarity to the query (None in keyword mode, where no query vector exists). For a
    long record, ``passage`` is the part that matched best; for an ingested one, ``source``
    names its file and lines."""

    record: Record
    score: float
    similarity: float | None = None
    passage: Passage | None = None
    source: Source | None = None

    @property
    def location(self) -> str | None:
        """``path:line`` of the matching part, for a record made from a file."""
        if self.source is None:
            return None
        offset = self.passage.start if self.passage else 0
        return f"{self.source.path}:{self.source.line_of(self.record.text, offset)}"

    def to_dict(self) -> dict:
        data = {"score": round(self.score, 6),
                "similarity": None if self.similarity is None else round(self.similarity, 6),
                **self.record.to_dict()}
        if self.passage is not None:
            data["passage"] = {"start": self.passage.start, "end": self.passage.end,
                               "text": self.record.text[self.passage.start:self.passage.end]}
        if self.source is not None:
            s = self.source
            data["source"] = {"path": s.path, "line_start": s.line_start, "line_end": s.line_end,
                              "line": s.line_of(self.record.text,
                                                self.passage.start if self.passage else 0)}
        return data


@dataclass(frozen=True)
class Trashed:
    """A record in the trash: removed by ``reason`` (forgotten, expired, evicted, merged)
    at ``trashed_at``, restorable whole until ``clean`` purges it after trash_days."""

    record: Record
    trashed_at: str
    reason: str
    merged_into: int | None = None

    def to_dict(self) -> dict:
        return {**self.record.to_dict(), "trashed_at": self.trashed_at, "reason": self.reason,
                "merged_into": self.merged_into}


@dataclass(frozen=True)
class Stored:
    """The outcome of storing one text: its record id, and whether it was already stored
    (``duplicate``: the same text in the same layer, counted as an access; ``similarity``
    1.0). A new text that closely resembles a record of its layer is stored all the same,
    and ``near`` names that record (``similarity``: their cosine similarity). ``redacted``:
    the kinds of credentials replaced before it was stored (setting secrets)."""

    id: int
    layer: str
    duplicate: bool
    similarity: float | None = None
    near: int | None = None
    redacted: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        data = asdict(self)
        data["redacted"] = list(self.redacted)
        return data


@dataclass(frozen=True)
class Filters:
    """Narrowing conditions shared by search, list and export. Times are ISO 8601 UTC."""

    tags: tuple[str, ...] = ()
    project: str | None = None
    session: str | None = None
    kind: str | None = None
    since: str | None = None
    until: str | None = None
    source: str | None = None  # ingested from this file, or from a file under this directory

    def __bool__(self) -> bool:
        return bool(self.tags or self.project or self.session or self.kind or self.since
                    or self.until or self.source)


@dataclass(frozen=True)
class SearchRequest:
    query: str
    top_k: int = 10
    layers: tuple[str, ...] = ()
    mode: str = "hybrid"
    min_score: float | None = None
    filters: Filters = field(default_factory=Filters)
    track: bool = True
    by_doc: bool = False  # the best hit per document (ingested file) only
