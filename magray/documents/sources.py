"""Which file and lines each ingested record holds (table ``sources``, migration m006)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Iterable, Sequence

from ..records import Hit, Source

if TYPE_CHECKING:
    import sqlite3

    from ..db.store import Store


def of(store: "Store", ids: Iterable[int]) -> dict[int, Source]:
    """The source of each of ``ids`` that came from a file (the first path, if several)."""
    ids = list(dict.fromkeys(ids))
    found: dict[int, Source] = {}
    for start in range(0, len(ids), 900):
        chunk = ids[start:start + 900]
        for rid, path, a, b, body_at in store.conn.execute(
                f"SELECT record_id, path, line_start, line_end, body_at FROM sources "
                f"WHERE record_id IN ({', '.join('?' * len(chunk))}) ORDER BY path DESC", chunk):
            found[rid] = Source(path, a, b, body_at)
    return found


def attach(store: "Store", hits: Sequence[Hit]) -> list[Hit]:
    """The hits, each with its record's source where it has one."""
    if not hits:
        return list(hits)
    known = of(store, [h.record.id for h in hits])
    return [replace(h, source=known[h.record.id]) if h.record.id in known else h for h in hits]


def file_hashes(store: "Store", paths: Sequence[str]) -> dict[str, set[str]]:
    """The file hashes recorded for each of ``paths`` (several if a run was interrupted)."""
    found: dict[str, set[str]] = {}
    for start in range(0, len(paths), 900):
        chunk = list(paths[start:start + 900])
        for path, digest in store.conn.execute(
                f"SELECT DISTINCT path, file_hash FROM sources "
                f"WHERE path IN ({', '.join('?' * len(chunk))})", chunk):
            found.setdefault(path, set()).add(digest)
    return found


def records_of(store: "Store", path: str) -> dict[int, str]:
    """Record id -> content hash of the records ingested from ``path``."""
    return dict(store.conn.execute(
        "SELECT r.id, r.content_hash FROM sources s JOIN records r ON r.id = s.record_id "
        "WHERE s.path = ?", (path,)))


def paths_under(store: "Store", prefixes: Sequence[str]) -> list[str]:
    """Every recorded path under one of the directory ``prefixes`` (or equal to one)."""
    found: list[str] = []
    for prefix in prefixes:
        base = prefix.rstrip("/")
        found += [row[0] for row in store.conn.execute(
            "SELECT DISTINCT path FROM sources WHERE path = ? OR substr(path, 1, ?) = ?",
            (base, len(base) + 1, base + "/"))]
    return sorted(set(found))


def record_ids_under(store: "Store", prefix: str) -> list[int]:
    """Ids of records ingested from files under ``prefix`` (a path or a directory)."""
    base = prefix.rstrip("/") or "/"
    return [row[0] for row in store.conn.execute(
        "SELECT DISTINCT record_id FROM sources WHERE path = ? OR substr(path, 1, ?) = ?",
        (base, len(base.rstrip("/")) + 1, base.rstrip("/") + "/"))]


def put(conn: "sqlite3.Connection", record_id: int, source: Source, file_hash: str) -> None:
    conn.execute(
        "INSERT INTO sources (record_id, path, line_start, line_end, body_at, file_hash) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(record_id, path) DO UPDATE SET "
        "line_start = excluded.line_start, line_end = excluded.line_end, "
        "body_at = excluded.body_at, file_hash = excluded.file_hash",
        (record_id, source.path, source.line_start, source.line_end, source.body_at, file_hash))


def drop(conn: "sqlite3.Connection", path: str, record_ids: Sequence[int] | None = None) -> None:
    """Forget that ``path`` held these records (all of them when None)."""
    if record_ids is None:
        conn.execute("DELETE FROM sources WHERE path = ?", (path,))
    else:
        conn.executemany("DELETE FROM sources WHERE path = ? AND record_id = ?",
                         [(path, rid) for rid in record_ids])


def still_sourced(store: "Store", ids: Sequence[int]) -> set[int]:
    """Those of ``ids`` that some file still holds."""
    found: set[int] = set()
    for start in range(0, len(ids), 900):
        chunk = list(ids[start:start + 900])
        found.update(r[0] for r in store.conn.execute(
            f"SELECT DISTINCT record_id FROM sources "
            f"WHERE record_id IN ({', '.join('?' * len(chunk))})", chunk))
    return found


def best_per_document(hits: Sequence[Hit], top_k: int) -> list[Hit]:
    """The best of ``hits`` (best first) for each file; records not made from a file are
    their own document."""
    kept: list[Hit] = []
    seen: set[str] = set()
    for hit in hits:
        key = hit.source.path if hit.source is not None else f"record:{hit.record.id}"
        if key not in seen:
            seen.add(key)
            kept.append(hit)
            if len(kept) == top_k:
                break
    return kept
