"""The SQLite store: the single source of truth for records, vectors and the embedding cache.

Writes run in ``BEGIN IMMEDIATE`` transactions on a WAL database with a busy timeout, so
concurrent magray processes serialise instead of failing. Triggers keep two derived
structures in step inside the same transactions:

* ``records_fts`` (FTS5, external content) for keyword search;
* ``index_log``, one row per record whose vector entered or left a layer. A usearch index
  remembers the last log sequence it applied; replaying newer rows brings it up to date
  without re-embedding anything.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .. import clock
from ..errors import BusyError, IntegrityError, MagrayError
from ..layers import Facts, access, join
from ..records import LAYERS, Filters, NewRecord, Passage, Record, Source, Trashed, content_hash
from . import migrations
from .base import SOURCES, Op, Unchanged, VectorNeeded
from .connection import connect, translate
from .reader import LAST_USE, Reader
from .snapshot import Snapshots

OPS_KEEP = 5_000  # recent operations kept for status's latency figures; older rows are pruned
PAGE_CACHE_KIB = 32 * 1024  # a warm search at 1M records reads its rows ~40% faster
RECORD_COLUMNS = ("id, text, layer, kind, tags, project, session, created_at, updated_at, "
                  "last_access, access_count, importance, content_hash")
FACT_COLUMNS = "id, layer, text, created_at, last_access, access_count, importance"


class Store(Reader, Snapshots):
    """An open magray database (the read queries status also needs are in ``Reader``)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, busy_timeout: float):
        super().__init__(conn, path, busy_timeout)
        self._store_id: str | None = None

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, busy_timeout: float = 60.0) -> "Store":
        """Open (creating and migrating as needed) the database at ``path``."""
        _prepare_private(path)
        store = cls(connect(path, timeout=busy_timeout), path, busy_timeout)
        try:
            store._configure()
            store.migrate()
        except sqlite3.DatabaseError as exc:  # a wrong file fails on its first statement
            store.close()
            raise translate(exc, path) from None
        except BaseException:
            store.close()
            raise
        return store

    def _configure(self) -> None:
        if self.conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            self._use_wal()
        # FULL: a record is on disk when its id is printed, even across a power cut.
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        # SQLite's default 2 MiB page cache cannot hold the upper levels of the records
        # b-tree past ~100k records; pages are only allocated as they are read.
        self.conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")

    def _use_wal(self) -> None:
        """Switch a new database to WAL. SQLite answers this change "locked" at once, without
        waiting on its busy handler, while another process opens the same new file (several
        agents' `magray mcp` starting together): so wait here, up to the busy timeout."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                self.conn.execute("PRAGMA journal_mode=WAL")
                return
            except BusyError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def migrate(self) -> None:
        """Apply the migrations this database lacks (on open; after a restore loaded an
        older schema)."""
        if not migrations.pending(self.conn):
            return
        with self.write():  # serialise concurrent first opens; apply() re-checks inside
            migrations.apply(self.conn)
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)",
                              (uuid.uuid4().hex,))

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE takes the write lock up front (waiting up to
        the busy timeout), so a read-then-write inside it never races another process."""
        with self._busy_guard():
            self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            with self._busy_guard():
                self.conn.execute("COMMIT")
        except BaseException:  # a failed COMMIT too (a full disk): nothing half-done stays
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    # -- metadata -------------------------------------------------------------------------

    def set_meta(self, tx: sqlite3.Connection, key: str, value: str) -> None:
        tx.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                     "value = excluded.value", (key, value))

    def reloaded(self) -> None:
        """Forget what was read once and kept: a restore replaced the database."""
        self._store_id = None

    @property
    def store_id(self) -> str:
        if not self._store_id:  # set once, by the first migration; never changes
            self._store_id = self.meta("store_id")
        return self._store_id or ""

    # -- records --------------------------------------------------------------------------

    def existing(self, layer: str, hashes: Sequence[str]) -> set[str]:
        """The content hashes among ``hashes`` already stored in ``layer``."""
        found: set[str] = set()
        for chunk in _chunks(list(hashes), 900):
            found.update(r[0] for r in self.conn.execute(
                f"SELECT content_hash FROM records WHERE layer = ? "
                f"AND content_hash IN ({_marks(chunk)})", (layer, *chunk)))
        return found

    def insert(self, tx: sqlite3.Connection, item: NewRecord, vector: np.ndarray | None,
               when: str) -> tuple[int, bool]:
        """Insert one record inside a write transaction, or count a duplicate (the same text
        in the same layer) as an access. Returns (id, duplicate). ``vector`` may be None
        only for a text expected to be a duplicate; if that record vanished meanwhile,
        ``VectorNeeded`` is raised."""
        digest = item.content_hash
        row = tx.execute("SELECT id FROM records WHERE layer = ? AND content_hash = ?",
                           (item.layer, digest)).fetchone()
        if row:
            self.merge(tx, row[0], item, when)
            return row[0], True
        if vector is None:
            raise VectorNeeded(item.text)
        created = clock.iso(clock.parse_time(item.created_at)) if item.created_at else when
        cursor = tx.execute(
            "INSERT INTO records (text, layer, kind, tags, project, session, created_at, "
            "updated_at, last_access, access_count, importance, content_hash, embedding) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, ?, ?, ?)",
            (item.text, item.layer, item.kind, json.dumps(sorted(set(item.tags))), item.project,
             item.session, created, when, item.importance, digest,
             np.ascontiguousarray(vector, dtype=np.float32).tobytes()))
        return cursor.lastrowid, False

    def merge(self, tx: sqlite3.Connection, record_id: int, item: NewRecord, when: str
              ) -> bool:
        """Count ``item`` (its text stored again) as an access of the record, joined by the
        one rule (``layers.join``: tags merged, the higher importance kept); False when the
        record is no longer in the item's layer."""
        row = tx.execute(f"SELECT {RECORD_COLUMNS} FROM records WHERE id = ? AND layer = ?",
                           (record_id, item.layer)).fetchone()
        if row is None:
            return False
        stored = _record(row)
        self.update_metadata(tx, join([stored, access(stored, item, when)]))
        return True

    def touch(self, ids: Sequence[int], op: Op | None = None) -> None:
        """Count the records as accessed now (and record ``op`` in the same transaction)."""
        if not ids and op is None:
            return
        with self.write() as conn:
            if ids:
                conn.execute(
                    f"UPDATE records SET access_count = access_count + 1, last_access = ? "
                    f"WHERE id IN ({_marks(ids)})", (clock.now_iso(), *ids))
            if op is not None:
                self.record_op(conn, op)

    def record_op(self, tx: sqlite3.Connection, op: Op) -> None:
        """Log a finished operation inside a write transaction; keep the last OPS_KEEP."""
        seconds = time.perf_counter() - op.started
        row = tx.execute(
            "INSERT INTO ops (op, finished_at, seconds, items, cache_hits, cache_misses) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (op.name, clock.now_iso(), seconds, op.items, op.cache_hits, op.cache_misses))
        tx.execute("DELETE FROM ops WHERE id <= ?", (row.lastrowid - OPS_KEEP,))
        tx.execute(
            "INSERT INTO op_totals VALUES (?, 1, ?, ?, ?, ?) ON CONFLICT(op) DO UPDATE SET "
            "count = count + 1, seconds = seconds + excluded.seconds, "
            "items = items + excluded.items, cache_hits = cache_hits + excluded.cache_hits, "
            "cache_misses = cache_misses + excluded.cache_misses",
            (op.name, seconds, op.items, op.cache_hits, op.cache_misses))

    def records(self, ids: Sequence[int]) -> dict[int, Record]:
        """Records by id (missing ids are simply absent)."""
        result: dict[int, Record] = {}
        for chunk in _chunks(list(ids), 900):
            for row in self.conn.execute(
                    f"SELECT {RECORD_COLUMNS} FROM records WHERE id IN ({_marks(chunk)})", chunk):
                record = _record(row)
                result[record.id] = record
        return result

    def records_and_vectors(self, ids: Sequence[int], dim: int
                            ) -> tuple[dict[int, Record], np.ndarray]:
        """Records by id and their vectors (rows in the dict's order), in one read: a search
        scores its candidates and shows the winners without a second query."""
        result: dict[int, Record] = {}
        blobs = []
        for chunk in _chunks(list(ids), 900):
            for row in self.conn.execute(f"SELECT {RECORD_COLUMNS}, embedding FROM records "
                                         f"WHERE id IN ({_marks(chunk)})", chunk):
                result[row[0]] = _record(row[:-1])
                blobs.append(row[-1])
        return result, _matrix(blobs, dim)

    def vectors(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids that exist, their vectors as a matrix), in the order the database returns."""
        found, rows = [], []
        for chunk in _chunks(list(ids), 900):
            for rid, blob in self.conn.execute(
                    f"SELECT id, embedding FROM records WHERE id IN ({_marks(chunk)})", chunk):
                found.append(rid)
                rows.append(blob)
        return np.array(found, dtype=np.int64), _matrix(rows, dim)

    def layer_vectors(self, layer: str, dim: int, batch: int = 8192
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every (ids, vectors) of a layer, in batches: what an index is rebuilt from."""
        cursor = self.conn.execute("SELECT id, embedding FROM records WHERE layer = ? ORDER BY id",
                                   (layer,))
        while rows := cursor.fetchmany(batch):
            yield (np.array([r[0] for r in rows], dtype=np.int64),
                   _matrix([r[1] for r in rows], dim))

    # -- whole records: list, export, import, forget --------------------------------------

    def recent(self, layers: Sequence[str], filters: Filters, limit: int | None) -> list[Record]:
        """Records in ``layers`` passing ``filters``, newest first."""
        where, params = filter_sql(layers, filters)
        sql = (f"SELECT {RECORD_COLUMNS} FROM records WHERE {where} "
               f"ORDER BY created_at DESC, id DESC")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_record(row) for row in self.conn.execute(sql, params)]

    def dump(self, layers: Sequence[str], filters: Filters, *, vectors: bool = False,
             by_layer: bool = False, batch: int = 512) -> Iterator[tuple[Record, bytes | None]]:
        """Every matching record with its raw float32 vector (None unless ``vectors``), by id,
        or layer by layer (short-lived first) then by id. Read inside ``read()`` for one
        consistent snapshot; rows are fetched in batches, never all at once."""
        where, params = filter_sql(layers, filters)
        rank = " ".join(f"WHEN '{layer}' THEN {n}" for n, layer in enumerate(LAYERS))
        order = f"CASE layer {rank} END, id" if by_layer else "id"
        columns = RECORD_COLUMNS + (", embedding" if vectors else "")
        cursor = self.conn.execute(f"SELECT {columns} FROM records WHERE {where} ORDER BY {order}",
                                   params)
        width = len(RECORD_COLUMNS.split(","))
        while rows := cursor.fetchmany(batch):
            for row in rows:
                yield _record(row[:width]), (row[width] if vectors else None)

    def find(self, tx: sqlite3.Connection, layer: str, digest: str) -> Record | None:
        """The record holding the text with this hash in this layer, if any."""
        row = tx.execute(f"SELECT {RECORD_COLUMNS} FROM records WHERE layer = ? AND "
                           f"content_hash = ?", (layer, digest)).fetchone()
        return _record(row) if row else None

    def issued_through(self) -> int:
        """The highest record id this store ever issued (AUTOINCREMENT never reuses one)."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'"
                                ).fetchone()
        return row[0] if row else 0

    def insert_record(self, tx: sqlite3.Connection, record: Record, vector: np.ndarray) -> int:
        """Insert a complete record as given (timestamps, counts, importance), inside a write
        transaction. Its id is kept when this store never issued that id (so a fresh store
        takes an export's ids unchanged); otherwise the record gets a new one."""
        keep = record.id if record.id and record.id > self.issued_through() else None
        cursor = tx.execute(
            "INSERT INTO records (id, text, layer, kind, tags, project, session, created_at, "
            "updated_at, last_access, access_count, importance, content_hash, embedding) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (keep, record.text, record.layer, record.kind, json.dumps(sorted(set(record.tags))),
             record.project, record.session, record.created_at, record.updated_at,
             record.last_access, record.access_count, record.importance, record.content_hash,
             np.ascontiguousarray(vector, dtype=np.float32).tobytes()))
        return cursor.lastrowid

    def update_metadata(self, tx: sqlite3.Connection, record: Record) -> None:
        """Overwrite a record's metadata (not its text, layer or vector) by id."""
        tx.execute(
            "UPDATE records SET kind = ?, tags = ?, project = ?, session = ?, created_at = ?, "
            "updated_at = ?, last_access = ?, access_count = ?, importance = ? WHERE id = ?",
            (record.kind, json.dumps(sorted(set(record.tags))), record.project, record.session,
             record.created_at, record.updated_at, record.last_access, record.access_count,
             record.importance, record.id))

    def delete(self, tx: sqlite3.Connection, ids: Sequence[int]) -> None:
        """Delete records inside a write transaction; the triggers log them for the indexes."""
        for chunk in _chunks(list(ids), 900):
            tx.execute(f"DELETE FROM records WHERE id IN ({_marks(chunk)})", chunk)

    # -- the trash ------------------------------------------------------------------------

    def trash(self, tx: sqlite3.Connection, record_id: int, reason: str, when: str, *,
              merged_into: int | None = None, unchanged: Unchanged | None = None) -> bool:
        """Move one record to the trash inside a write transaction; with ``unchanged``, only
        if it is still in that layer, with that access count and last access (nobody used
        or moved it since a plan was made). Leaving ``records`` fires the same triggers as
        a delete, so keyword search and the indexes drop it. False when it was not moved."""
        where, params = "1", ()
        if unchanged is not None:
            where = "layer = ? AND access_count = ? AND last_access IS ?"
            params = (unchanged.layer, unchanged.access_count, unchanged.last_access)
        cursor = tx.execute(
            f"INSERT OR REPLACE INTO trash ({RECORD_COLUMNS}, embedding, model, trashed_at, "
            f"reason, merged_into) SELECT {RECORD_COLUMNS}, embedding, "
            f"(SELECT value FROM meta WHERE key = 'model_key'), ?, ?, ? FROM records "
            f"WHERE id = ? AND {where}", (when, reason, merged_into, record_id, *params))
        if not cursor.rowcount:
            return False
        tx.execute("DELETE FROM records WHERE id = ?", (record_id,))
        return True

    def trashed(self, ids: Sequence[int] | None = None) -> list[Trashed]:
        """Records in the trash (those of ``ids``, or all), most recently trashed first."""
        sql = f"SELECT {RECORD_COLUMNS}, trashed_at, reason, merged_into FROM trash"
        params: Sequence = ()
        if ids is not None:
            sql += " WHERE id IN (SELECT value FROM json_each(?))"
            params = (json.dumps([int(i) for i in ids]),)
        width = len(RECORD_COLUMNS.split(","))
        return [Trashed(_record(row[:width]), *row[width:]) for row in
                self.conn.execute(sql + " ORDER BY trashed_at DESC, id DESC", params)]

    def untrash(self, tx: sqlite3.Connection, record_id: int, vector: bytes | None = None,
                accessed: str | None = None) -> None:
        """Put a trashed record back in ``records`` under its own id, inside a write
        transaction (``vector``: a replacement when the model changed meanwhile; ``accessed``:
        its new last access). The insert triggers give it back to keyword search and,
        through the index log, its index."""
        columns = RECORD_COLUMNS.replace("last_access", "coalesce(?, last_access)")
        tx.execute(
            f"INSERT INTO records ({RECORD_COLUMNS}, embedding) SELECT {columns}, "
            f"coalesce(?, embedding) FROM trash WHERE id = ?", (accessed, vector, record_id))
        tx.execute("DELETE FROM trash WHERE id = ?", (record_id,))

    def trash_vectors(self, ids: Sequence[int]) -> dict[int, tuple[bytes, str | None]]:
        """(raw vector, model key that made it) of trashed records."""
        return {row[0]: (row[1], row[2]) for row in self.conn.execute(
            "SELECT id, embedding, model FROM trash WHERE id IN "
            "(SELECT value FROM json_each(?))", (json.dumps([int(i) for i in ids]),))}

    def purge_trash(self, tx: sqlite3.Connection, ids: Sequence[int]) -> int:
        """Destroy these trashed records for good, inside a write transaction; how many."""
        return tx.execute("DELETE FROM trash WHERE id IN (SELECT value FROM json_each(?))",
                            (json.dumps([int(i) for i in ids]),)).rowcount

    def filtered_ids(self, layers: Sequence[str], filters: Filters, limit: int | None = None
                     ) -> list[int]:
        """Ids of records in ``layers`` that pass ``filters``."""
        where, params = filter_sql(layers, filters)
        sql = f"SELECT id FROM records WHERE {where}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [row[0] for row in self.conn.execute(sql, params)]

    def keyword_search(self, text: str, layers: Sequence[str], filters: Filters, limit: int
                       ) -> list[tuple[int, float]]:
        """(id, relevance) of the records holding words of ``text`` (``fts_query``), by
        FTS5 BM25, best first; relevance is -bm25 (higher is better)."""
        match = fts_query(text)
        if not match:
            return []
        where, params = filter_sql(layers, filters, table="r")
        sql = (f"SELECT r.id, -bm25(records_fts) AS relevance FROM records_fts "
               f"JOIN records r ON r.id = records_fts.rowid "
               f"WHERE records_fts MATCH ? AND {where} ORDER BY bm25(records_fts) LIMIT ?")
        return [(row[0], row[1]) for row in self.conn.execute(sql, (match, *params, limit))]

    def passing(self, ids: Iterable[int], layer: str, filters: Filters) -> list[int]:
        """Those of ``ids`` whose record is in ``layer`` and passes ``filters``."""
        where, params = filter_sql([layer], filters)
        return [row[0] for row in self.among(ids, "id", where, params)]

    # -- the index log --------------------------------------------------------------------

    def changed_since(self, layer: str, seq: int) -> tuple[list[int], int]:
        """Record ids whose vector entered or left ``layer`` after ``seq``, and the new head."""
        rows = self.conn.execute(
            "SELECT seq, record_id FROM index_log WHERE layer = ? AND seq > ? ORDER BY seq",
            (layer, seq)).fetchall()
        head = rows[-1][0] if rows else seq
        return sorted({r[1] for r in rows}), head

    def ids_in_layer(self, ids: Sequence[int], layer: str) -> list[int]:
        return [r[0] for r in self.among(ids, "id", "layer = ?", (layer,))]

    def among(self, ids: Iterable[int], columns: str, where: str = "1", params: Sequence = ()
              ) -> sqlite3.Cursor:
        """``SELECT columns FROM records WHERE where`` for these ids only, each looked up by
        its primary key. Written as a join that starts from the ids because, for
        ``layer = ? AND id IN (...)``, SQLite prefers walking the whole layer through
        records_layer_created (13 ms for 40 ids in a 100k-record layer, instead of 0.03)."""
        return self.conn.execute(*self.among_sql(ids, columns, where, params))

    @staticmethod
    def among_sql(ids: Iterable[int], columns: str, where: str = "1", params: Sequence = ()
                  ) -> tuple[str, tuple]:
        return (f"SELECT {columns} FROM (SELECT value AS wanted_id FROM json_each(?)) "
                f"CROSS JOIN records ON records.id = wanted_id WHERE {where}",
                (json.dumps([int(i) for i in ids]), *params))

    def prune_log(self, layer: str, through: int) -> int:
        """Forget log rows an index has saved (they are never needed again); how many."""
        if through <= self.log_pruned_through(layer):
            return 0
        with self.write() as conn:
            pruned = conn.execute("DELETE FROM index_log WHERE layer = ? AND seq <= ?",
                                  (layer, through)).rowcount
            self.set_meta(conn, f"log_pruned:{layer}", str(through))
        return pruned

    # -- the embedding cache --------------------------------------------------------------

    def cached_vectors(self, model: str, hashes: Sequence[str], dim: int,
                       used_before: str = "") -> tuple[dict[str, np.ndarray], list[str]]:
        """(vectors cached for these text hashes, the hashes among them last used before
        ``used_before``)."""
        found, stale = {}, []
        for chunk in _chunks(list(hashes), 900):
            for digest, blob, used in self.conn.execute(
                    f"SELECT text_hash, vector, last_used FROM embed_cache WHERE model = ? "
                    f"AND text_hash IN ({_marks(chunk)})", (model, *chunk)):
                if len(blob) == dim * 4:
                    found[digest] = np.frombuffer(blob, dtype=np.float32)
                    if used < used_before:
                        stale.append(digest)
        return found, stale

    def touch_cache(self, model: str, hashes: Sequence[str], when: str) -> None:
        """Mark cache entries as used at ``when`` (LRU pruning reads it)."""
        if hashes:
            with self.write() as conn:
                conn.executemany("UPDATE embed_cache SET last_used = ? WHERE model = ? "
                                 "AND text_hash = ?", [(when, model, d) for d in hashes])

    def cache_vectors(self, tx: sqlite3.Connection, model: str,
                      items: Iterable[tuple[str, np.ndarray]], when: str) -> None:
        tx.executemany(
            "INSERT INTO embed_cache VALUES (?, ?, ?, ?) ON CONFLICT(model, text_hash) "
            "DO UPDATE SET last_used = excluded.last_used",
            [(model, digest, np.asarray(vec, dtype=np.float32).tobytes(), when)
             for digest, vec in items])

    # -- the model the vectors were made with ---------------------------------------------

    def layer_index(self, layer: str, spec: Any, *, ef_search: int) -> None:
        """SQLite has no vector index of its own: magray keeps usearch files (index.py)."""
        return None

    def model_meta(self, tx: sqlite3.Connection | None = None
                   ) -> tuple[str | None, int | None]:
        """(model key, dimension) recorded with the first vectors; (None, None) before any.
        Pass the write transaction to read it there (the check that must not race)."""
        found = dict((tx or self.conn).execute(
            "SELECT key, value FROM meta WHERE key IN ('model_key', 'dim')"))
        return found.get("model_key"), int(found["dim"]) if found.get("dim") else None

    # -- secure deletion ------------------------------------------------------------------

    def secure_delete(self, tx: sqlite3.Connection) -> None:
        """Inside a write transaction: from now on, pages this connection frees are zeroed,
        not left holding the deleted text (a purge of something pasted by mistake)."""
        tx.execute("PRAGMA secure_delete = ON")

    # -- the lifecycle: promote, clean -----------------------------------------------------

    def facts(self, layer: str, ids: Sequence[int] | None = None) -> list[Facts]:
        """What scoring looks at, for the records of ``layer`` (or those of ``ids`` in it),
        by id; ``neighbours`` is left 0 (the indexes count them)."""
        if ids is not None:
            rows = sorted(self.among(ids, FACT_COLUMNS, "layer = ?", (layer,)))
        else:
            rows = self.conn.execute(f"SELECT {FACT_COLUMNS} FROM records WHERE layer = ? "
                                     f"ORDER BY id", (layer,)).fetchall()
        return [Facts(*row) for row in rows]

    def expired(self, layer: str, cutoff: str) -> list[Facts]:
        """The facts of the records of ``layer`` last used before ``cutoff``, by id."""
        rows = self.conn.execute(f"SELECT {FACT_COLUMNS} FROM records WHERE layer = ? "
                                 f"AND {LAST_USE} < ? ORDER BY id", (layer, cutoff)).fetchall()
        return [Facts(*row) for row in rows]

    def move(self, tx: sqlite3.Connection, record_id: int, layer: str, target: str,
             when: str) -> tuple[str, int | None]:
        """Move one record from ``layer`` to ``target``, inside a write transaction: a
        single UPDATE of its layer, which the index-log triggers record for both layers. If
        its text is in the target layer already, the two become one record there
        (``layers.join``) and the moved one goes to the trash, as merged into it. Returns
        ("promoted", None), ("merged", the kept id) or ("changed", None): it was not in
        ``layer`` any more."""
        row = tx.execute(f"SELECT {RECORD_COLUMNS} FROM records WHERE id = ? AND layer = ?",
                           (record_id, layer)).fetchone()
        if row is None:
            return "changed", None
        moved = _record(row)
        twin = self.find(tx, target, moved.content_hash)
        if twin is None:
            tx.execute("UPDATE records SET layer = ?, updated_at = ? WHERE id = ?",
                         (target, when, record_id))
            return "promoted", None
        self.update_metadata(tx, join([twin, moved], when))
        self.trash(tx, record_id, "merged", when, merged_into=twin.id)
        return "merged", twin.id

    def layer_ids(self, layer: str) -> list[int]:
        """The ids of a layer's records, ascending."""
        return [row[0] for row in self.conn.execute(
            "SELECT id FROM records WHERE layer = ? ORDER BY id", (layer,))]

    def texts(self, ids: Iterable[int], layer: str | None = None) -> dict[int, str]:
        """The text of each of ``ids`` that exists (and is in ``layer``, if given)."""
        if layer is None:
            return dict(self.among(ids, "id, text").fetchall())
        return dict(self.among(ids, "id, text", "layer = ?", (layer,)).fetchall())

    def prune_cache(self, limit_bytes: int, *, dry_run: bool = False) -> tuple[int, int]:
        """Drop the least recently used embedding-cache entries beyond ``limit_bytes``
        (their vectors, hashes and model names); (entries, bytes) pruned, or that would be."""
        sql = ("SELECT model, text_hash, size FROM (SELECT model, text_hash, "
               "length(vector) + length(text_hash) + length(model) AS size, "
               "sum(length(vector) + length(text_hash) + length(model)) OVER "
               "(ORDER BY last_used DESC, model, text_hash) AS kept FROM embed_cache) "
               "WHERE kept > ?")
        if dry_run:
            rows = self.conn.execute(sql, (limit_bytes,)).fetchall()
            return len(rows), sum(r[2] for r in rows)
        with self.write() as conn:
            rows = conn.execute(sql, (limit_bytes,)).fetchall()
            conn.executemany("DELETE FROM embed_cache WHERE model = ? AND text_hash = ?",
                             [(r[0], r[1]) for r in rows])
        return len(rows), sum(r[2] for r in rows)

    # -- maintenance: optimize, re-embed ---------------------------------------------------

    def compact(self) -> None:
        """Reclaim free pages (VACUUM), refresh the planner's statistics (ANALYZE) and empty
        the WAL into the database file."""
        with self._busy_guard():
            self.conn.execute("VACUUM")
            self.conn.execute("ANALYZE")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def keep_cache_of(self, models: Sequence[str]) -> int:
        """Delete the cached vectors of every model but ``models``; how many."""
        with self.write() as conn:
            return conn.execute(f"DELETE FROM embed_cache WHERE model NOT IN "
                                f"({_marks(models)})", tuple(models)).rowcount

    def optimize_keywords(self) -> str:
        """Check the keyword index against the records, rebuild it if they disagree, and
        merge its segments: "optimized", or "rebuilt"."""
        with self.write() as conn:
            try:
                conn.execute("INSERT INTO records_fts(records_fts, rank) "
                             "VALUES ('integrity-check', 1)")
                outcome = "optimized"
            except (sqlite3.DatabaseError, IntegrityError):  # the check failed: SQLITE_CORRUPT
                conn.execute("INSERT INTO records_fts(records_fts) VALUES ('rebuild')")
                outcome = "rebuilt"
            conn.execute("INSERT INTO records_fts(records_fts) VALUES ('optimize')")
        return outcome

    def reembed_counts(self) -> tuple[int, int]:
        """(records holding a new vector waiting for the switch, records without one)."""
        return self.conn.execute(
            "SELECT count(pending_embedding), count(*) - count(pending_embedding) FROM records"
        ).fetchone()

    def restart_reembed(self, target: str | None) -> None:
        """Forget every waiting new vector; remember that a re-embedding for ``target`` is
        under way (None: that none is)."""
        with self.write() as conn:
            conn.execute("UPDATE records SET pending_embedding = NULL "
                         "WHERE pending_embedding IS NOT NULL")
            if target is None:
                conn.execute("DELETE FROM meta WHERE key = 'reembed_target'")
            else:
                self.set_meta(conn, "reembed_target", target)

    def unembedded(self, limit: int) -> list[tuple[int, str]]:
        """(id, text) of up to ``limit`` records with no new vector waiting yet, by id."""
        return self.conn.execute("SELECT id, text FROM records WHERE pending_embedding IS NULL "
                                 "ORDER BY id LIMIT ?", (limit,)).fetchall()

    def stage_vectors(self, rows: Sequence[tuple[int, str, np.ndarray]]) -> None:
        """Keep (id, text, new vector) rows waiting for the switch, in one transaction; a
        record whose text changed meanwhile is left without one."""
        with self.write() as conn:
            conn.executemany(
                "UPDATE records SET pending_embedding = ? WHERE id = ? AND text = ?",
                [(np.ascontiguousarray(v, dtype=np.float32).tobytes(), record_id, text)
                 for record_id, text, v in rows])

    def switch_vectors(self, name: str, key: str, dim: int) -> bool:
        """Swap every waiting vector in and record the model (name, key, dimension), in one
        transaction, if no record still lacks one (False: another process stored some
        meanwhile). Passages go, to be split and embedded again (``passages.upgrade``);
        cached vectors of other models go too."""
        with self.write() as conn:
            if conn.execute("SELECT 1 FROM records WHERE pending_embedding IS NULL LIMIT 1"
                            ).fetchone():
                return False
            conn.execute("UPDATE records SET embedding = pending_embedding, "
                         "pending_embedding = NULL")
            conn.execute("DELETE FROM passages")
            conn.execute("DELETE FROM meta WHERE key = 'passages_checked'")
            self.set_meta(conn, "model", name)
            self.set_meta(conn, "model_key", key)
            self.set_meta(conn, "dim", str(dim))
            conn.execute("DELETE FROM meta WHERE key = 'reembed_target'")
            conn.execute("DELETE FROM embed_cache WHERE model NOT IN (?, ?)",
                         (f"{key}|document", f"{key}|query"))
        return True

    # -- redaction: scan --------------------------------------------------------------------

    def add_to_meta(self, key: str, by: int) -> None:
        """Add ``by`` to the number a meta key holds (created as ``by``)."""
        with self.write() as conn:
            conn.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                         "value = CAST(value AS INTEGER) + ?", (key, str(by), by))

    def every_text(self, source: str, batch: int = 2000) -> Iterator[Record]:
        """Every record of a source of stored text (``SOURCES``: "records", or "trash"), by
        id, read in batches (inside ``read()`` for one snapshot)."""
        table = _source_table(source)
        last = 0
        while rows := self.conn.execute(f"SELECT {RECORD_COLUMNS} FROM {table} WHERE id > ? "
                                        f"ORDER BY id LIMIT ?", (last, batch)).fetchall():
            yield from (_record(row) for row in rows)
            last = rows[-1][0]

    def redact(self, tx: sqlite3.Connection, source: str, record: Record, changes: dict,
               vector: np.ndarray | None, when: str) -> bool:
        """Rewrite one record of ``source`` with ``changes`` (text, tags, project, session,
        kind; ``vector``: the new text's), inside a write transaction. True when its new
        text equalled another record's in the same layer: the two were joined
        (``layers.join``) and this one deleted for good (a trashed record is rewritten in
        place, never joined)."""
        table = _source_table(source)
        text = changes.get("text", record.text)
        digest = content_hash(text)
        row = tx.execute(f"SELECT {RECORD_COLUMNS} FROM {table} WHERE id = ?",
                           (record.id,)).fetchone()
        current = _record(row) if row else record
        cleaned = replace(current, tags=tuple(changes.get("tags", current.tags)),
                          **{k: changes[k] for k in ("project", "session", "kind")
                             if k in changes})
        twin = None if source == "trash" else tx.execute(
            f"SELECT {RECORD_COLUMNS} FROM records WHERE layer = ? AND content_hash = ? "
            f"AND id <> ?", (record.layer, digest, record.id)).fetchone()
        if twin is not None:  # the same redacted text is stored already: keep one record
            self.update_metadata(tx, join([_record(twin), cleaned], when))
            tx.execute("DELETE FROM records WHERE id = ?", (record.id,))
            return True
        sets = {"tags": json.dumps(sorted(set(cleaned.tags))), "updated_at": when,
                **{k: changes[k] for k in ("project", "session", "kind") if k in changes}}
        if "text" in changes:
            sets.update(text=text, content_hash=digest,
                        embedding=np.ascontiguousarray(vector, dtype=np.float32).tobytes())
            # A long text's passage vectors were made from the old text (a record's go
            # through its trigger; a trashed one's here): `optimize` splits the new text.
            tx.execute("DELETE FROM passages WHERE record_id = ?", (record.id,))
        assignments = ", ".join(f"{k} = ?" for k in sets)
        tx.execute(f"UPDATE {table} SET {assignments} WHERE id = ?",
                     (*sets.values(), record.id))
        return False

    def forget_cached_text(self, tx: sqlite3.Connection, digest: str) -> int:
        """Delete the cached vectors of a text (by content hash), every model's; how many."""
        return tx.execute("DELETE FROM embed_cache WHERE text_hash = ?", (digest,)).rowcount

    def scrub(self) -> None:
        """Leave no removed text in the file: rebuild the keyword index from the texts now
        stored (its old segments held removed words), VACUUM, and empty the WAL."""
        with self.write() as conn:
            conn.execute("INSERT INTO records_fts(records_fts) VALUES ('rebuild')")
        self.conn.execute("VACUUM")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- passages of long records ----------------------------------------------------------

    def insert_passages(self, tx: sqlite3.Connection, record_id: int,
                        parts: Sequence[tuple[Passage, np.ndarray]], layer: str | None = None
                        ) -> None:
        """Write a record's passages (replacing any), inside a write transaction. ``layer``:
        log the record for its layer's index (needed when the record is not new)."""
        tx.execute("DELETE FROM passages WHERE record_id = ?", (record_id,))
        tx.executemany(
            "INSERT INTO passages (record_id, ordinal, start, end, embedding) "
            "VALUES (?, ?, ?, ?, ?)",
            [(record_id, p.ordinal, p.start, p.end,
              np.ascontiguousarray(v, dtype=np.float32).tobytes()) for p, v in parts])
        if layer is not None:
            tx.execute("INSERT INTO index_log(layer, record_id) VALUES (?, ?)",
                         (layer, record_id))

    def passage_vectors(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(record ids, vectors) of the passages after the first of these records: what a
        layer's index holds beside each record's own vector."""
        keys, blobs = [], []
        for chunk in _chunks(list(ids), 900):
            for rid, blob in self.conn.execute(
                    f"SELECT record_id, embedding FROM passages WHERE ordinal > 0 AND "
                    f"record_id IN ({_marks(chunk)})", chunk):
                keys.append(rid)
                blobs.append(blob)
        return np.array(keys, dtype=np.int64), _matrix(blobs, dim)

    def passages(self, ids: Iterable[int], dim: int
                 ) -> tuple[list[tuple[int, Passage]], np.ndarray]:
        """Every passage of those of ``ids`` that have some: (record id, passage) and the
        vectors, one row each."""
        rows: list[tuple[int, Passage]] = []
        blobs = []
        for chunk in _chunks(list(ids), 900):
            for rid, ordinal, start, end, blob in self.conn.execute(
                    f"SELECT record_id, ordinal, start, end, embedding FROM passages WHERE "
                    f"record_id IN ({_marks(chunk)})", chunk):
                rows.append((rid, Passage(ordinal, start, end)))
                blobs.append(blob)
        return rows, _matrix(blobs, dim)

    def unsplit(self, after: int, through: int, longer_than: int, limit: int
                ) -> list[tuple[int, str, str]]:
        """(id, text, layer) of up to ``limit`` records with ids in (after, through], texts
        longer than ``longer_than`` characters and no passages, by id."""
        return self.conn.execute(
            "SELECT id, text, layer FROM records WHERE id > ? AND id <= ? AND length(text) > ? "
            "AND NOT EXISTS (SELECT 1 FROM passages WHERE record_id = records.id) "
            "ORDER BY id LIMIT ?", (after, through, longer_than, limit)).fetchall()

    def forget_passages(self) -> None:
        """Drop every passage (benchmarks: a memory as magray stored long texts before it
        split them; ``passages.upgrade`` gives them back)."""
        with self.write() as tx:
            tx.execute("DELETE FROM passages")
            tx.execute("DELETE FROM meta WHERE key = 'passages_checked'")

    # -- sources: the files records were ingested from --------------------------------------

    def sources(self, ids: Iterable[int]) -> dict[int, Source]:
        """The source of each of ``ids`` that came from a file (the first path, if several)."""
        found: dict[int, Source] = {}
        for chunk in _chunks(list(dict.fromkeys(ids)), 900):
            for rid, path, a, b, body_at in self.conn.execute(
                    f"SELECT record_id, path, line_start, line_end, body_at FROM sources "
                    f"WHERE record_id IN ({_marks(chunk)}) ORDER BY path DESC", chunk):
                found[rid] = Source(path, a, b, body_at)
        return found

    def file_hashes(self, paths: Sequence[str]) -> dict[str, set[str]]:
        """The file hashes recorded for each of ``paths`` (several if a run was interrupted)."""
        found: dict[str, set[str]] = {}
        for chunk in _chunks(list(paths), 900):
            for path, digest in self.conn.execute(
                    f"SELECT DISTINCT path, file_hash FROM sources "
                    f"WHERE path IN ({_marks(chunk)})", chunk):
                found.setdefault(path, set()).add(digest)
        return found

    def records_from(self, path: str) -> dict[int, str]:
        """Record id -> content hash of the records ingested from ``path``."""
        return dict(self.conn.execute(
            "SELECT r.id, r.content_hash FROM sources s JOIN records r ON r.id = s.record_id "
            "WHERE s.path = ?", (path,)))

    def source_paths(self, prefixes: Sequence[str]) -> list[str]:
        """Every recorded path under one of the directory ``prefixes`` (or equal to one)."""
        found: list[str] = []
        for prefix in prefixes:
            base = prefix.rstrip("/")
            found += [row[0] for row in self.conn.execute(
                "SELECT DISTINCT path FROM sources WHERE path = ? OR substr(path, 1, ?) = ?",
                (base, len(base) + 1, base + "/"))]
        return sorted(set(found))

    def put_source(self, tx: sqlite3.Connection, record_id: int, source: Source,
                   file_hash: str) -> None:
        """Record that ``record_id`` holds these lines of a file, inside a write transaction."""
        tx.execute(
            "INSERT INTO sources (record_id, path, line_start, line_end, body_at, file_hash) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(record_id, path) DO UPDATE SET "
            "line_start = excluded.line_start, line_end = excluded.line_end, "
            "body_at = excluded.body_at, file_hash = excluded.file_hash",
            (record_id, source.path, source.line_start, source.line_end, source.body_at,
             file_hash))

    def drop_sources(self, tx: sqlite3.Connection, path: str,
                     record_ids: Sequence[int] | None = None) -> None:
        """Forget that ``path`` held these records (all of them when None), inside a write
        transaction."""
        if record_ids is None:
            tx.execute("DELETE FROM sources WHERE path = ?", (path,))
        else:
            tx.executemany("DELETE FROM sources WHERE path = ? AND record_id = ?",
                             [(path, rid) for rid in record_ids])

    def still_sourced(self, ids: Sequence[int]) -> set[int]:
        """Those of ``ids`` that some file still holds."""
        found: set[int] = set()
        for chunk in _chunks(list(ids), 900):
            found.update(r[0] for r in self.conn.execute(
                f"SELECT DISTINCT record_id FROM sources "
                f"WHERE record_id IN ({_marks(chunk)})", chunk))
        return found

    # -- issue 18, item 3 ------------------------------------------------------------------

    def database_bytes(self) -> int:
        """The database file and its write-ahead log, in bytes."""
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += self.path.with_name(self.path.name + suffix).stat().st_size
            except OSError:  # no WAL right after a checkpoint, or no file yet
                pass
        return total

    # -- issue 18, item 8 ------------------------------------------------------------------

    def insert_many(self, tx: sqlite3.Connection,
                    items: Sequence[tuple[NewRecord, np.ndarray | None]], when: str
                    ) -> list[tuple[int, bool]]:
        """``insert`` for each (item, vector), in order (one statement each on SQLite)."""
        return [self.insert(tx, item, vector, when) for item, vector in items]

    # -- issue 18, item 6 ------------------------------------------------------------------

    @contextmanager
    def lifecycle_lock(self) -> Iterator[None]:
        """Nothing to take on SQLite (see ``Repository.lifecycle_lock``)."""
        yield

    # -- status (issue 18, item 5) --------------------------------------------------------
    def server(self) -> None:
        """None: the database is a file (status measures it; no server to ask)."""
        return None

    def vector_indexes(self) -> None:
        """None: the vector indexes are the usearch files under the home's indexes/."""
        return None


# Words too common to say anything about a note; dropped from keyword queries unless the
# query holds nothing else.
STOPWORDS = frozenset("""
a about above after again all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers him his how i if in into is it its itself just me more
most my no nor not now of off on once only or other our out over own same she should so some
such than that the their them then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your
""".split())


def fts_query(text: str) -> str:
    """A safe FTS5 query for free text: each word quoted, OR-ed, stopwords dropped."""
    words = list(dict.fromkeys(w.lower() for w in re.findall(r"\w+", text)))
    useful = [w for w in words if w not in STOPWORDS] or words
    return " OR ".join('"' + w + '"' for w in useful)


def filter_sql(layers: Sequence[str], filters: Filters, table: str = "records"
               ) -> tuple[str, list]:
    """A WHERE clause (and its parameters) for layers and filters."""
    t = table
    clauses = [f"{t}.layer IN ({_marks(layers)})"]
    params: list = list(layers)
    for tag in filters.tags:
        clauses.append(f"EXISTS (SELECT 1 FROM json_each({t}.tags) WHERE json_each.value = ?)")
        params.append(tag)
    for column in ("project", "session", "kind"):
        value = getattr(filters, column)
        if value is not None:
            clauses.append(f"{t}.{column} = ?")
            params.append(value)
    if filters.since:
        clauses.append(f"{t}.created_at >= ?")
        params.append(filters.since)
    if filters.until:
        clauses.append(f"{t}.created_at <= ?")
        params.append(filters.until)
    if filters.source:
        base = filters.source.rstrip("/") or "/"
        clauses.append(f"EXISTS (SELECT 1 FROM sources s WHERE s.record_id = {t}.id AND "
                       f"(s.path = ? OR substr(s.path, 1, ?) = ?))")
        params += [base, len(base.rstrip("/")) + 1, base.rstrip("/") + "/"]
    return " AND ".join(clauses), params


def _prepare_private(path: Path) -> None:
    """Refuse symlinks planted at the database or its WAL/SHM files, and create a new
    database 0600 (SQLite gives the WAL and SHM files the database file's mode)."""
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if candidate.is_symlink():
            raise MagrayError(f"{candidate} is a symbolic link; refusing to write through it")
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        pass


def _source_table(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"no source of stored text named {source!r}")
    return source  # each source is the table of that name


def _record(row: Sequence) -> Record:
    values = list(row)
    values[4] = tuple(json.loads(values[4])) if values[4] != "[]" else ()
    return Record(*values)


def _matrix(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    matrix = np.frombuffer(b"".join(blobs), dtype=np.float32)
    if matrix.size != len(blobs) * dim:
        raise IntegrityError(f"stored vectors do not have the recorded dimension {dim}")
    return matrix.reshape(len(blobs), dim)


def _marks(values: Sequence) -> str:
    return ", ".join("?" * len(values))


def _chunks(values: list, size: int) -> Iterator[list]:
    for start in range(0, len(values), size):
        yield values[start:start + size]

