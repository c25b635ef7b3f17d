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
class Hit:
    """One search result: the record, the rank score of the mode used, and its cosine
    similarity to the query (None in keyword mode, where no query vector exists)."""

    record: Record
    score: float
    similarity: float | None = None

    def to_dict(self) -> dict:
        return {"score": round(self.score, 6),
                "similarity": None if self.similarity is None else round(self.similarity, 6),
                **self.record.to_dict()}


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

    def __bool__(self) -> bool:
        return bool(self.tags or self.project or self.session or self.kind or self.since
                    or self.until)


@dataclass(frozen=True)
class SearchRequest:
    query: str
    top_k: int = 10
    layers: tuple[str, ...] = ()
    mode: str = "hybrid"
    min_score: float | None = None
    filters: Filters = field(default_factory=Filters)
    track: bool = True
