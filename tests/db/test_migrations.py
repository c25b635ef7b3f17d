"""The schema's migrations: a database whose migrations sqlite-utils recorded (every magray
before the schema moved to magray/db/migrations.py) opens unchanged, nothing re-applied."""

import sqlite3

import pytest

from magray.db import migrations
from magray.db.store import Store


def _sqlite_utils_database(path, *, stop_before=None):
    """A database made as earlier magrays made it: the same migration functions applied by
    sqlite-utils' own ``Migrations`` (which creates and fills ``_sqlite_migrations``)."""
    sqlite_utils = pytest.importorskip("sqlite_utils")
    from sqlite_utils.migrations import Migrations

    old = Migrations("magray")
    for function in migrations.MIGRATIONS:
        old()(function)
    db = sqlite_utils.Database(sqlite3.connect(path))
    old.apply(db, **({"stop_before": stop_before} if stop_before else {}))
    db.conn.commit()
    db.close()


def _schema(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()


def _recorded(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM _sqlite_migrations ORDER BY rowid").fetchall()
    finally:
        conn.close()


def test_a_database_migrated_by_sqlite_utils_opens_with_nothing_reapplied(tmp_path):
    path = tmp_path / "old.db"
    _sqlite_utils_database(path)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO meta VALUES ('store_id', 'abc')")
    conn.commit()
    conn.close()
    schema, recorded = _schema(path), _recorded(path)
    assert [row[2] for row in recorded] == migrations.names()

    store = Store.open(path)
    try:
        assert migrations.pending(store.conn) == [] and store.store_id == "abc"
    finally:
        store.close()
    assert _schema(path) == schema and _recorded(path) == recorded


def test_a_part_migrated_sqlite_utils_database_gets_the_rest_recorded_alike(tmp_path):
    path = tmp_path / "old.db"
    _sqlite_utils_database(path, stop_before="m004_trash")
    Store.open(path).close()
    recorded = _recorded(path)
    assert [row[1:3] for row in recorded] == [("magray", name) for name in migrations.names()]
    assert len({row[0] for row in recorded}) == len(recorded)  # sqlite-utils' id column

    fresh = tmp_path / "new.db"
    Store.open(fresh).close()  # one made by this magray has the very same schema
    assert _schema(fresh) == _schema(path)


def test_a_failing_migration_leaves_nothing_half_done(tmp_path, monkeypatch):
    path = tmp_path / "m.db"
    conn = sqlite3.connect(path)
    migrations.apply(conn, stop_before="m006_passages")
    conn.commit()
    conn.close()

    def broken(db):
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration failed")

    broken.__name__ = "m007_broken"
    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, broken])
    with pytest.raises(RuntimeError):
        Store.open(path)
    names = {row[1] for row in _schema(path)}
    assert "half_done" not in names and "passages" not in names
    assert "m006_passages" not in [row[2] for row in _recorded(path)]
