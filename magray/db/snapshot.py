"""The SQL that backups and restores need: a consistent copy of the live database, what a
copy holds, and loading a copy back into the live database.

Everything here goes through SQLite's backup API, which copies page by page inside one read
transaction (concurrent writers neither block it nor tear it) and writes the destination in
one transaction through SQLite's own locking (the WAL stays sound). ``Snapshots`` gives the
SQLite ``Store`` the repository's "backup" methods (``magray/db/base.py``) on these functions;
the PostgreSQL engine has its own (``magray/db/pg/snapshot.py``) writing the same file.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import BusyError, InputError, IntegrityError, MagrayError
from .connection import SQLITE_BUSY, SQLITE_LOCKED, connect
from ..records import LAYERS


def snapshot_database(store, target: Path) -> dict:
    """A consistent copy of the live database at ``target`` (SQLite's backup API: one read
    transaction, so concurrent writers neither block it nor tear it), integrity-checked.
    Returns the snapshot's facts (``database_facts``)."""
    copy = connect(target)  # a full disk while copying is one line naming the cause
    try:
        copy.execute("PRAGMA synchronous=OFF")  # a scratch file: the archive gets the fsync
        try:
            store.conn.backup(copy)
        except sqlite3.DatabaseError as exc:
            raise MagrayError(f"could not snapshot the database {store.path}: {exc}") from None
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        problems = copy.execute("PRAGMA integrity_check").fetchall()
        if problems != [("ok",)]:
            raise IntegrityError(f"the database {store.path} failed integrity_check "
                                 f"({problems[0][0]}); no backup was written")
        return database_facts(copy)
    finally:
        copy.close()


def database_facts(conn: sqlite3.Connection) -> dict:
    """The store id, model, model key, dimension and per-layer record counts of a database:
    what a backup manifest says about its database member."""
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    counts = dict.fromkeys(LAYERS, 0)
    for layer, count in conn.execute("SELECT layer, count(*) FROM records GROUP BY layer"):
        if layer in counts:  # the store accepts no other layer
            counts[layer] = count
    dim = meta.get("dim")
    return {"store_id": meta.get("store_id", ""), "model": meta.get("model"),
            "model_key": meta.get("model_key"), "dim": int(dim) if dim else None,
            "counts": counts}


def contents(store) -> tuple[dict[str, int], int]:
    """What a restore would replace in the live database: the records per layer, and the
    records in the trash (the trash is the person's data too)."""
    return database_facts(store.conn)["counts"], _trash_count(store.conn)


def _trash_count(conn: sqlite3.Connection) -> int:
    """Records in the trash (0 where the database predates the trash table)."""
    try:
        return conn.execute("SELECT count(*) FROM trash").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def staged_facts(db: Path, archive: Path) -> dict:
    """The facts (``database_facts``) of a database unpacked from ``archive``, once it is
    known to be sound and of a schema this magray knows."""
    from . import migrations

    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.DatabaseError as exc:
        raise IntegrityError(f"{archive}: the archived database cannot be opened: {exc}"
                             ) from None
    try:
        problems = conn.execute("PRAGMA integrity_check").fetchall()
        if problems != [("ok",)]:
            raise IntegrityError(f"{archive}: the archived database failed integrity_check "
                                 f"({problems[0][0]})")
        known = set(migrations.names())
        applied = migrations.applied(conn)
        if applied - known:
            raise InputError(f"{archive} holds a database from a newer magray (schema "
                             f"{sorted(applied - known)[-1]}); upgrade magray to restore it")
        return database_facts(conn)
    except sqlite3.DatabaseError as exc:
        raise IntegrityError(f"{archive}: the archived database is not a magray database: "
                             f"{exc}") from None
    finally:
        conn.close()


@contextmanager
def exclusive(store) -> Iterator[None]:
    """Have the database to this connection alone (SQLite's EXCLUSIVE locking mode) from the
    safety copy to the end of the load, so that no other process can write a record in
    between (it would be in neither) or read a half-restored memory. SQLite grants this only
    when no other connection has the database open; it waits up to the busy timeout."""
    conn = store.conn
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    try:
        try:
            conn.execute("BEGIN IMMEDIATE")  # takes the exclusive lock, kept after COMMIT
            conn.execute("COMMIT")
        except (sqlite3.OperationalError, BusyError):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise BusyError(f"another magray process has {store.path} open; stop it (a cron "
                            "job, an agent) and restore again. Nothing was changed") from None
        yield
    finally:
        conn.execute("PRAGMA locking_mode=NORMAL")
        conn.execute("SELECT count(*) FROM meta").fetchone()  # the next access unlocks


def match_page_size(staged: Path, store) -> None:
    """The backup API cannot change a WAL database's page size: give the staged copy the
    live one's (an archive from another machine's SQLite build may differ)."""
    wanted = store.conn.execute("PRAGMA page_size").fetchone()[0]
    conn = connect(staged)
    try:
        if conn.execute("PRAGMA page_size").fetchone()[0] != wanted:
            conn.execute(f"PRAGMA page_size={int(wanted)}")
            conn.execute("VACUUM")
    finally:
        conn.close()


def load_snapshot(staged: Path, store, timeout: float) -> None:
    """Copy the staged database into the live one: the backup API writes it in one
    transaction, through SQLite's own locking, so the WAL stays sound."""
    source = sqlite3.connect(f"file:{staged}?mode=ro", uri=True)
    deadline = time.monotonic() + timeout

    def patience(status: int, remaining: int, total: int) -> None:
        # Called after every step, the last one too: only a step that found the database
        # busy (and copied nothing) may give up; a finished copy is a finished restore.
        if status in (SQLITE_BUSY, SQLITE_LOCKED) and time.monotonic() > deadline:
            raise BusyError(f"the database {store.path} stayed locked; nothing was restored")

    try:
        source.backup(store.conn, progress=patience)
    except sqlite3.DatabaseError as exc:
        raise MagrayError(f"could not load the archived database: {exc}") from None
    finally:
        source.close()
    store.reloaded()  # the database was replaced under the connection
    store.conn.execute("PRAGMA journal_mode=WAL")


class Snapshots:
    """The repository's "backup" methods on SQLite (mixed into ``Store``)."""

    def snapshot_to(self, target: Path) -> dict:
        return snapshot_database(self, target)

    def contents(self) -> tuple[dict[str, int], int]:
        return contents(self)

    def exclusive(self):
        return exclusive(self)

    def prepare_load(self, staged: Path) -> None:
        match_page_size(staged, self)

    def load_snapshot(self, staged: Path, timeout: float) -> bool:
        load_snapshot(staged, self, timeout)
        return True  # the archived index files were made from this very database
