"""``PostgresStore``: the SQLite ``Store``'s methods, with its semantics, on PostgreSQL.

Transactions: ``write()`` is a transaction that first takes one advisory lock shared by
every magray client of the database, so writers serialise exactly as SQLite's ``BEGIN
IMMEDIATE`` makes them (a read-then-write inside never races another client); readers never
wait (MVCC). ``read()`` is one REPEATABLE READ snapshot. Lifecycle runs (``clean``,
``promote``) take a second, session-level lock: two machines running them at once take
turns. A connection that broke (the server restarted) is replaced at the next transaction.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import psycopg
from psycopg.pq import TransactionStatus

from ... import clock
from ...errors import BusyError, IntegrityError
from ...layers import access, join
from ...records import LAYERS, Filters, NewRecord, Record, Trashed
from ..base import Op, Unchanged, VectorNeeded
from . import query, schema
from .snapshot import PgSnapshots
from .upkeep import Upkeep
from .vectors import VectorIndexes
from .health import Status
from .connection import Vector, connect, register_vector, translate
from .target import Postgres

OPS_KEEP = 5_000  # as the SQLite store: recent operations kept for status's latency figures
WRITE_LOCK = 0x6D6167_7261_7902   # advisory lock keys ("magray" + n), one per purpose
LIFECYCLE_LOCK = 0x6D6167_7261_7903
RECORD_COLUMNS = ("id, text, layer, kind, tags, project, session, created_at, updated_at, "
                  "last_access, access_count, importance, content_hash")
WIDTH = len(RECORD_COLUMNS.split(","))
COPY_COLUMNS = ("id", "text", "layer", "kind", "tags", "project", "session", "created_at",
                "updated_at", "access_count", "importance", "content_hash", "embedding")
COPY_TYPES = ["int8", "text", "text", "text", "jsonb", "text", "text", "text", "text",
              "int4", "float8", "text", "vector"]


class PostgresStore(Upkeep, VectorIndexes, PgSnapshots, Status):
    """An open magray memory on a PostgreSQL server."""

    RECORD_COLUMNS = RECORD_COLUMNS
    WRITE_LOCK = WRITE_LOCK  # what snapshot.PgSnapshots.exclusive holds

    def __init__(self, target: Postgres, busy_timeout: float = 60.0):
        self.target = target
        self.path = target.host  # what messages name, as the SQLite store names its file
        self.busy_timeout = busy_timeout
        self._conn: psycopg.Connection | None = None
        self._store_id: str | None = None
        self.ef_search: int | None = None
        self._index_spec: str | None = None  # meta vector_index: the cast searches use

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, target: Postgres, *, busy_timeout: float = 60.0) -> "PostgresStore":
        """Connect (creating the schema on a new database, migrating an old one)."""
        store = cls(target, busy_timeout)
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
        return store

    def migrate(self) -> None:
        """Apply the migrations this database lacks (on open; after a restore)."""
        with self._guard():
            schema.migrate(self.conn, uuid.uuid4().hex)
            register_vector(self.conn)

    @classmethod
    def open_readonly(cls, target: Postgres, *, busy_timeout: float = 60.0
                      ) -> "PostgresStore":
        """Connect for reading only (``magray status``): no migration, and the session
        refuses every write."""
        store = cls(target, busy_timeout)
        store.readonly = True
        store.conn  # connect now: an unreachable server fails here, in one line
        return store

    readonly = False

    @property
    def conn(self) -> psycopg.Connection:
        """The connection, made again when the last one broke (a server restart)."""
        if self._conn is None or self._conn.broken or self._conn.closed:
            if self._conn is not None:
                self._conn.close()
            self._conn = connect(self.target)
            self._configure(self._conn)
        return self._conn

    def _configure(self, tx: psycopg.Connection) -> None:
        with self._guard():
            # a lock held too long (another client's write) becomes BusyError, as in SQLite
            tx.execute(f"SET lock_timeout = '{int(self.busy_timeout * 1000)}ms'")
            tx.execute("SET hnsw.iterative_scan = strict_order")  # filters never starve
            if self.ef_search:
                tx.execute(f"SET hnsw.ef_search = {int(self.ef_search)}")
            if tx.execute("SELECT to_regtype('vector') IS NOT NULL").fetchone()[0]:
                register_vector(tx)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """psycopg's operational failures as magray's one-line errors."""
        try:
            yield
        except psycopg.Error as exc:
            error = translate(exc, self.target)
            if error is exc:
                raise
            raise error from None

    def _run(self, sql: str, params: Sequence | None = None, *, binary: bool = False,
             conn: psycopg.Connection | None = None) -> psycopg.Cursor:
        """Execute a statement. Outside a transaction, a connection found dead (the server
        restarted since its last use) is replaced and the statement sent once more: nothing
        was in flight on it, so nothing runs twice."""
        used = conn or self.conn
        idle = used.info.transaction_status == TransactionStatus.IDLE
        with self._guard():
            try:
                return used.cursor(binary=binary).execute(sql, params)
            except psycopg.OperationalError:
                if conn is not None or not idle or not used.broken:
                    raise
            return self.conn.cursor(binary=binary).execute(sql, params)

    def _one_record(self, table: str, record_id: int, tx: psycopg.Connection,
                    layer: str | None = None) -> Record | None:
        """One row of ``records`` or ``trash`` (only if in ``layer``), inside ``tx``."""
        sql, params = f"SELECT {RECORD_COLUMNS} FROM {table} WHERE id = %s", [record_id]
        if layer is not None:
            sql, params = sql + " AND layer = %s", params + [layer]
        row = self._run(sql, params, conn=tx).fetchone()
        return _record(row) if row else None

    @staticmethod
    def _to_record(row: Sequence) -> Record:
        return _record(row)

    @staticmethod
    def _tags(tags: Iterable[str]) -> str:
        return _tags(tags)

    @staticmethod
    def _vectors_matrix(vectors: Sequence[np.ndarray], dim: int) -> np.ndarray:
        return _matrix(vectors, dim)

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[psycopg.Connection]:
        """A write transaction holding the database's write lock (waiting up to the busy
        timeout for another client's, then BusyError)."""
        self._run("SELECT 1")  # a connection that died since its last use is replaced now
        conn = self.conn
        with self._guard(), conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            yield conn

    @contextmanager
    def read(self) -> Iterator[psycopg.Connection]:
        """A read transaction: one consistent snapshot for several queries."""
        self._run("SELECT 1")
        conn = self.conn
        with self._guard(), conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    @contextmanager
    def lifecycle_lock(self) -> Iterator[None]:
        """Held for a whole lifecycle run: a second machine's run waits its turn (up to the
        busy timeout, then BusyError) instead of judging the same records at once."""
        deadline = time.monotonic() + self.busy_timeout
        while not self._run("SELECT pg_try_advisory_lock(%s)", (LIFECYCLE_LOCK,)).fetchone()[0]:
            if time.monotonic() >= deadline:
                raise BusyError(f"another magray client is running clean or promote on "
                                f"{self.target.host}; try again, or raise busy_timeout")
            time.sleep(0.05)
        try:
            yield
        finally:
            if not self.conn.broken:
                self._run("SELECT pg_advisory_unlock(%s)", (LIFECYCLE_LOCK,))

    # -- metadata -------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._run("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, tx: psycopg.Connection, key: str, value: str) -> None:
        self._run("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET "
                  "value = excluded.value", (key, value), conn=tx)

    def reloaded(self) -> None:
        """Forget what was read once and kept: a restore replaced the database."""
        self._store_id = None
        self._index_spec = None

    @property
    def store_id(self) -> str:
        if not self._store_id:
            self._store_id = self.meta("store_id")
        return self._store_id or ""

    def tables(self) -> set[str]:
        return {row[0] for row in self._run(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}

    def count(self, layer: str) -> int:
        return self._run("SELECT count(*) FROM records WHERE layer = %s", (layer,)
                         ).fetchone()[0]

    def log_head(self, layer: str) -> int:
        """The newest index-log sequence for a layer (0 when nothing was ever logged)."""
        return self._run(
            "SELECT greatest(coalesce((SELECT max(seq) FROM index_log WHERE layer = %s), 0), "
            "coalesce((SELECT value::bigint FROM meta WHERE key = %s), 0))",
            (layer, f"log_pruned:{layer}")).fetchone()[0]

    def log_pruned_through(self, layer: str) -> int:
        return int(self.meta(f"log_pruned:{layer}") or 0)

    # -- records --------------------------------------------------------------------------

    def existing(self, layer: str, hashes: Sequence[str]) -> set[str]:
        """The content hashes among ``hashes`` already stored in ``layer``."""
        return {r[0] for r in self._run(
            "SELECT content_hash FROM records WHERE layer = %s AND content_hash = ANY(%s)",
            (layer, list(hashes)))}

    def insert(self, tx: psycopg.Connection, item: NewRecord, vector: np.ndarray | None,
               when: str) -> tuple[int, bool]:
        """Insert one record inside a write transaction, or count a duplicate (the same text
        in the same layer) as an access. Returns (id, duplicate); see Store.insert."""
        row = self._run("SELECT id FROM records WHERE layer = %s AND content_hash = %s",
                        (item.layer, item.content_hash), conn=tx).fetchone()
        if row:
            self.merge(tx, row[0], item, when)
            return row[0], True
        if vector is None:
            raise VectorNeeded(item.text)
        created = clock.iso(clock.parse_time(item.created_at)) if item.created_at else when
        cursor = self._run(
            "INSERT INTO records (text, layer, kind, tags, project, session, created_at, "
            "updated_at, last_access, access_count, importance, content_hash, embedding) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, NULL, 0, %s, %s, %s) RETURNING id",
            (item.text, item.layer, item.kind, _tags(item.tags), item.project, item.session,
             created, when, item.importance, item.content_hash, Vector(vector)), conn=tx)
        return cursor.fetchone()[0], False

    def insert_many(self, tx: psycopg.Connection,
                    items: Sequence[tuple[NewRecord, np.ndarray | None]], when: str
                    ) -> list[tuple[int, bool]]:
        """``insert`` for a batch, new records sent with one binary COPY; (id, duplicate) per
        item, in order. A text twice in the batch is one record and one access."""
        existing = dict(self._run(
            "SELECT content_hash || ':' || layer, id FROM records WHERE "
            "(layer, content_hash) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([i.layer for i, _ in items], [i.content_hash for i, _ in items]), conn=tx
        ).fetchall())
        fresh, seen = [], set(existing)
        for item, vector in items:
            if _key(item) not in seen:
                seen.add(_key(item))
                fresh.append((item, vector))
        ids = [r[0] for r in self._run("SELECT nextval('records_id_seq') FROM "
                                       "generate_series(1, %s)", (len(fresh),), conn=tx)]
        with self._guard(), tx.cursor() as cursor, cursor.copy(
                f"COPY records ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(COPY_TYPES)
            for record_id, (item, vector) in zip(ids, fresh):
                if vector is None:
                    raise VectorNeeded(item.text)
                created = (clock.iso(clock.parse_time(item.created_at)) if item.created_at
                           else when)
                copy.write_row((record_id, item.text, item.layer, item.kind, sorted(set(item.tags)),
                                item.project, item.session, created, when, 0,
                                item.importance, item.content_hash, Vector(vector)))
        assigned = {**existing, **{_key(i): rid for rid, (i, _) in zip(ids, fresh)}}
        pending, result = {_key(i) for i, _ in fresh}, []
        for item, _ in items:
            rid = assigned[_key(item)]
            if _key(item) in pending:
                pending.discard(_key(item))
                result.append((rid, False))
            else:
                self.merge(tx, rid, item, when)
                result.append((rid, True))
        return result

    def merge(self, tx: psycopg.Connection, record_id: int, item: NewRecord, when: str
              ) -> bool:
        """Count ``item`` (its text stored again) as an access of the record, joined by the
        one rule (``layers.join``); False when the record is no longer in the item's layer."""
        row = self._run(f"SELECT {RECORD_COLUMNS} FROM records WHERE id = %s AND layer = %s "
                        "FOR UPDATE", (record_id, item.layer), conn=tx).fetchone()
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
                self._run("UPDATE records SET access_count = access_count + 1, "
                          "last_access = %s WHERE id = ANY(%s)",
                          (clock.now_iso(), list(ids)), conn=conn)
            if op is not None:
                self.record_op(conn, op)

    def record_op(self, tx: psycopg.Connection, op: Op) -> None:
        """Log a finished operation inside a write transaction; keep the last OPS_KEEP."""
        seconds = time.perf_counter() - op.started
        row_id = self._run(
            "INSERT INTO ops (op, finished_at, seconds, items, cache_hits, cache_misses) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (op.name, clock.now_iso(), seconds, op.items, op.cache_hits, op.cache_misses),
            conn=tx).fetchone()[0]
        self._run("DELETE FROM ops WHERE id <= %s", (row_id - OPS_KEEP,), conn=tx)
        self._run(
            "INSERT INTO op_totals VALUES (%s, 1, %s, %s, %s, %s) ON CONFLICT (op) DO UPDATE "
            "SET count = op_totals.count + 1, seconds = op_totals.seconds + excluded.seconds, "
            "items = op_totals.items + excluded.items, "
            "cache_hits = op_totals.cache_hits + excluded.cache_hits, "
            "cache_misses = op_totals.cache_misses + excluded.cache_misses",
            (op.name, seconds, op.items, op.cache_hits, op.cache_misses), conn=tx)

    def records(self, ids: Sequence[int]) -> dict[int, Record]:
        """Records by id (missing ids are simply absent)."""
        rows = self._run(f"SELECT {RECORD_COLUMNS} FROM records WHERE id = ANY(%s)",
                         (_ids(ids),))
        return {row[0]: _record(row) for row in rows}

    def records_and_vectors(self, ids: Sequence[int], dim: int
                            ) -> tuple[dict[int, Record], np.ndarray]:
        """Records by id and their vectors (rows in the dict's order), in one read."""
        rows = self._run(f"SELECT {RECORD_COLUMNS}, embedding FROM records WHERE id = ANY(%s)",
                         (_ids(ids),), binary=True).fetchall()
        return {r[0]: _record(r[:WIDTH]) for r in rows}, _matrix([r[-1] for r in rows], dim)

    def vectors(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids that exist, their vectors as a matrix), in the order the database returns."""
        rows = self._run("SELECT id, embedding FROM records WHERE id = ANY(%s)", (_ids(ids),),
                         binary=True).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64), _matrix([r[1] for r in rows],
                                                                       dim)

    def layer_vectors(self, layer: str, dim: int, batch: int = 8192
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every (ids, vectors) of a layer, in batches by id (keyset: no cursor held open)."""
        after = 0
        while rows := self._run("SELECT id, embedding FROM records WHERE layer = %s AND "
                                "id > %s ORDER BY id LIMIT %s", (layer, after, batch),
                                binary=True).fetchall():
            after = rows[-1][0]
            yield (np.array([r[0] for r in rows], dtype=np.int64),
                   _matrix([r[1] for r in rows], dim))

    # -- whole records: list, export, import, forget --------------------------------------

    def recent(self, layers: Sequence[str], filters: Filters, limit: int | None) -> list[Record]:
        """Records in ``layers`` passing ``filters``, newest first."""
        where, params = query.filter_sql(layers, filters)
        sql = f"SELECT {RECORD_COLUMNS} FROM records WHERE {where} ORDER BY created_at DESC, " \
              "id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_record(row) for row in self._run(sql, params)]

    def dump(self, layers: Sequence[str], filters: Filters, *, vectors: bool = False,
             by_layer: bool = False, batch: int = 512) -> Iterator[tuple[Record, bytes | None]]:
        """Every matching record with its raw float32 vector (None unless ``vectors``), by id
        or layer by layer (short-lived first) then by id; fetched in keyset batches. Read
        inside ``read()`` for one consistent snapshot."""
        columns = RECORD_COLUMNS + (", embedding" if vectors else "")
        for group in ([[layer] for layer in LAYERS if layer in layers] if by_layer
                      else [list(layers)]):
            where, params = query.filter_sql(group, filters)
            after = 0
            while rows := self._run(f"SELECT {columns} FROM records WHERE {where} AND id > %s "
                                    f"ORDER BY id LIMIT %s", (*params, after, batch),
                                    binary=vectors).fetchall():
                after = rows[-1][0]
                for row in rows:
                    yield _record(row[:WIDTH]), (_blob(row[WIDTH]) if vectors else None)

    def find(self, tx: psycopg.Connection, layer: str, digest: str) -> Record | None:
        """The record holding the text with this hash in this layer, if any."""
        row = self._run(f"SELECT {RECORD_COLUMNS} FROM records WHERE layer = %s AND "
                        f"content_hash = %s", (layer, digest), conn=tx).fetchone()
        return _record(row) if row else None

    def issued_through(self) -> int:
        """The highest record id this store ever issued (a sequence never reissues one)."""
        return self._run("SELECT CASE WHEN is_called THEN last_value ELSE 0 END "
                         "FROM records_id_seq").fetchone()[0]

    def insert_record(self, tx: psycopg.Connection, record: Record, vector: np.ndarray) -> int:
        """Insert a complete record as given, inside a write transaction; its id is kept
        when this store never issued it (the sequence then moves past it), else a new one."""
        keep = record.id if record.id and record.id > self.issued_through() else None
        if keep:
            self._run("SELECT setval('records_id_seq', %s)", (keep,), conn=tx)
        return self._run(
            "INSERT INTO records (id, text, layer, kind, tags, project, session, created_at, "
            "updated_at, last_access, access_count, importance, content_hash, embedding) "
            "VALUES (coalesce(%s, nextval('records_id_seq')), %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s, %s, %s) RETURNING id",
            (keep, record.text, record.layer, record.kind, _tags(record.tags), record.project,
             record.session, record.created_at, record.updated_at, record.last_access,
             record.access_count, record.importance, record.content_hash, Vector(vector)),
            conn=tx).fetchone()[0]

    def update_metadata(self, tx: psycopg.Connection, record: Record) -> None:
        """Overwrite a record's metadata (not its text, layer or vector) by id."""
        self._run(
            "UPDATE records SET kind = %s, tags = %s, project = %s, session = %s, "
            "created_at = %s, updated_at = %s, last_access = %s, access_count = %s, "
            "importance = %s WHERE id = %s",
            (record.kind, _tags(record.tags), record.project, record.session,
             record.created_at, record.updated_at, record.last_access, record.access_count,
             record.importance, record.id), conn=tx)

    def delete(self, tx: psycopg.Connection, ids: Sequence[int]) -> None:
        """Delete records inside a write transaction; the triggers log them for the indexes."""
        self._run("DELETE FROM records WHERE id = ANY(%s)", (_ids(ids),), conn=tx)

    # -- the trash ------------------------------------------------------------------------

    def trash(self, tx: psycopg.Connection, record_id: int, reason: str, when: str, *,
              merged_into: int | None = None, unchanged: Unchanged | None = None) -> bool:
        """Move one record to the trash inside a write transaction; with ``unchanged``, only
        if it is still in that layer with that access count and last access. Leaving
        ``records`` fires the same triggers as a delete. False when it was not moved."""
        where, params = "true", ()
        if unchanged is not None:
            where = "layer = %s AND access_count = %s AND last_access IS NOT DISTINCT FROM %s"
            params = (unchanged.layer, unchanged.access_count, unchanged.last_access)
        moved = self._run(
            f"INSERT INTO trash ({RECORD_COLUMNS}, embedding, model, trashed_at, reason, "
            f"merged_into) SELECT {RECORD_COLUMNS}, embedding, "
            f"(SELECT value FROM meta WHERE key = 'model_key'), %s, %s, %s FROM records "
            f"WHERE id = %s AND {where} ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in _TRASH_COLUMNS),
            (when, reason, merged_into, record_id, *params), conn=tx).rowcount
        if not moved:
            return False
        self._run("DELETE FROM records WHERE id = %s", (record_id,), conn=tx)
        return True

    def trashed(self, ids: Sequence[int] | None = None) -> list[Trashed]:
        """Records in the trash (those of ``ids``, or all), most recently trashed first."""
        sql = f"SELECT {RECORD_COLUMNS}, trashed_at, reason, merged_into FROM trash"
        params: tuple = ()
        if ids is not None:
            sql, params = sql + " WHERE id = ANY(%s)", (_ids(ids),)
        return [Trashed(_record(row[:WIDTH]), *row[WIDTH:]) for row in
                self._run(sql + " ORDER BY trashed_at DESC, id DESC", params)]

    def untrash(self, tx: psycopg.Connection, record_id: int, vector: bytes | None = None,
                accessed: str | None = None) -> None:
        """Put a trashed record back under its own id, inside a write transaction
        (``vector``: a replacement float32 vector; ``accessed``: its new last access)."""
        columns = RECORD_COLUMNS.replace("last_access", "coalesce(%s, last_access)")
        replacement = Vector(np.frombuffer(vector, dtype=np.float32)) if vector else None
        self._run(f"INSERT INTO records ({RECORD_COLUMNS}, embedding) SELECT {columns}, "
                  f"coalesce(%s::vector, embedding) FROM trash WHERE id = %s",
                  (accessed, replacement, record_id), conn=tx)
        self._run("DELETE FROM trash WHERE id = %s", (record_id,), conn=tx)

    def trash_vectors(self, ids: Sequence[int]) -> dict[int, tuple[bytes, str | None]]:
        """(raw float32 vector, model key that made it) of trashed records."""
        return {row[0]: (_blob(row[1]), row[2]) for row in self._run(
            "SELECT id, embedding, model FROM trash WHERE id = ANY(%s)", (_ids(ids),),
            binary=True)}

    def purge_trash(self, tx: psycopg.Connection, ids: Sequence[int]) -> int:
        """Destroy these trashed records for good, inside a write transaction; how many."""
        return self._run("DELETE FROM trash WHERE id = ANY(%s)", (_ids(ids),),
                         conn=tx).rowcount

    def filtered_ids(self, layers: Sequence[str], filters: Filters, limit: int | None = None
                     ) -> list[int]:
        """Ids of records in ``layers`` that pass ``filters``."""
        where, params = query.filter_sql(layers, filters)
        sql = f"SELECT id FROM records WHERE {where}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [row[0] for row in self._run(sql, params)]

    # -- search ---------------------------------------------------------------------------

    def keyword_search(self, text: str, layers: Sequence[str], filters: Filters, limit: int
                       ) -> list[tuple[int, float]]:
        """(id, relevance) of the records holding words of ``text`` by BM25, best first,
        higher is better; the words chosen as the SQLite store chooses them (``fts_query``:
        lower-cased, stopwords dropped unless nothing else is left)."""
        from ..store import fts_query

        words = query.match_words(fts_query(text))
        if not words:
            return []
        tsquery = self._run(query.tsquery_sql(words), words).fetchone()[0]
        if not tsquery:  # words the tokenizer drops entirely (punctuation only)
            return []
        where, params = query.filter_sql(layers, filters, table="r")
        rows = self._run(query.keyword_sql(where),
                         (" ".join(words), tsquery, *params, limit))
        return [(row[0], float(row[1])) for row in rows]

    def passing(self, ids: Iterable[int], layer: str, filters: Filters) -> list[int]:
        """Those of ``ids`` whose record is in ``layer`` and passes ``filters``."""
        where, params = query.filter_sql([layer], filters)
        return [r[0] for r in self._run(f"SELECT id FROM records WHERE id = ANY(%s) AND {where}",
                                        (_ids(ids), *params))]

    def model_meta(self, tx: psycopg.Connection | None = None
                   ) -> tuple[str | None, int | None]:
        """(model key, dimension) the stored vectors were made with; (None, None) before any
        (read in ``tx`` for the check that must not race a write)."""
        found = dict(self._run("SELECT key, value FROM meta WHERE key IN ('model_key', 'dim')",
                               conn=tx).fetchall())
        return found.get("model_key"), int(found["dim"]) if found.get("dim") else None

    def ensure_vector_index(self, dim: int, dtype: str = "f32", m: int = 16,
                            ef_construction: int = 200) -> bool:
        """Make each layer's HNSW index for this dimension and dtype (halfvec for f16),
        replacing one built for others; True when one was (re)built. Built outside a write
        transaction: building locks out writers of the table, not readers."""
        cast, ops = query.vector_type(dtype, dim)
        spec = f"{cast} m={int(m)} ef_construction={int(ef_construction)}"
        if self.meta("vector_index") == spec:
            return False
        with self.write() as conn:
            # an HNSW graph built in memory is many times faster than one spilled to disk
            self._run("SET LOCAL maintenance_work_mem = '256MB'", conn=conn)
            for layer in LAYERS:
                name = query.index_name(layer)
                self._run(f"DROP INDEX IF EXISTS {name}", conn=conn)
                self._run(f"CREATE INDEX {name} ON records USING hnsw ((embedding::{cast}) "
                          f"{ops}) WITH (m = {int(m)}, ef_construction = "
                          f"{int(ef_construction)}) WHERE layer = '{layer}'", conn=conn)
            self.set_meta(conn, "vector_index", spec)
        self._index_spec = spec
        self._run("ANALYZE records")  # a planner that knows the table uses the index
        return True

    def nearest(self, layer: str, vector: np.ndarray, k: int, filters: Filters = Filters(),
                ) -> list[tuple[int, float]]:
        """The ``k`` records of ``layer`` nearest ``vector`` that pass ``filters``, (id,
        inner product) best first, through the layer's HNSW index (iterative scans keep
        going until ``k`` pass the filters)."""
        if self._index_spec is None:  # read once: a search should cost one round trip
            self._index_spec = self.meta("vector_index")
        cast = (self._index_spec or f"vector({len(vector)})").split()[0]
        where, params = query.filter_sql(None, filters)
        rows = self._run(
            f"SELECT id, -(embedding::{cast} <#> %s::{cast}) FROM records "
            f"WHERE layer = '{query.check_layer(layer)}' AND {where} "
            f"ORDER BY embedding::{cast} <#> %s::{cast} LIMIT %s",
            (Vector(vector), *params, Vector(vector), k))
        return [(row[0], float(row[1])) for row in rows]

    def set_ef_search(self, ef_search: int) -> None:
        """HNSW expansion for this session's searches (pgvector's hnsw.ef_search)."""
        self.ef_search = int(ef_search)
        self._run(f"SET hnsw.ef_search = {self.ef_search}")

    # -- the index log --------------------------------------------------------------------

    def changed_since(self, layer: str, seq: int) -> tuple[list[int], int]:
        """Record ids whose vector entered or left ``layer`` after ``seq``, and the new head."""
        rows = self._run("SELECT seq, record_id FROM index_log WHERE layer = %s AND seq > %s "
                         "ORDER BY seq", (layer, seq)).fetchall()
        head = rows[-1][0] if rows else seq
        return sorted({r[1] for r in rows}), head

    def ids_in_layer(self, ids: Sequence[int], layer: str) -> list[int]:
        return [r[0] for r in self._run("SELECT id FROM records WHERE id = ANY(%s) AND "
                                        "layer = %s", (_ids(ids), layer))]

    def prune_log(self, layer: str, through: int) -> int:
        """Forget log rows an index has saved (they are never needed again); how many."""
        if through <= self.log_pruned_through(layer):
            return 0
        with self.write() as conn:
            pruned = self._run("DELETE FROM index_log WHERE layer = %s AND seq <= %s",
                               (layer, through), conn=conn).rowcount
            self.set_meta(conn, f"log_pruned:{layer}", str(through))
        return pruned

    # -- the embedding cache --------------------------------------------------------------

    def cached_vectors(self, model: str, hashes: Sequence[str], dim: int,
                       used_before: str = "") -> tuple[dict[str, np.ndarray], list[str]]:
        """(vectors cached for these text hashes, the hashes among them last used before
        ``used_before``)."""
        found, stale = {}, []
        for digest, blob, used in self._run(
                "SELECT text_hash, vector, last_used FROM embed_cache WHERE model = %s "
                "AND text_hash = ANY(%s)", (model, list(hashes))):
            if len(blob) == dim * 4:
                found[digest] = np.frombuffer(blob, dtype=np.float32)
                if used < used_before:
                    stale.append(digest)
        return found, stale

    def touch_cache(self, model: str, hashes: Sequence[str], when: str) -> None:
        """Mark cache entries as used at ``when`` (LRU pruning reads it)."""
        if hashes:
            with self.write() as conn:
                self._run("UPDATE embed_cache SET last_used = %s WHERE model = %s AND "
                          "text_hash = ANY(%s)", (when, model, list(hashes)), conn=conn)

    def cache_vectors(self, tx: psycopg.Connection, model: str,
                      items: Iterable[tuple[str, np.ndarray]], when: str) -> None:
        rows = [(model, digest, np.asarray(vec, dtype=np.float32).tobytes(), when)
                for digest, vec in items]
        if rows:
            with self._guard(), tx.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO embed_cache VALUES (%s, %s, %s, %s) ON CONFLICT "
                    "(model, text_hash) DO UPDATE SET last_used = excluded.last_used", rows)

    # -- the server -----------------------------------------------------------------------

    def database_bytes(self) -> int:
        """The database's size on the server (what ``optimize`` reports before and after;
        the SQLite engine measures its file: the boundary lacks this method yet)."""
        return self._run("SELECT pg_database_size(current_database())").fetchone()[0]

    def server_facts(self) -> dict[str, Any]:
        """What ``status`` reports of the server: its address, round-trip latency,
        PostgreSQL and pgvector versions."""
        started = time.perf_counter()
        self._run("SELECT 1").fetchone()
        latency = time.perf_counter() - started
        version, vector = self._run(
            "SELECT current_setting('server_version'), "
            "(SELECT extversion FROM pg_extension WHERE extname = 'vector')").fetchone()
        return {"server": self.target.host, "latency_seconds": latency,
                "postgresql": version, "pgvector": vector}


_TRASH_COLUMNS = [c.strip() for c in RECORD_COLUMNS.split(",")][1:] + [
    "embedding", "model", "trashed_at", "reason", "merged_into"]


def _key(item: NewRecord) -> str:
    return f"{item.content_hash}:{item.layer}"


def _tags(tags: Iterable[str]) -> str:
    return json.dumps(sorted(set(tags)))


def _ids(ids: Iterable[int]) -> list[int]:
    return [int(i) for i in ids]


def _record(row: Sequence) -> Record:
    values = list(row)
    values[4] = tuple(values[4])
    values[11] = float(values[11])
    return Record(*values)


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _matrix(vectors: Sequence[np.ndarray], dim: int) -> np.ndarray:
    if not vectors:
        return np.zeros((0, dim), dtype=np.float32)
    if any(len(v) != dim for v in vectors):
        raise IntegrityError(f"stored vectors do not have the recorded dimension {dim}")
    return np.vstack(vectors).astype(np.float32, copy=False)
