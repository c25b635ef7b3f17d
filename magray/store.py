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
import re
import sqlite3
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from . import clock
from .errors import BusyError, IntegrityError, MagrayError
from .records import Filters, NewRecord, Record

if TYPE_CHECKING:
    import sqlite_utils

RECORD_COLUMNS = ("id, text, layer, kind, tags, project, session, created_at, updated_at, "
                  "last_access, access_count, importance, content_hash")


class LazyMigrations:
    """Numbered schema migrations, declared with ``@migrations()`` and applied by
    sqlite-utils' ``Migrations``; but whether any is pending is read with plain SQL, so a
    command that finds none (every one after the first) never imports sqlite-utils, a
    tenth of a second of start-up."""

    table = "_sqlite_migrations"

    def __init__(self, name: str):
        self.name = name
        self.declared: list[tuple[Callable, dict]] = []

    def __call__(self, **options: Any) -> Callable[[Callable], Callable]:
        def declare(function: Callable) -> Callable:
            self.declared.append((function, options))
            return function
        return declare

    def pending(self, conn: sqlite3.Connection) -> list[str]:
        names = [options.get("name") or function.__name__ for function, options in self.declared]
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                            (self.table,)).fetchone():
            return names
        applied = {row[0] for row in conn.execute(
            f"SELECT name FROM {self.table} WHERE migration_set = ?", (self.name,))}
        return [name for name in names if name not in applied]

    def apply(self, db: Any) -> None:
        from sqlite_utils.migrations import Migrations

        real = Migrations(self.name)
        for function, options in self.declared:
            real(**options)(function)
        real.apply(db)


migrations = LazyMigrations("magray")


@migrations()
def m001_records(db: "sqlite_utils.Database") -> None:
    db.executescript("""
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE records (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: ids are index keys
        text TEXT NOT NULL,
        layer TEXT NOT NULL,
        kind TEXT,
        tags TEXT NOT NULL DEFAULT '[]',       -- JSON array, sorted, unique
        project TEXT,
        session TEXT,
        created_at TEXT NOT NULL,              -- fixed-width ISO 8601 UTC
        updated_at TEXT NOT NULL,
        last_access TEXT,
        access_count INTEGER NOT NULL DEFAULT 0,
        importance REAL NOT NULL DEFAULT 0,
        content_hash TEXT NOT NULL,
        embedding BLOB NOT NULL                -- float32, normalised
    );
    CREATE UNIQUE INDEX records_layer_hash ON records(layer, content_hash);
    CREATE INDEX records_layer_created ON records(layer, created_at);
    CREATE INDEX records_project ON records(project) WHERE project IS NOT NULL;
    CREATE INDEX records_session ON records(session) WHERE session IS NOT NULL;

    CREATE TABLE index_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        layer TEXT NOT NULL,
        record_id INTEGER NOT NULL
    );
    CREATE INDEX index_log_layer_seq ON index_log(layer, seq);

    CREATE VIRTUAL TABLE records_fts USING fts5(
        text, content='records', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    );

    CREATE TRIGGER records_insert AFTER INSERT ON records BEGIN
        INSERT INTO records_fts(rowid, text) VALUES (new.id, new.text);
        INSERT INTO index_log(layer, record_id) VALUES (new.layer, new.id);
    END;
    CREATE TRIGGER records_delete AFTER DELETE ON records BEGIN
        INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO index_log(layer, record_id) VALUES (old.layer, old.id);
    END;
    CREATE TRIGGER records_text AFTER UPDATE OF text ON records BEGIN
        INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO records_fts(rowid, text) VALUES (new.id, new.text);
    END;
    CREATE TRIGGER records_vector AFTER UPDATE OF layer, embedding ON records BEGIN
        INSERT INTO index_log(layer, record_id) VALUES (old.layer, old.id);
        INSERT INTO index_log(layer, record_id) SELECT new.layer, new.id
            WHERE new.layer <> old.layer;
    END;

    CREATE TABLE embed_cache (
        model TEXT NOT NULL,
        text_hash TEXT NOT NULL,
        vector BLOB NOT NULL,
        last_used TEXT NOT NULL,
        PRIMARY KEY (model, text_hash)
    ) WITHOUT ROWID;
    """)


