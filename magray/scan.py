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

import json
import sqlite3
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Iterator

from . import clock, passages, secrets
from .records import content_hash

if TYPE_CHECKING:
    from .memory import Memory
    from .db.store import Store

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


Row = tuple  # (id, text, layer, kind, tags json, project, session, content_hash)


def count_found(store: "Store", found: int) -> None:
    """Add ``found`` records holding credentials (stored with secrets=allow) to the count."""
    with store.write() as conn:
        conn.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                     "value = CAST(value AS INTEGER) + ?", (FOUND_KEY, str(found), found))


def _rows(table: str) -> Callable[[sqlite3.Connection], Iterator[Row]]:
    def read(conn: sqlite3.Connection) -> Iterator[Row]:
        last = 0
        while True:
            rows = conn.execute("SELECT id, text, layer, kind, tags, project, session, "
                                f"content_hash FROM {table} WHERE id > ? ORDER BY id LIMIT ?",
                                (last, BATCH)).fetchall()
            if not rows:
                return
            yield from rows
            last = rows[-1][0]
    return read


# Each source of stored text, by the table that holds it: the records, and the trash
# (removed records kept for trash_days, restorable: a credential there is still kept).
SOURCES: dict[str, Callable[[sqlite3.Connection], Iterator[Row]]] = {
    "records": _rows("records"), "trash": _rows("trash")}


def _fields(row: Row) -> dict[str, object]:
    _, text, _, kind, tags, project, session, _ = row
    return {"text": text, "tags": tuple(json.loads(tags)), "project": project,
            "session": session, "kind": kind}


def scan(memory: "Memory", *, apply: bool = False) -> ScanReport:
    """Find (and with ``apply`` redact) credentials in everything the memory keeps."""
    conn = memory.db.conn
    found: list[Found] = []
    rows: dict[tuple[str, int], Row] = {}
    scanned = 0
    with memory.db.read():
        for source, read in SOURCES.items():
            for row in read(conn):
                scanned += 1
                if hits := secrets.inspect(_fields(row)):
                    found.append(Found(source, row[0], row[2],
                                       tuple(dict.fromkeys(h.kind for h in hits)),
                                       tuple(h.describe() for h in hits)))
                    rows[(source, row[0])] = row
    if not apply:
        with memory.db.write() as wconn:
            memory.db.set_meta(wconn, FOUND_KEY, str(len(found)))
        return ScanReport(False, scanned, tuple(found))
    removed, merged = _apply(memory, found, rows)
    return ScanReport(True, scanned, tuple(found), removed, merged)


def _apply(memory: "Memory", found: list[Found], rows: dict[tuple[str, int], Row]
           ) -> tuple[int, int]:
    conn = memory.db.conn
    # Deleted and rewritten pages are zeroed instead of left in the file's free space.
    conn.execute("PRAGMA secure_delete = ON")
    removed = merged = 0
    layers: set[str] = set()
    if found:
        memory.check_model()
    for item in found:
        row = rows[(item.source, item.id)]
        fields = _fields(row)
        hits = secrets.inspect(fields)
        changes = secrets.cleaned(fields, hits)
        text = changes.get("text", row[1])
        vector = memory._vectors([text], "document")[0] if "text" in changes else None
        with memory.db.write() as wconn:
            merged += _redact(wconn, item.source, row, changes, text, vector)
            if "text" in changes:
                passages.recheck(memory.db, wconn, [item.id])
            cur = wconn.execute("DELETE FROM embed_cache WHERE text_hash = ?", (row[7],))
            removed += cur.rowcount
        if item.source == "records":  # the indexes hold no trashed record
            layers.add(item.layer)
    with memory.db.write() as wconn:
        memory.db.set_meta(wconn, FOUND_KEY, "0")
    if found:
        scrub(memory)
    memory._sync_after_write(sorted(layers))
    return removed, merged


def _redact(conn: sqlite3.Connection, table: str, row: Row, changes: dict, text: str, vector
            ) -> int:
    """Rewrite one record (of ``table``, records or trash); 1 when its redacted text joined
    a twin of the same layer (a trashed record is rewritten in place, never joined)."""
    record_id, _, layer = row[0], row[1], row[2]
    digest = content_hash(text)
    twin = None if table == "trash" else conn.execute(
        "SELECT id, tags FROM records WHERE layer = ? AND content_hash = ? AND id <> ?",
        (layer, digest, record_id)).fetchone()
    tags = list(changes.get("tags", json.loads(row[4])))
    if twin is not None:  # the same redacted text is stored already: keep one record
        joined = json.dumps(sorted(set(json.loads(twin[1])) | set(tags)))
        conn.execute("UPDATE records SET tags = ?, access_count = access_count + (SELECT "
                     "access_count FROM records WHERE id = ?) WHERE id = ?",
                     (joined, record_id, twin[0]))
        conn.execute("DELETE FROM records WHERE id = ?", (record_id,))
        return 1
    sets = {"tags": json.dumps(sorted(set(tags))), "updated_at": clock.now_iso(),
            **{k: changes[k] for k in ("project", "session", "kind") if k in changes}}
    if "text" in changes:
        import numpy as np

        sets.update(text=text, content_hash=digest,
                    embedding=np.ascontiguousarray(vector, dtype=np.float32).tobytes())
        # A long text's passage vectors were made from the old text (a record's go through
        # its trigger; a trashed one's here): `optimize` splits the new text again.
        conn.execute("DELETE FROM passages WHERE record_id = ?", (record_id,))
    assignments = ", ".join(f"{k} = ?" for k in sets)
    conn.execute(f"UPDATE {table} SET {assignments} WHERE id = ?", (*sets.values(), record_id))
    return 0


def scrub(memory: "Memory") -> None:
    """Leave no old bytes behind: rebuild the FTS index from the texts now stored (its old
    segments held removed words), VACUUM the file, and empty the WAL. Used after a
    redaction and after a purge (``forget --purge``, ``trash empty``)."""
    with memory.db.write() as conn:
        conn.execute("INSERT INTO records_fts(records_fts) VALUES ('rebuild')")
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
