"""Connecting to a magray SQLite database, and the one place where SQLite's failures
become magray's errors (``Connection``, ``translate``)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..errors import BusyError, IntegrityError, MagrayError


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
        raise translate(exc, path) from None
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
    error = translate(exc, path)
    error.__cause__ = exc
    error.__suppress_context__ = True
    return error


def translate(exc: sqlite3.DatabaseError, path: Path) -> MagrayError:
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