class VectorNeeded(Exception):
    """A text thought to be stored already was deleted before the write: embed it after all."""


class Store:
    """An open magray database."""

    def __init__(self, conn: sqlite3.Connection, path: Path, busy_timeout: float):
        self.conn = conn
        self.path = path
        self.busy_timeout = busy_timeout
        self._db: "sqlite_utils.Database | None" = None
        self._store_id: str | None = None

    @property
    def db(self) -> "sqlite_utils.Database":
        """The connection wrapped by sqlite-utils (imported on first use)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn, execute_plugins=False)
        return self._db

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, busy_timeout: float = 60.0) -> "Store":
        """Open (creating and migrating as needed) the database at ``path``."""
        try:
            conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            store = cls(conn, path, busy_timeout)
            store._configure()
            store._migrate()
        except sqlite3.DatabaseError as exc:
            raise _translate(exc, path) from None
        return store

    def _configure(self) -> None:
        if self.conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            with self._busy_guard():
                self.conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a record is on disk when its id is printed, even across a power cut.
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")

    def _migrate(self) -> None:
        if not migrations.pending(self.conn):
            return
        with self.write():  # serialise concurrent first opens; apply() re-checks inside
            migrations.apply(self.db)
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)",
                              (uuid.uuid4().hex,))

    def close(self) -> None:
        self.conn.close()

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE takes the write lock up front (waiting up to
        the busy timeout), so a read-then-write inside it never races another process."""
        with self._busy_guard():
            self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        with self._busy_guard():
            self.conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent snapshot for several queries."""
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    @contextmanager
    def _busy_guard(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise _translate(exc, self.path) from None

    # -- metadata -------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                     "value = excluded.value", (key, value))

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

    def insert(self, conn: sqlite3.Connection, item: NewRecord, vector: np.ndarray | None,
               when: str) -> tuple[int, bool]:
        """Insert one record inside a write transaction, or count a duplicate as an access.
        Returns (id, duplicate). ``vector`` may be None only for a text expected to be a
        duplicate; if that record vanished meanwhile, ``VectorNeeded`` is raised."""
        digest = item.content_hash
        row = conn.execute("SELECT id, tags FROM records WHERE layer = ? AND content_hash = ?",
                           (item.layer, digest)).fetchone()
        if row:
            tags = json.dumps(sorted(set(json.loads(row[1])) | set(item.tags)))
            conn.execute("UPDATE records SET access_count = access_count + 1, last_access = ?, "
                         "tags = ? WHERE id = ?", (when, tags, row[0]))
            return row[0], True
        if vector is None:
            raise VectorNeeded(item.text)
        created = item.created_at or when
        cursor = conn.execute(
            "INSERT INTO records (text, layer, kind, tags, project, session, created_at, "
            "updated_at, last_access, access_count, importance, content_hash, embedding) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, ?, ?, ?)",
            (item.text, item.layer, item.kind, json.dumps(sorted(set(item.tags))), item.project,
             item.session, created, when, item.importance, digest,
             np.ascontiguousarray(vector, dtype=np.float32).tobytes()))
        return cursor.lastrowid, False

    def touch(self, ids: Sequence[int]) -> None:
        """Count the records as accessed now."""
        if not ids:
            return
        with self.write() as conn:
            conn.execute(
                f"UPDATE records SET access_count = access_count + 1, last_access = ? "
                f"WHERE id IN ({_marks(ids)})", (clock.now_iso(), *ids))

    def records(self, ids: Sequence[int]) -> dict[int, Record]:
        """Records by id (missing ids are simply absent)."""
        result: dict[int, Record] = {}
        for chunk in _chunks(list(ids), 900):
            for row in self.conn.execute(
                    f"SELECT {RECORD_COLUMNS} FROM records WHERE id IN ({_marks(chunk)})", chunk):
                record = _record(row)
                result[record.id] = record
        return result

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

    def count(self, layer: str) -> int:
        return self.conn.execute("SELECT count(*) FROM records WHERE layer = ?",
                                 (layer,)).fetchone()[0]

    def filtered_ids(self, layers: Sequence[str], filters: Filters, limit: int | None = None
                     ) -> list[int]:
        """Ids of records in ``layers`` that pass ``filters``."""
        where, params = filter_sql(layers, filters)
        sql = f"SELECT id FROM records WHERE {where}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [row[0] for row in self.conn.execute(sql, params)]

    def keyword_search(self, match: str, layers: Sequence[str], filters: Filters, limit: int
                       ) -> list[tuple[int, float]]:
        """(id, relevance) by FTS5 BM25, best first; relevance is -bm25 (higher is better)."""
        where, params = filter_sql(layers, filters, table="r")
        sql = (f"SELECT r.id, -bm25(records_fts) AS relevance FROM records_fts "
               f"JOIN records r ON r.id = records_fts.rowid "
               f"WHERE records_fts MATCH ? AND {where} ORDER BY bm25(records_fts) LIMIT ?")
        return [(row[0], row[1]) for row in self.conn.execute(sql, (match, *params, limit))]

    # -- the index log --------------------------------------------------------------------

    def log_head(self, layer: str) -> int:
        """The newest index-log sequence for a layer (0 when nothing was ever logged)."""
        row = self.conn.execute("SELECT max(seq) FROM index_log WHERE layer = ?",
                                (layer,)).fetchone()
        return max(row[0] or 0, self.log_pruned_through(layer))

    def log_pruned_through(self, layer: str) -> int:
        return int(self.meta(f"log_pruned:{layer}") or 0)

    def changed_since(self, layer: str, seq: int) -> tuple[list[int], int]:
        """Record ids whose vector entered or left ``layer`` after ``seq``, and the new head."""
        rows = self.conn.execute(
            "SELECT seq, record_id FROM index_log WHERE layer = ? AND seq > ? ORDER BY seq",
            (layer, seq)).fetchall()
        head = rows[-1][0] if rows else seq
        return sorted({r[1] for r in rows}), head

    def ids_in_layer(self, ids: Sequence[int], layer: str) -> list[int]:
        present = []
        for chunk in _chunks(list(ids), 900):
            present += [r[0] for r in self.conn.execute(
                f"SELECT id FROM records WHERE layer = ? AND id IN ({_marks(chunk)})",
                (layer, *chunk))]
        return present

    def prune_log(self, layer: str, through: int) -> None:
        """Forget log rows an index has saved; they are never needed again."""
        if through <= self.log_pruned_through(layer):
            return
        with self.write() as conn:
            conn.execute("DELETE FROM index_log WHERE layer = ? AND seq <= ?", (layer, through))
            self.set_meta(conn, f"log_pruned:{layer}", str(through))

    # -- the embedding cache --------------------------------------------------------------

    def cached_vectors(self, model: str, hashes: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        found = {}
        for chunk in _chunks(list(hashes), 900):
            for digest, blob in self.conn.execute(
                    f"SELECT text_hash, vector FROM embed_cache WHERE model = ? "
                    f"AND text_hash IN ({_marks(chunk)})", (model, *chunk)):
                if len(blob) == dim * 4:
                    found[digest] = np.frombuffer(blob, dtype=np.float32)
        return found

    def cache_vectors(self, conn: sqlite3.Connection, model: str,
                      items: Iterable[tuple[str, np.ndarray]], when: str) -> None:
        conn.executemany(
            "INSERT INTO embed_cache VALUES (?, ?, ?, ?) ON CONFLICT(model, text_hash) "
            "DO UPDATE SET last_used = excluded.last_used",
            [(model, digest, np.asarray(vec, dtype=np.float32).tobytes(), when)
             for digest, vec in items])


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
    return " AND ".join(clauses), params


def _record(row: Sequence) -> Record:
    values = list(row)
    values[4] = tuple(json.loads(values[4]))
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


def _translate(exc: sqlite3.DatabaseError, path: Path) -> MagrayError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return BusyError(f"the database {path} stayed locked by another magray process; "
                         "try again, or raise busy_timeout")
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
        return MagrayError(f"cannot open the database {path}: {text}")
    return IntegrityError(f"the database {path} is damaged or not a magray database: {text}")
