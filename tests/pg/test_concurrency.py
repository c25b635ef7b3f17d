"""Many clients on one PostgreSQL memory: writers take turns as SQLite's do, lifecycle runs
take turns, and concurrent stores of overlapping texts neither lose nor double a record."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def test_a_clean_waits_for_another_machines_lifecycle_run(pg_target, pg_store, second, home):
    """Memory.clean takes the lifecycle lock: while another client holds it, a clean waits
    up to busy_timeout and then says so in one line; the SQLite store has nothing to take."""
    from fakes import FakeEmbedder
    from magray import config, paths
    from magray.memory import Memory

    where = paths.resolve(home)
    where.ensure()
    with Memory(where, config.load(where.config_file), second, FakeEmbedder()) as memory:
        with pg_store.lifecycle_lock():
            with pytest.raises(BusyError, match="running clean or promote") as caught:
                memory.clean()
            assert "\n" not in str(caught.value)
        assert memory.clean().removed == ()


def test_the_sqlite_store_has_no_lifecycle_lock_to_take(sqlite_store):
    with sqlite_store.lifecycle_lock(), sqlite_store.lifecycle_lock():
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


MEMORY_CLIENT = Path(__file__).with_name("memory_client.py")


def run_clients(url: str, homes: list[Path], action: str, env: dict) -> list[str]:
    clients = [subprocess.Popen([sys.executable, str(MEMORY_CLIENT), url, str(home), action,
                                 *([str(n)] if action == "store" else [])],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env) for n, home in enumerate(homes)]
    outputs = []
    for client in clients:
        out, err = client.communicate(timeout=600)
        assert client.returncode == 0, err
        outputs.append(out)
    return outputs


def test_four_memories_with_four_homes_store_search_and_clean_one_memory(
        pg_target, pg_store, tmp_path):
    """Four clients, each with its own home (settings, index cache), store 200 records each
    (half of them texts all four store) and search while the others write; then two run
    `clean` at once with a capacity that evicts. Every text is held exactly once (in the
    records or the trash), the layer ends at its capacity, and a fifth client's searches
    agree with the data."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAGRAY_")}
    homes = [tmp_path / f"home{n}" for n in range(4)]
    run_clients(pg_target.url, homes, "store", {**env, "HF_HUB_OFFLINE": "1"})
    records = pg_store.recent(("interact",), Filters(), None)
    assert len(records) == len({r.text for r in records}) == 4 * 100 + 100
    shared = [r for r in records if r.text.startswith("shared")]
    assert all(set(r.tags) == {"c0", "c1", "c2", "c3"} for r in shared)

    capacity = {**env, "HF_HUB_OFFLINE": "1", "MAGRAY_CAPACITY_INTERACT": "300",
                "MAGRAY_CLEAN_PROMOTES": "false"}
    removed = run_clients(pg_target.url, homes[:2], "clean", capacity)
    assert sum(int(n) for n in removed) == 200  # together, not 200 each
    kept = pg_store.recent(("interact",), Filters(), None)
    trashed = [t.record for t in pg_store.trashed()]
    assert len(kept) == 300 and len(trashed) == 200
    assert len({r.text for r in kept + trashed}) == 500

    from fakes import FakeEmbedder
    from magray import config, paths
    from magray.memory import Memory

    where = paths.resolve(tmp_path / "home4")
    where.ensure()
    with Memory(where, config.load(where.config_file), pg_store, FakeEmbedder()) as fifth:
        for record in kept[::25]:
            assert fifth.search(record.text, mode="vector", track=False)[0].record.id == record.id
        gone = {r.id for r in trashed}
        for record in trashed[::25]:
            assert not {h.record.id for h in fifth.search(record.text, track=False)} & {record.id}
        assert not gone & {h.record.id for h in fifth.search("private note", top_k=100,
                                                             track=False)}
