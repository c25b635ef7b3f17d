"""Backups and restores of a PostgreSQL memory, in the SQLite engine's archive format.

An archive holds a SQLite database whatever the engine (``magray/backup/``), so that
``verify`` reads every archive the same way and any archive restores into either engine:

* ``snapshot_to`` reads the whole memory in ONE REPEATABLE READ transaction (records,
  vectors, the trash, passages, sources, the embedding cache, the index log, the operation
  log, metadata with the recorded model and dimension) and writes it into a new SQLite file
  made by the SQLite engine's own migrations: the same schema, rows and ids, and the
  sequences (``sqlite_sequence``) where PostgreSQL's stand, so no id is ever issued twice.
* ``load_snapshot`` replaces the memory with an archive's SQLite database in ONE write
  transaction (all or nothing: a failure leaves it as it was). Readers see the old memory
  until the commit. The index log is not taken from the archive: the load is declared
  pruned through a new sequence, so every client's local index cache (other machines'
  too) sees that it is stale and rebuilds from the loaded vectors.

``PgSnapshots`` gives ``PostgresStore`` these methods (the repository's "backup" block).
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ...errors import BusyError, IntegrityError
from ...records import LAYERS
from .connection import Vector
from .query import index_name

BATCH = 2000  # rows per round trip, each way
PG_ONLY_META = ("vector_index",)  # describes this server's HNSW indexes, not the data
RECORD = ("id", "text", "layer", "kind", "tags", "project", "session", "created_at",
          "updated_at", "last_access", "access_count", "importance", "content_hash")


class Table:
    """One table as both engines hold it: its columns, which are vectors (pgvector there, a
    float32 BLOB here) and which is the JSON tag list (jsonb there, JSON text here)."""

    def __init__(self, name: str, columns: tuple[str, ...], order: str,
                 vectors: tuple[str, ...] = (), pg_types: tuple[str, ...] = ()):
        self.name, self.columns, self.order = name, columns, order
        self.vectors = {columns.index(c) for c in vectors}
        self.tags = columns.index("tags") if "tags" in columns else None
        self.pg_types = list(pg_types)

    def quoted(self) -> str:
        return ", ".join(f'"{c}"' for c in self.columns)

    def to_sqlite(self, row: tuple) -> tuple:
        values = list(row)
        for i in self.vectors:
            if values[i] is not None:
                values[i] = np.ascontiguousarray(values[i], dtype=np.float32).tobytes()
        if self.tags is not None:
            values[self.tags] = json.dumps(sorted(set(values[self.tags])))
        return tuple(values)

    def to_pg(self, row: tuple) -> tuple:
        values = list(row)
        for i in self.vectors:
            if values[i] is not None:
                values[i] = Vector(np.frombuffer(values[i], dtype=np.float32))
        if self.tags is not None:
            values[self.tags] = sorted(set(json.loads(values[self.tags])))
        return tuple(values)


_RECORD_TYPES = ("int8", "text", "text", "text", "jsonb", "text", "text", "text", "text",
                 "text", "int4", "float8", "text")
TABLES = (  # the order a load writes them in (a row's record before its passages)
    Table("meta", ("key", "value"), "key", pg_types=("text", "text")),
    Table("records", RECORD + ("embedding", "pending_embedding"), "id",
          ("embedding", "pending_embedding"), _RECORD_TYPES + ("vector", "vector")),
    Table("trash", RECORD + ("embedding", "model", "trashed_at", "reason", "merged_into"), "id",
          ("embedding",), _RECORD_TYPES + ("vector", "text", "text", "text", "int8")),
    Table("passages", ("record_id", "ordinal", "start", "end", "embedding",
                       "pending_embedding"), "record_id, ordinal",
          ("embedding", "pending_embedding"), ("int8", "int4", "int4", "int4", "vector",
                                               "vector")),
    Table("sources", ("record_id", "path", "line_start", "line_end", "body_at", "file_hash"),
          "record_id, path", pg_types=("int8", "text", "int4", "int4", "int4", "text")),
    Table("embed_cache", ("model", "text_hash", "vector", "last_used"), "model, text_hash",
          pg_types=("text", "text", "bytea", "text")),
    Table("ops", ("id", "op", "finished_at", "seconds", "items", "cache_hits",
                  "cache_misses"), "id",
          pg_types=("int8", "text", "text", "float8", "int4", "int4", "int4")),
    Table("op_totals", ("op", "count", "seconds", "items", "cache_hits", "cache_misses"),
          "op", pg_types=("text", "int8", "float8", "int8", "int8", "int8")),
)
# PostgreSQL sequence -> SQLite's AUTOINCREMENT counter of the same table
SEQUENCES = {"records_id_seq": "records", "index_log_seq_seq": "index_log", "ops_id_seq": "ops"}


class PgSnapshots:
    """The repository's "backup" methods on PostgreSQL (mixed into ``PostgresStore``, whose
    ``read``, ``write``, ``_run`` and ``_guard`` they use)."""

    def snapshot_to(self, target: Path) -> dict:
        """The whole memory from one REPEATABLE READ snapshot, as a SQLite database of the
        SQLite engine's schema at ``target``, integrity-checked; its facts."""
        from .. import migrations
        from ..connection import connect
        from ..snapshot import database_facts

        copy = connect(target)  # a full disk while writing is one line naming the cause
        try:
            copy.execute("PRAGMA synchronous=OFF")  # a scratch file: the archive gets the fsync
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            copy.execute("BEGIN")
            migrations.apply(copy)
            with self.read() as tx:
                _copy_out(tx, copy)
            copy.execute("COMMIT")
            problems = copy.execute("PRAGMA integrity_check").fetchall()
            if problems != [("ok",)]:
                raise IntegrityError(f"the snapshot of {self.path} failed integrity_check "
                                     f"({problems[0][0]}); no backup was written")
            return database_facts(copy)
        finally:
            copy.close()

    def contents(self) -> tuple[dict[str, int], int]:
        """The records per layer and the records in the trash, from one snapshot."""
        with self.read() as tx:
            counts = dict.fromkeys(LAYERS, 0)
            for layer, n in self._run("SELECT layer, count(*) FROM records GROUP BY layer",
                                      conn=tx):
                if layer in counts:
                    counts[layer] = n
            return counts, self._run("SELECT count(*) FROM trash", conn=tx).fetchone()[0]

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the write lock every client's ``write()`` takes, for the whole block (a
        session lock: this session's own writes still pass). Readers go on (MVCC)."""
        deadline = time.monotonic() + self.busy_timeout
        while not self._run("SELECT pg_try_advisory_lock(%s)", (self.WRITE_LOCK,)).fetchone()[0]:
            if time.monotonic() >= deadline:
                raise BusyError(f"another magray client kept writing to {self.path}; stop it "
                                "and restore again. Nothing was changed")
            time.sleep(0.05)
        try:
            yield
        finally:
            if not self.conn.broken:
                self._run("SELECT pg_advisory_unlock(%s)", (self.WRITE_LOCK,))

    def prepare_load(self, staged: Path) -> None:
        """Bring the staged copy to this magray's schema (an older archive lacks tables)."""
        from .. import migrations
        from ..connection import connect

        conn = connect(staged)
        try:
            conn.execute("BEGIN IMMEDIATE")
            migrations.apply(conn)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def load_snapshot(self, staged: Path, timeout: float) -> bool:
        """Replace the memory with the staged SQLite database in one write transaction."""
        self.prepare_load(staged)  # idempotent; a caller that skipped it loses nothing
        source = sqlite3.connect(f"file:{staged}?mode=ro", uri=True)
        try:
            with self.write() as tx:
                _replace(self, tx, source)
        finally:
            source.close()
        self.reloaded()
        return False  # the archived index files describe another log: rebuild


