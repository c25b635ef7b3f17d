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
