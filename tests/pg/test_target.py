"""The ``database`` setting and the trust rules around a PostgreSQL memory: no password in
magray's configuration, sslmode passed to libpq, one-line errors naming the server."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from magray.db.pg.target import Postgres, parse_database
from magray.errors import ConfigError, MagrayError


def test_a_path_is_the_sqlite_store_and_a_url_the_postgresql_engine(tmp_path):
    assert parse_database(None) is None and parse_database("  ") is None
    assert parse_database(str(tmp_path / "m.db")) == tmp_path / "m.db"
    assert parse_database("m.db", home=tmp_path) == tmp_path / "m.db"
    target = parse_database("postgresql://magray@db.example:5433/memory?sslmode=verify-full")
    assert isinstance(target, Postgres) and target.host == "db.example:5433"
    assert parse_database("postgres://db/memory").host == "db"
    assert parse_database("postgresql:///memory?host=/run/postgresql").host == "/run/postgresql"


@pytest.mark.parametrize("url, words", [
    ("postgresql://me:secret@db/memory", "holds a password"),
    ("postgresql://db/memory?password=secret", "never a password"),
    ("postgresql://db/memory?sslmode=sometimes", "sslmode must be one of"),
    ("postgresql://db/memory?sslrootcert=x&evil=1", "'evil' is not accepted"),
    ("postgresql://db", "names no database"),
    ("mysql://db/memory", "mysql:// is not supported"),
])
def test_bad_urls_are_refused_in_one_line(url, words):
    with pytest.raises(ConfigError) as caught:
        parse_database(url)
    message = str(caught.value)
    assert words in message and "\n" not in message and "secret" not in message


def test_a_password_file_must_be_private(tmp_path):
    secret = tmp_path / "pg-password"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    target = parse_database(f"postgresql://me@db/memory?password_file={secret}")
    with pytest.raises(MagrayError, match="can be read by others.*chmod 600"):
        target.conninfo()
    secret.chmod(0o600)
    assert "password=s3cret" in target.conninfo()
    assert "s3cret" not in target.url


def test_the_connection_string_bounds_the_wait_and_names_magray():
    info = parse_database("postgresql://me@db/memory?sslmode=require").conninfo()
    assert "connect_timeout=10" in info and "sslmode=require" in info
    assert "application_name=magray" in info


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_server_is_one_line_naming_it():
    pytest.importorskip("psycopg")
    from magray.db.pg.store import PostgresStore

    port = closed_port()
    with pytest.raises(MagrayError) as caught:
        PostgresStore.open(parse_database(f"postgresql://me@127.0.0.1:{port}/memory"))
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "\n" not in message
    assert type(caught.value) is MagrayError and caught.value.exit_code == 1


def test_sslmode_require_is_honoured():
    """A server that answers the SSL request with 'N' (no SSL): libpq must refuse it when
    sslmode=require, and magray says so in one line."""
    pytest.importorskip("psycopg")
    from magray.db.pg.store import PostgresStore

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    asked = []

    def serve():
        conn, _ = listener.accept()
        with conn:
            asked.append(conn.recv(8))  # SSLRequest: length 8, code 80877103
            conn.sendall(b"N")
            conn.recv(1024)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with pytest.raises(MagrayError) as caught:
        PostgresStore.open(parse_database(
            f"postgresql://me@127.0.0.1:{port}/memory?sslmode=require&connect_timeout=5"))
    thread.join(5)
    listener.close()
    assert asked and asked[0][4:8] == (80877103).to_bytes(4, "big")
    message = str(caught.value)
    assert "SSL" in message and f"127.0.0.1:{port}" in message and "\n" not in message


def test_the_role_script_grants_no_more_than_magray_needs():
    script = (Path(__file__).parents[2] / "config" / "postgres-role.sql").read_text()
    assert "SUPERUSER" not in script.replace("NOSUPERUSER", "")
    assert "PASSWORD '" not in script  # no password written into a file
    for needed in ("NOCREATEDB", "NOCREATEROLE", "CONNECTION LIMIT", "REVOKE ALL"):
        assert needed in script


def test_the_role_runs_a_memory_and_nothing_more(pg_server, pg_database):
    """The script applied to a fresh database: magray, connected as that role, migrates and
    stores; the role cannot create a database, a role, or objects in public."""
    import psycopg

    from magray.db.pg.store import PostgresStore
    from magray.records import NewRecord

    script = (Path(__file__).parents[2] / "config" / "postgres-role.sql").read_text()
    with psycopg.connect(pg_server.uri(pg_database), autocommit=True) as admin:
        admin.execute(script)
    url = pg_server.url(pg_database).replace("postgres@", "magray@")
    store = PostgresStore.open(parse_database(url))
    try:
        with store.write() as tx:
            rid, _ = store.insert(tx, NewRecord("least privilege"), [0.6, 0.8], "2026-01-01")
        assert store.records([rid])[rid].text == "least privilege"
        assert store._run("SELECT current_schema()").fetchone()[0] == "magray"
        for statement in ("CREATE DATABASE other", "CREATE ROLE other",
                          "CREATE TABLE public.other (x int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                store.conn.execute(statement)
    finally:
        store.close()


def test_open_repository_picks_the_engine_the_setting_names(tmp_path, pg_server, pg_database):
    from magray.db.pg import open_repository
    from magray.db.pg.store import PostgresStore
    from magray.db.store import Store

    default = tmp_path / "data" / "memory.db"
    default.parent.mkdir()
    for setting, kind, where in ((None, Store, default), ("other.db", Store,
                                                          tmp_path / "data" / "other.db")):
        repo = open_repository(setting, default)
        assert isinstance(repo, kind) and repo.path == where and where.exists()
        repo.close()
    repo = open_repository(pg_server.url(pg_database), default)
    assert isinstance(repo, PostgresStore) and repo.count("interact") == 0
    repo.close()


def test_reading_the_setting_imports_no_database_driver():
    import subprocess
    import sys

    code = ("import sys, magray.db.pg as pg; pg.parse_database('postgresql://h/db'); "
            "assert 'psycopg' not in sys.modules and 'numpy' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_password_in_magray_database_is_refused_in_one_line(monkeypatch):
    from magray import config

    monkeypatch.setenv("MAGRAY_DATABASE", "postgresql://me:hunter2@db/memory")
    with pytest.raises(ConfigError) as caught:
        config.load(None)
    assert "MAGRAY_DATABASE" in str(caught.value) and "hunter2" not in str(caught.value)


def test_the_command_line_on_postgresql_through_magray_database(home, pg_server, pg_database,
                                                                  monkeypatch):
    """`magray store` and `magray search` in their own processes, MAGRAY_DATABASE naming the
    server: the records are in PostgreSQL, not in a memory.db under the home."""
    import json
    import os
    import subprocess
    import sys

    monkeypatch.setenv("MAGRAY_DATABASE", pg_server.url(pg_database))

    def magray(*args):
        return subprocess.run([sys.executable, "-m", "magray", *args], capture_output=True,
                              text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)

    stored = magray("store", "the wifi password is on the fridge", "--json")
    assert stored.returncode == 0, stored.stderr
    found = magray("search", "where is the wifi password", "--json")
    assert found.returncode == 0, found.stderr
    assert "fridge" in json.dumps(json.loads(found.stdout))
    assert not list(home.rglob("memory.db"))
    from magray.db.pg.store import PostgresStore

    store = PostgresStore.open(parse_database(pg_server.url(pg_database)))
    assert store.count("interact") == 1
    store.close()
