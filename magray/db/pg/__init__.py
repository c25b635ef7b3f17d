"""The PostgreSQL engine (issue 18): the same memory on PostgreSQL + pgvector.

``target`` reads the ``database`` setting (no database library imported); ``PostgresStore``
(in ``store``, which imports psycopg) implements ``magray.db.base.Repository``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .target import Postgres, parse_database

__all__ = ["Postgres", "open_for_status", "open_repository", "parse_database"]


def open_repository(database: str | None, default: Path, *, busy_timeout: float = 60.0
                    ) -> Any:
    """The repository the ``database`` setting names: the SQLite store at ``default`` when
    unset, at a path when one is given, or a PostgresStore for a ``postgresql://`` URL
    (psycopg is imported only then): what ``Memory.open`` opens."""
    target = parse_database(database, home=default.parent)
    if isinstance(target, Postgres):
        from ...errors import MagrayError

        try:
            from .store import PostgresStore
        except ImportError:
            raise MagrayError("the database setting names a PostgreSQL server, but psycopg "
                              "is not installed: pip install 'magray[postgres]'") from None
        return PostgresStore.open(target, busy_timeout=busy_timeout)
    from ..store import Store

    return Store.open(target or default, busy_timeout=busy_timeout)


def open_for_status(target: Postgres, *, busy_timeout: float = 60.0) -> Any:
    """The PostgreSQL memory at ``target``, connected read-only (no migration; the server
    refuses writes): what ``magray status`` reads. An unreachable server raises its one-line
    MagrayError (exit 1)."""
    from ...errors import MagrayError

    try:
        from .store import PostgresStore
    except ImportError:
        raise MagrayError("the database setting names a PostgreSQL server, but psycopg is "
                          "not installed: pip install 'magray[postgres]'") from None
    store = PostgresStore.open_readonly(target, busy_timeout=busy_timeout)
    try:
        store.read_only()
    except BaseException:
        store.close()
        raise
    return store
