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
from typing import TYPE_CHECKING

from . import clock, passages, secrets
from .db.base import SOURCES
from .records import Record

if TYPE_CHECKING:
    from .db.base import Repository
    from .memory import Memory

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


def scan(memory: "Memory", *, apply: bool = False) -> ScanReport:
    """Find (and with ``apply`` redact) credentials in everything the memory keeps."""
    found: list[Found] = []
    rows: dict[tuple[str, int], Record] = {}
    scanned = 0
    with memory.db.read():
        for source in SOURCES:  # the records, and the trash (restorable: a credential
            for record in memory.db.every_text(source, BATCH):  # there is still kept)
                scanned += 1
                if hits := secrets.inspect(_fields(record)):
                    found.append(Found(source, record.id, record.layer,
                                       tuple(dict.fromkeys(h.kind for h in hits)),
                                       tuple(h.describe() for h in hits)))
                    rows[(source, record.id)] = record
    if not apply:
        with memory.db.write() as tx:
            memory.db.set_meta(tx, FOUND_KEY, str(len(found)))
        return ScanReport(False, scanned, tuple(found))
    removed, merged = _apply(memory, found, rows)
    return ScanReport(True, scanned, tuple(found), removed, merged)


def _apply(memory: "Memory", found: list[Found], rows: dict[tuple[str, int], Record]
           ) -> tuple[int, int]:
    # Deleted and rewritten pages are zeroed instead of left in the file's free space.
    memory.db.zero_freed_pages()
    removed = merged = 0
    layers: set[str] = set()
    if found:
        memory.check_model()
    for item in found:
        record = rows[(item.source, item.id)]
        fields = _fields(record)
        hits = secrets.inspect(fields)
        changes = secrets.cleaned(fields, hits)
        vector = memory._vectors([changes["text"]], "document")[0] if "text" in changes \
            else None
        with memory.db.write() as tx:
            merged += memory.db.redact(tx, item.source, record, changes, vector,
                                       clock.now_iso())
            if "text" in changes:
                passages.recheck(memory.db, tx, [item.id])
            removed += memory.db.forget_cached_text(tx, record.content_hash)
        if item.source == "records":  # the indexes hold no trashed record
            layers.add(item.layer)
    with memory.db.write() as tx:
        memory.db.set_meta(tx, FOUND_KEY, "0")
    if found:
        scrub(memory)
    memory._sync_after_write(sorted(layers))
    return removed, merged


def scrub(memory: "Memory") -> None:
    """Leave no old bytes behind: rebuild the FTS index from the texts now stored (its old
    segments held removed words), VACUUM the file, and empty the WAL. Used after a
    redaction and after a purge (``forget --purge``, ``trash empty``)."""
    memory.db.scrub()
