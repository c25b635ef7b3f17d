"""Many clients on one PostgreSQL memory: writers take turns as SQLite's do, lifecycle runs
take turns, and concurrent stores of overlapping texts neither lose nor double a record."""

from __future__ import annotations

import subprocess
import sys

import pytest

from magray.errors import BusyError
from magray.records import Filters, NewRecord

pytest.importorskip("psycopg")

WRITER = """
import sys
from magray.db.pg import parse_database
from magray.db.pg.store import PostgresStore
from magray.records import NewRecord
store = PostgresStore.open(parse_database(sys.argv[1]), busy_timeout=60)
me = int(sys.argv[2])
for n in range(200):
    text = f"shared note {n}" if n % 2 else f"client {me} note {n}"
    with store.write() as tx:
        store.insert(tx, NewRecord(text, tags=(f"c{me}",)), [1.0, float(n), float(me)], "2026")
"""


@pytest.fixture
def second(pg_target):
    from magray.db.pg.store import PostgresStore

    store = PostgresStore.open(pg_target, busy_timeout=1)
    yield store
    store.close()


def test_a_writer_waits_for_another_then_gives_up_in_one_line(pg_store, second):
    with pg_store.write() as tx:
        pg_store.insert(tx, NewRecord("first"), [1.0, 0.0], "2026")
        with pytest.raises(BusyError) as caught:
            with second.write() as other:
                second.insert(other, NewRecord("second"), [0.0, 1.0], "2026")
    assert "\n" not in str(caught.value) and second.target.host in str(caught.value)
    with second.write() as other:  # once the first commits, the second goes through
        second.insert(other, NewRecord("second"), [0.0, 1.0], "2026")
    assert pg_store.count("interact") == 2


def test_lifecycle_runs_take_turns(pg_store, second):
    with pg_store.lifecycle_lock():
        with pytest.raises(BusyError, match="running clean or promote"):
            with second.lifecycle_lock():
                pass
    with second.lifecycle_lock():  # free again
        pass


def test_four_clients_storing_overlapping_texts_lose_and_double_nothing(pg_target, pg_store):
    clients = [subprocess.Popen([sys.executable, "-c", WRITER, pg_target.url, str(me)],
                                stderr=subprocess.PIPE, text=True) for me in range(4)]
    for client in clients:
        assert client.wait(timeout=300) == 0, client.stderr.read()
    records = pg_store.recent(("interact",), Filters(), None)
    texts = [r.text for r in records]
    assert len(texts) == len(set(texts)) == 4 * 100 + 100
    shared = [r for r in records if r.text.startswith("shared")]
    assert all(r.access_count == 3 for r in shared)
    assert all(set(r.tags) == {"c0", "c1", "c2", "c3"} for r in shared)