def _copy_out(tx: Any, copy: sqlite3.Connection) -> None:
    """Every table of the snapshot ``tx`` into ``copy`` (inside its open transaction)."""
    for table in TABLES:
        where = (" WHERE key NOT IN (%s)" % ", ".join(f"'{k}'" for k in PG_ONLY_META)
                 if table.name == "meta" else "")
        _stream(tx, f"SELECT {table.quoted()} FROM {table.name}{where} ORDER BY {table.order}",
                lambda rows, t=table: copy.executemany(
                    f"INSERT INTO {t.name} ({t.quoted()}) VALUES "
                    f"({', '.join('?' * len(t.columns))})", [t.to_sqlite(r) for r in rows]))
    # The inserts logged themselves (the SQLite triggers): the log is PostgreSQL's instead,
    # so an archived index file replays from its own sequence as it would there.
    copy.execute("DELETE FROM index_log")
    _stream(tx, "SELECT seq, layer, record_id FROM index_log ORDER BY seq",
            lambda rows: copy.executemany("INSERT INTO index_log VALUES (?, ?, ?)", rows))
    for sequence, table in SEQUENCES.items():
        issued = tx.execute(f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END "
                            f"FROM {sequence}").fetchone()[0]
        copy.execute("DELETE FROM sqlite_sequence WHERE name = ?", (table,))
        copy.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, issued))


