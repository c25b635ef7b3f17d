"""Reading a magray database with nothing heavy imported (no sqlite-utils, no numpy).

``Reader`` holds the queries that judge a database and its indexes: metadata, record
counts and the index-log head. ``Store`` builds on it for everything else; ``magray
status`` uses it alone, on a read-only connection, so that it starts fast and can never
write.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import BusyError, IntegrityError, MagrayError


# SQLite's primary result codes (the low byte of an extended code) that are foreseeable
# failures of the disk, the file or a peer (not a bug in a statement): magray's to translate.
SQLITE_PERM, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_READONLY = 3, 5, 6, 7, 8
SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 10, 11, 13, 14, 26
FULL_BELOW = 1 << 20  # bytes free under which an I/O error is taken for a full disk
OPERATIONAL = {SQLITE_PERM, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_READONLY,
               SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB}


def connect(path: Path, *, readonly: bool = False, timeout: float = 60.0) -> "Connection":
    """A connection to the database at ``path`` whose errors are magray's (``Connection``)."""
    try:
        if readonly:
            conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True,
                                   timeout=timeout, isolation_level=None,
                                   check_same_thread=False, factory=Connection)
        else:
            conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                                   check_same_thread=False, factory=Connection)
    except sqlite3.DatabaseError as exc:
        raise _translate(exc, path) from None
    conn.path = path
    return conn


class Connection(sqlite3.Connection):
    """The one place where SQLite's failures enter magray's error tree: a full disk, a
    read-only file, a lock held too long or a damaged file becomes one MagrayError naming
    the cause and the path, wherever the statement ran (BEGIN, an INSERT, COMMIT, a read).
    Errors that mean a wrong statement (a bug) pass through unchanged."""

    path: Path = Path("?")

    def cursor(self, factory: type | None = None) -> "Cursor":  # type: ignore[override]
        cursor = super().cursor(factory or Cursor)
        cursor.path = self.path
        return cursor

    def execute(self, sql: str, parameters=(), /) -> "Cursor":  # type: ignore[override]
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters, /) -> "Cursor":  # type: ignore[override]
        return self.cursor().executemany(sql, parameters)

    def executescript(self, script: str, /) -> "Cursor":  # type: ignore[override]
        return self.cursor().executescript(script)


class Cursor(sqlite3.Cursor):
    """A cursor whose statements and fetches translate errors (see ``Connection``); rows
    iterated one by one are not wrapped (a Python frame per row would slow every scan), so
    whole-result reads use fetchall/fetchmany or the first step, which runs in execute."""

    path: Path = Path("?")

    def execute(self, sql: str, parameters=(), /) -> "Cursor":  # type: ignore[override]
        try:
            return super().execute(sql, parameters)
        except sqlite3.DatabaseError as exc:
            raise _translated(exc, self.path)

    def executemany(self, sql: str, parameters, /) -> "Cursor":  # type: ignore[override]
        try:
            return super().executemany(sql, parameters)
        except sqlite3.DatabaseError as exc:
            raise _translated(exc, self.path)

    def executescript(self, script: str, /) -> "Cursor":  # type: ignore[override]
        try:
            return super().executescript(script)
        except sqlite3.DatabaseError as exc:
            raise _translated(exc, self.path)

    def fetchone(self):
        try:
            return super().fetchone()
        except sqlite3.DatabaseError as exc:
            raise _translated(exc, self.path)

    def fetchmany(self, size: int | None = None):
        try:
            return super().fetchmany(self.arraysize if size is None else size)
        except sqlite3.DatabaseError as exc:
            raise _translated(exc, self.path)

    def fetchall(self):
        try:
            return super().fetchall()
        except sqlite3.DatabaseError as exc:
            raise _translated(exc, self.path)


def _translated(exc: sqlite3.DatabaseError, path: Path) -> Exception:
    """``exc`` as magray's error when it is an operational failure; else ``exc`` itself."""
    if (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF not in OPERATIONAL:
        return exc
    error = _translate(exc, path)
    error.__cause__ = exc
    error.__suppress_context__ = True
    return error


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
            raise _translate(exc, self.path) from None

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


def _translate(exc: sqlite3.DatabaseError, path: Path) -> MagrayError:
    """SQLite's failure as one line naming the cause and the path. Only a damaged file is an
    integrity failure (exit 3); a full disk, a read-only file or a held lock is operational
    (exit 1): nothing was written, and the same command works once the cause is gone."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc)
    if code in (SQLITE_BUSY, SQLITE_LOCKED) or (not code and ("locked" in text
                                                             or "busy" in text)):
        return BusyError(f"the database {path} stayed locked by another magray process; "
                         "try again, or raise busy_timeout")
    if code == SQLITE_FULL or (code == SQLITE_IOERR and nearly_full(path)):
        return disk_full(path)
    if code == SQLITE_READONLY:
        return MagrayError(f"the database {path} is read-only here ({text}); nothing was "
                           "written: make it writable (or its directory) and try again")
    if code == SQLITE_CANTOPEN or "unable to open" in text:
        if path.parent.is_dir() and not os.access(path.parent, os.W_OK):
            return MagrayError(f"the data directory {path.parent} is read-only (SQLite "
                               f"writes its -wal and -shm files beside {path.name}); nothing "
                               "was written: make it writable and try again")
        return MagrayError(f"cannot open the database {path}: {text}")
    if code in (SQLITE_CORRUPT, SQLITE_NOTADB) or not code:
        return IntegrityError(f"the database {path} is damaged or not a magray database: "
                              f"{text}")
    name = getattr(exc, "sqlite_errorname", None)
    return MagrayError(f"the database {path} failed: {text}" + (f" ({name})" if name else ""))


def disk_full(path: Path) -> MagrayError:
    """The one line that says the disk holding ``path`` filled (the database, an index)."""
    return MagrayError(f"the disk holding {path} is full; nothing more was written "
                       "(what was stored before is safe): free some space and try again")


def nearly_full(path: Path) -> bool:
    """Whether the file system holding ``path`` has (almost) no space left: SQLite reports
    some writes that hit a full disk as I/O errors (growing the WAL index: IOERR_SHMSIZE)."""
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < FULL_BELOW
