"""Reading a magray database with nothing heavy imported (no numpy).

``Reader`` holds the queries that judge a database and its indexes: metadata, record
counts and the index-log head. ``Store`` builds on it for everything else; ``magray
status`` uses it alone, on a read-only connection, so that it starts fast and can never
write.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .connection import connect, translate

# When a record was last used (``layers.last_use``: the later of storing and the last
# access), as SQL: the one definition of "expired" is "last used before the policy's cutoff".
LAST_USE = "max(created_at, coalesce(last_access, created_at))"


class Reader:
    """An open magray database, for reading."""

    def __init__(self, conn: sqlite3.Connection, path: Path, busy_timeout: float):
        self.conn = conn
        self.path = path
        self.busy_timeout = busy_timeout

    @classmethod
    def open_readonly(cls, path: Path, *, busy_timeout: float = 60.0) -> "Reader":
        """Open an existing database read-only: no migration, no journal-mode change, no
        write. (SQLite may still create the -wal/-shm files a WAL reader needs.)"""
        return cls(connect(path, readonly=True, timeout=busy_timeout), path, busy_timeout)

    def close(self) -> None:
        self.conn.close()

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
            raise translate(exc, self.path) from None

    # -- metadata -------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @property
    def store_id(self) -> str:
        return self.meta("store_id") or ""

    def integrity_check(self) -> str:
        """"ok", or the first problem SQLite's integrity check finds in the file."""
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]

    def tables(self) -> set[str]:
        return {row[0] for row in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}

    # -- records and the index log --------------------------------------------------------

    def count(self, layer: str) -> int:
        return self.conn.execute("SELECT count(*) FROM records WHERE layer = ?",
                                 (layer,)).fetchone()[0]

    def log_head(self, layer: str) -> int:
        """The newest index-log sequence for a layer (0 when nothing was ever logged)."""
        return self.conn.execute(  # one statement: it runs on every search, for every layer
            "SELECT max(coalesce((SELECT max(seq) FROM index_log WHERE layer = ?), 0), "
            "coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?), 0))",
            (layer, f"log_pruned:{layer}")).fetchone()[0]

    def log_pruned_through(self, layer: str) -> int:
        return int(self.meta(f"log_pruned:{layer}") or 0)

    def extra_passages(self, layer: str) -> int:
        """Vectors a layer's index holds beyond one per record: the further passages of its
        long records (0 for a database from before passages)."""
        try:
            return self.conn.execute(
                "SELECT count(*) FROM passages p JOIN records r ON r.id = p.record_id "
                "WHERE p.ordinal > 0 AND r.layer = ?", (layer,)).fetchone()[0]
        except sqlite3.OperationalError:  # a database status reads before migration m006
            return 0

    def created_range(self, layer: str) -> tuple[str | None, str | None]:
        """When the oldest and the newest record of a layer were created."""
        # Two subqueries, so that each min/max is one step down the (layer, created_at) index.
        return self.conn.execute(
            "SELECT (SELECT min(created_at) FROM records WHERE layer = ?), "
            "(SELECT max(created_at) FROM records WHERE layer = ?)", (layer, layer)).fetchone()

    def count_expired(self, layer: str, cutoff: str) -> int:
        """Records of a layer last used before ``cutoff`` (``LayerPolicy.cutoff``)."""
        return self.conn.execute(f"SELECT count(*) FROM records WHERE layer = ? "
                                 f"AND {LAST_USE} < ?", (layer, cutoff)).fetchone()[0]

    # -- what magray logs about itself ----------------------------------------------------

    def trash_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM trash").fetchone()[0]

    def cache_entries(self) -> int:
        return self.conn.execute("SELECT count(*) FROM embed_cache").fetchone()[0]

    def cache_use(self) -> tuple[int, int, int, int]:
        """Embedding-cache (hits, misses) of the recent operations, then of all time."""
        recent = self.conn.execute(
            "SELECT coalesce(sum(cache_hits), 0), coalesce(sum(cache_misses), 0) FROM ops"
        ).fetchone()
        total = self.conn.execute(
            "SELECT coalesce(sum(cache_hits), 0), coalesce(sum(cache_misses), 0) FROM op_totals"
        ).fetchone()
        return (*recent, *total)

    def operation(self, op: str) -> tuple[list[float], str | None, int, float]:
        """One operation's figures: the recent calls' durations (ascending), when the
        oldest of them finished, and the all-time count and seconds."""
        seconds = sorted(row[0] for row in self.conn.execute(
            "SELECT seconds FROM ops WHERE op = ?", (op,)))
        since = self.conn.execute("SELECT min(finished_at) FROM ops WHERE op = ?",
                                  (op,)).fetchone()[0]
        total = self.conn.execute("SELECT count, seconds FROM op_totals WHERE op = ?",
                                  (op,)).fetchone() or (0, 0.0)
        return seconds, since, total[0], total[1]

    # -- status (issue 18, item 5) --------------------------------------------------------
    def server(self) -> None:
        """None: the database is a file (status measures it; no server to ask)."""
        return None

    def vector_indexes(self) -> None:
        """None: the vector indexes are the usearch files under the home's indexes/."""
        return None