def _stream(tx: Any, sql: str, sink: Callable[[list], Any]) -> None:
    """Run ``sql`` in ``tx`` through a server-side cursor, handing ``sink`` a batch at a time
    (a memory of any size in bounded memory)."""
    with tx.cursor(name="magray_snapshot", binary=True) as cursor:
        cursor.execute(sql)
        while rows := cursor.fetchmany(BATCH):
            sink(rows)


def _replace(store: Any, tx: Any, source: sqlite3.Connection) -> None:
    """Inside the write transaction ``tx``: empty every table, write the archive's rows."""
    meta = dict(source.execute("SELECT key, value FROM meta"))
    keep = _server_meta(store, tx, meta.get("dim"))
    for table in ("trash", "records", "passages", "sources", "embed_cache", "ops",
                  "op_totals", "meta"):
        store._run(f"DELETE FROM {table}", conn=tx)  # triggers log the old records' exit
    for table in TABLES:
        load_table(store, tx, source, table)
    for key, value in keep.items():
        store.set_meta(tx, key, value)
    # the log restarts past everything: every index cache anywhere is stale, and rebuilds
    head = store._run("SELECT nextval('index_log_seq_seq')", conn=tx).fetchone()[0]
    store._run("DELETE FROM index_log", conn=tx)
    for layer in LAYERS:
        store.set_meta(tx, f"log_pruned:{layer}", str(head))
    issued = max(_sqlite_sequence(source, "records"),
                 *(source.execute(f"SELECT coalesce(max(id), 0) FROM {t}").fetchone()[0]
                   for t in ("records", "trash")))
    # ids only ever grow: no id the archive or this server issued is issued again
    _advance(store, tx, "records_id_seq", issued)
    _advance(store, tx, "ops_id_seq", store._run("SELECT coalesce(max(id), 0) FROM ops",
                                                 conn=tx).fetchone()[0])
    store._run("UPDATE fts_stats SET rows = (SELECT count(*) FROM records), "
               "words = (SELECT coalesce(sum(word_count), 0) FROM records)", conn=tx)


def load_table(store: Any, tx: Any, source: sqlite3.Connection, table: Table) -> None:
    """COPY one table's rows from the archive's database into PostgreSQL (binary)."""
    names = table.quoted()
    if table.name == "meta":  # this server's own keys, and the log's, are set apart
        rows = source.execute(f"SELECT key, value FROM meta WHERE substr(key, 1, 11) <> "
                              f"'log_pruned:' AND key NOT IN "
                              f"({', '.join('?' * len(PG_ONLY_META))})", PG_ONLY_META)
    else:
        rows = source.execute(f"SELECT {names} FROM {table.name}")
    with store._guard(), tx.cursor() as cursor, cursor.copy(
            f"COPY {table.name} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(table.pg_types)
        while batch := rows.fetchmany(BATCH):
            for row in batch:
                copy.write_row(table.to_pg(row))


def _server_meta(store: Any, tx: Any, dim: str | None) -> dict[str, str]:
    """The server's own metadata to keep through a load: its HNSW indexes' description,
    when they fit the archive's dimension; indexes built for another one are dropped (they
    would refuse its vectors) and made again when the model is next recorded."""
    spec = store._run("SELECT value FROM meta WHERE key = 'vector_index'", conn=tx).fetchone()
    if spec is None:
        return {}
    fits = dim is None or f"({int(dim)})" in spec[0].split()[0]
    if fits:
        return {"vector_index": spec[0]}
    for layer in LAYERS:
        store._run(f"DROP INDEX IF EXISTS {index_name(layer)}", conn=tx)
    return {}


def _advance(store: Any, tx: Any, sequence: str, at_least: int) -> None:
    """Move a sequence up to ``at_least`` issued (never down)."""
    current = store._run(f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END "
                         f"FROM {sequence}", conn=tx).fetchone()[0]
    if at_least > current:
        store._run("SELECT setval(%s, %s, true)", (sequence, at_least), conn=tx)


def _sqlite_sequence(source: sqlite3.Connection, table: str) -> int:
    row = source.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    return int(row[0]) if row else 0
