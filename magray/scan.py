"""``magray scan``: find credentials already stored, and redact them in place.

A memory can hold credentials from before the ``secrets`` setting existed, or stored with
``secrets = "allow"``. ``scan`` reads every source of stored text (``SOURCES``: the records
and the trash) and, with
``apply``, rewrites each finding as the write path would have: the text redacted and
re-embedded (the FTS index follows through its triggers, the vector indexes through the
index log), the cached vectors of the old text removed, and the freed database pages
overwritten (``secure_delete``, an FTS rebuild, VACUUM, a WAL checkpoint), so that no copy
of the credential lingers in the memory's files.

The number found is kept in ``meta`` (``secrets_found``) for ``magray status``, which must
stay fast and never scans.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

from . import clock, passages, secrets
from .db.base import SOURCES
from .records import Record

if TYPE_CHECKING:
    from .db.base import Repository
    from .encoder import Encoder
    from .index import Indexes

FOUND_KEY = "secrets_found"  # meta: records holding credentials at the last scan or write
BATCH = 2000


@dataclass(frozen=True)
class Found:
    """One stored record holding credentials: where, and which kinds at which places
    (never the values)."""

    source: str  # "records" or "trash"
    id: int
    layer: str
    kinds: tuple[str, ...]
    places: tuple[str, ...]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["kinds"], data["places"] = list(self.kinds), list(self.places)
        return data


@dataclass(frozen=True)
class ScanReport:
    """What a scan found and, with ``applied``, redacted; ``cache_removed``: cached vectors
    of the old texts deleted; ``merged``: records whose redacted text equalled another
    record's in the same layer, joined into it."""

    applied: bool
    scanned: int
    found: tuple[Found, ...]
    cache_removed: int = 0
    merged: int = 0

    def to_dict(self) -> dict:
        return {"applied": self.applied, "scanned": self.scanned,
                "found": [f.to_dict() for f in self.found],
                "cache_removed": self.cache_removed, "merged": self.merged}


def count_found(store: "Repository", found: int) -> None:
    """Add ``found`` records holding credentials (stored with secrets=allow) to the count."""
    store.add_to_meta(FOUND_KEY, found)


def _fields(record: Record) -> dict[str, object]:
    return {"text": record.text, "tags": record.tags, "project": record.project,
            "session": record.session, "kind": record.kind}


def scan(store: "Repository", indexes: "Indexes", encoder: "Encoder", *, apply: bool = False,
         warn: Callable[[str], None] = lambda message: None) -> ScanReport:
    """Find (and with ``apply`` redact) credentials in everything the memory keeps."""
    found: list[Found] = []
    rows: dict[tuple[str, int], Record] = {}
    scanned = 0
    with store.read():
        for source in SOURCES:  # the records, and the trash (restorable: a credential
            for record in store.every_text(source, BATCH):  # there is still kept)
                scanned += 1
                if hits := secrets.inspect(_fields(record)):
                    found.append(Found(source, record.id, record.layer,
                                       tuple(dict.fromkeys(h.kind for h in hits)),
                                       tuple(h.describe() for h in hits)))
                    rows[(source, record.id)] = record
    if not apply:
        with store.write() as tx:
            store.set_meta(tx, FOUND_KEY, str(len(found)))
        return ScanReport(False, scanned, tuple(found))
    removed, merged = _apply(store, indexes, encoder, found, rows, warn)
    return ScanReport(True, scanned, tuple(found), removed, merged)


def _apply(store: "Repository", indexes: "Indexes", encoder: "Encoder", found: list[Found],
           rows: dict[tuple[str, int], Record], warn: Callable[[str], None]) -> tuple[int, int]:
    removed = merged = 0
    layers: set[str] = set()
    if found:
        encoder.check_model()
    for item in found:
        record = rows[(item.source, item.id)]
        fields = _fields(record)
        hits = secrets.inspect(fields)
        changes = secrets.cleaned(fields, hits)
        vector = encoder.vectors([changes["text"]], "document")[0] if "text" in changes \
            else None
        with store.write() as tx:
            # Deleted and rewritten pages are zeroed, not left in the file's free space.
            store.secure_delete(tx)
            merged += store.redact(tx, item.source, record, changes, vector,
                                       clock.now_iso())
            if "text" in changes:
                passages.recheck(store, tx, [item.id])
            removed += store.forget_cached_text(tx, record.content_hash)
        if item.source == "records":  # the indexes hold no trashed record
            layers.add(item.layer)
    with store.write() as tx:
        store.set_meta(tx, FOUND_KEY, "0")
    if found:  # leave no old bytes behind: free pages, old keyword segments, the WAL
        store.scrub()
    indexes.after_write(sorted(layers), warn)
    return removed, merged
