"""Backups and restores across the engines (issue 18): a PostgreSQL memory's archive is the
SQLite engine's format (verify reads it unchanged), any archive restores into either engine,
a backup taken while another process writes is one consistent snapshot, and a restore that
fails leaves the PostgreSQL memory as it was."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from archives import fill, read_members
from fakes import FakeEmbedder
from magray.errors import InputError, MagrayError
from magray.records import Passage, Source

pytest.importorskip("psycopg")

HERE = Path(__file__).parent


def _memory(home: Path, store):
    from magray import config, paths
    from magray.memory import Memory

    where = paths.resolve(home)
    where.ensure()
    return Memory(where, config.load(where.config_file), store, FakeEmbedder())


@pytest.fixture
def pg_memory(tmp_path, pg_store):
    with _memory(tmp_path / "pg-home", pg_store) as memory:
        yield memory


def _everything(memory) -> tuple[dict, dict, list]:
    """Records by id with their raw vectors, and the trash: what must survive a move."""
    records = {record.id: (record, vector) for record, vector in
               memory.db.dump(("interact", "insights", "assets"), _no_filters(), vectors=True)}
    trash = sorted(((t.record, t.trashed_at, t.reason, t.merged_into) for t in memory.trash()),
                   key=lambda t: t[0].id)
    vectors = memory.db.trash_vectors([t[0].id for t in trash])
    ids = sorted(records) + [t[0].id for t in trash]
    parts, matrix = memory.db.passages(ids, 128)
    passages = sorted((rid, p.ordinal, p.start, p.end, tuple(row))
                      for (rid, p), row in zip(parts, matrix.tolist()))
    return records, vectors, trash, passages, memory.db.sources(ids)


def _no_filters():
    from magray.records import Filters

    return Filters()


def _unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def _fill_with_trash(memory) -> None:
    fill(memory, n=12)
    memory.store_texts(["tagged note"], tags=["b", "a"], project="p", session="s",
                       importance=0.5)
    newest, oldest = memory.list_records(limit=None)[0].id, memory.list_records(limit=None)[-1].id
    rng = np.random.default_rng(7)
    with memory.db.write() as tx:  # passages and a file source (one record's kept in the trash)
        for record_id in (oldest, oldest + 1):
            memory.db.insert_passages(tx, record_id, [
                (Passage(n, n * 10, n * 10 + 30), _unit(rng.standard_normal(128)))
                for n in range(3)])
            memory.db.put_source(tx, record_id, Source(f"/notes/{record_id}.md", 1, 9, 2), "h")
    memory.forget([newest])
    memory.forget([oldest])


def test_sqlite_to_postgres_and_back_keeps_ids_fields_vectors_and_trash(tmp_path, pg_memory):
    from magray import Memory
    from magray.backup.verify import verify

    with Memory.open(tmp_path / "local", embedder=FakeEmbedder()) as local:
        _fill_with_trash(local)
        before = _everything(local)
        issued = local.db.issued_through()
        first = local.backup(tmp_path / "out").archive.path

    result = pg_memory.restore(first)  # an empty memory: nothing to confirm
    assert result.safety_copy is None and sum(result.archive.counts.values()) == 19
    assert _everything(pg_memory) == before
    assert pg_memory.db.issued_through() >= issued  # no id is issued again
    for mode in ("vector", "hybrid", "keyword"):
        hits = pg_memory.search("how-to 1: rotate the ssh keys yearly", mode=mode, track=False)
        assert hits[0].record.text == "how-to 1: rotate the ssh keys yearly", mode
    new = pg_memory.store_texts(["a note stored on the server after the restore"])[0]
    assert new.id > issued

    second = pg_memory.backup(tmp_path / "out").archive
    assert verify(second.path).counts == second.counts  # verify reads it unchanged
    names = [m.name for m, _ in read_members(second.path)]
    assert names[:2] == ["manifest.json", "data/magray.db"]
    assert not [n for n in names if n.startswith("data/indexes/")]  # the server holds them
    with Memory.open(tmp_path / "back", embedder=FakeEmbedder()) as back:
        back.restore(second.path)
        records, *rest = _everything(back)
        assert rest == list(before[1:])
        assert {i: r for i, r in records.items() if i != new.id} == before[0]
        assert back.db.issued_through() == new.id
        hits = back.search("rotate the ssh keys", mode="keyword", track=False)
        assert hits[0].record.text.startswith("how-to")


def test_a_restore_into_postgres_asks_and_keeps_a_safety_copy(tmp_path, pg_memory):
    from magray import Memory
    from magray.backup.verify import verify

    with Memory.open(tmp_path / "local", embedder=FakeEmbedder()) as local:
        local.store_texts(["from the laptop"])
        archive = local.backup(tmp_path / "out").archive.path
    pg_memory.store_texts(["on the server 1", "on the server 2"])
    with pytest.raises(InputError, match="replace=True"):
        pg_memory.restore(archive)
    assert len(pg_memory.list_records()) == 2
    result = pg_memory.restore(archive, replace=True)
    assert dict(result.replaced)["interact"] == 2
    assert verify(result.safety_copy).counts["interact"] == 2  # what it replaced, archived
    assert [r.text for r in pg_memory.list_records()] == ["from the laptop"]
    assert pg_memory.search("laptop", mode="vector")[0].record.text == "from the laptop"


def test_a_failed_restore_leaves_the_postgres_memory_unchanged(tmp_path, pg_memory,
                                                               monkeypatch):
    from magray import Memory
    from magray.db.pg import snapshot

    with Memory.open(tmp_path / "local", embedder=FakeEmbedder()) as local:
        fill(local, n=5)
        archive = local.backup(tmp_path / "out").archive.path
    _fill_with_trash(pg_memory)
    before = _everything(pg_memory)
    load = snapshot.load_table

    def refused(store, tx, source, table):  # the server fails midway through the load
        if table.name == "passages":
            raise MagrayError("the PostgreSQL server refused the rows")
        load(store, tx, source, table)

    monkeypatch.setattr(snapshot, "load_table", refused)
    with pytest.raises(MagrayError, match="refused"):
        pg_memory.restore(archive, replace=True)
    assert _everything(pg_memory) == before
    hits = pg_memory.search("rotate the ssh keys", mode="keyword", track=False)
    assert hits[0].record.text.startswith("how-to")  # the keyword statistics too
    monkeypatch.setattr(snapshot, "load_table", load)
    pg_memory.restore(archive, replace=True)  # the retry works
    assert len(pg_memory.list_records(limit=None)) == 13
    assert len(pg_memory.safety_copies()) == 2  # the first try's copy is kept


def test_a_backup_while_another_process_writes_is_one_snapshot(tmp_path, pg_server,
                                                               pg_database, pg_memory):
    """bulk_client.py commits batches of 50 records: every archive holds whole batches, its
    keyword index and id counter agree with its records, and verify accepts it."""
    from magray.backup.verify import verify

    writer = subprocess.Popen([sys.executable, str(HERE / "bulk_client.py"),
                               pg_server.url(pg_database)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    committed = 0

    def wait_for_batches(n: int) -> None:  # the writer prints a line per committed batch
        nonlocal committed
        while committed < n:
            assert writer.stdout.readline(), writer.stderr.read()
            committed += 1

    try:
        wait_for_batches(3)  # under way
        archives = []
        for _ in range(3):
            archives.append(pg_memory.backup(tmp_path / "out").archive)
            wait_for_batches(archives[-1].counts["interact"] // 50 + 1)  # one it lacks
        assert writer.poll() is None, writer.stderr.read()
    finally:
        writer.terminate()
        writer.wait(timeout=30)
    counts = []
    for info in archives:
        verify(info.path)
        db = tmp_path / f"{info.path.name}.db"
        db.write_bytes(dict((m.name, data) for m, data in read_members(info.path))
                       ["data/magray.db"])
        conn = sqlite3.connect(db)
        batches = {}
        for (text,) in conn.execute("SELECT text FROM records"):
            batch = int(text.split()[1])
            batches[batch] = batches.get(batch, 0) + 1
        assert set(batches.values()) == {50}, "a batch was torn"
        assert sorted(batches) == list(range(len(batches)))
        assert conn.execute("SELECT count(*) FROM records_fts").fetchone()[0] == \
            50 * len(batches)
        top = conn.execute("SELECT max(id) FROM records").fetchone()[0]
        assert conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'"
                            ).fetchone()[0] >= top
        assert info.counts["interact"] == 50 * len(batches)
        counts.append(len(batches))
        conn.close()
    assert counts[0] < counts[1] < counts[2]  # each taken while it wrote


def test_a_postgres_archive_holds_the_cache_and_the_recorded_model(tmp_path, pg_memory):
    """What an archive of a PostgreSQL memory holds beyond records: the embedding cache,
    the recorded model and dimension, and no server-only metadata."""
    pg_memory.store_texts(["one note", "another note"])
    pg_memory.db.ensure_vector_index(pg_memory.db.model_meta()[1])  # a server-only meta key
    info = pg_memory.backup(tmp_path / "out").archive
    db = tmp_path / "copy.db"
    db.write_bytes(dict((m.name, d) for m, d in read_members(info.path))["data/magray.db"])
    conn = sqlite3.connect(db)
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert meta["store_id"] == pg_memory.db.store_id == info.store_id
    assert (meta["model_key"], int(meta["dim"])) == pg_memory.db.model_meta()
    assert "vector_index" not in meta
    assert conn.execute("SELECT count(*) FROM embed_cache").fetchone()[0] == \
        pg_memory.db.cache_entries() > 0
    stored = {r.id: v for r, v in pg_memory.db.dump(("interact",), _no_filters(),
                                                     vectors=True)}
    archived = dict(conn.execute("SELECT id, embedding FROM records"))
    assert archived == stored
    conn.close()


def _readme_commands() -> list[str]:
    """The shell lines of the README's 'Moving a memory to a PostgreSQL server' example."""
    text = (HERE.parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("## Moving a memory to a PostgreSQL server and back", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_the_readme_moves_a_memory_to_the_server_and_back(home, cli, monkeypatch, tmp_path,
                                                         pg_server, pg_database):
    """The README's commands, run as written (SERVER is the test server's URL)."""
    import shlex

    import magray.encoder
    import magray.memory
    from magray import Memory

    for module in (magray.encoder, magray.memory):
        monkeypatch.setattr(module, "from_settings", lambda *a, **k: FakeEmbedder())
    monkeypatch.chdir(tmp_path)
    with Memory.open(home, embedder=FakeEmbedder()) as local:
        _fill_with_trash(local)
        before = _everything(local)
    server = pg_server.url(pg_database)
    for line in _readme_commands():
        words = shlex.split(line)
        if words[0] == "export":  # export SERVER=...: the test server instead
            monkeypatch.setenv("SERVER", server)
            continue
        env = {}
        while "=" in words[0]:
            name, _, value = words.pop(0).partition("=")
            env[name] = os.path.expandvars(value)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        result = cli(*words[1:])
        for name in env:
            monkeypatch.delenv(name)
        assert result.code == 0, (line, result)
    with Memory.open(home, embedder=FakeEmbedder()) as local:
        assert _everything(local) == before  # there and back: nothing changed
    monkeypatch.setenv("MAGRAY_DATABASE", server)
    with Memory.open(home, embedder=FakeEmbedder()) as remote:
        assert remote.db.__class__.__name__ == "PostgresStore"
        assert _everything(remote)[0].keys() == before[0].keys()  # import: nothing new


def test_a_load_of_another_dimension_drops_the_server_indexes_made_for_the_old_one(
        tmp_path, pg_store):
    """HNSW indexes are built for one dimension: a load of vectors of another (a restore
    with the archive's config and model) drops them rather than fail, and they are made
    again for the new dimension."""
    from magray import Memory, config, paths

    where = paths.resolve(tmp_path / "pg-home")
    where.ensure()
    with Memory(where, config.load(where.config_file), pg_store, FakeEmbedder(dim=8)) as small:
        small.store_texts(["eight dimensions"])
    pg_store.ensure_vector_index(8)
    with Memory.open(tmp_path / "local", embedder=FakeEmbedder(dim=16)) as local:
        local.store_texts(["sixteen dimensions", "and another"])
        local.db.snapshot_to(tmp_path / "copy.db")
    assert pg_store.load_snapshot(tmp_path / "copy.db", 5) is False  # indexes: rebuild
    assert pg_store.meta("vector_index") is None and pg_store.model_meta()[1] == 16
    assert pg_store.ensure_vector_index(16)
    ids = pg_store.layer_ids("interact")
    vector = pg_store.vectors(ids[:1], 16)[1][0]
    assert pg_store.nearest("interact", vector, 1)[0][0] == ids[0]


def test_a_restore_into_postgres_waits_for_a_writer_then_changes_nothing(tmp_path, pg_memory,
                                                                        pg_target):
    """The load needs the lock every writer takes: a client that keeps writing makes the
    restore give up after busy_timeout, one line, with nothing changed and no safety copy."""
    from magray import Memory
    from magray.db.pg.store import PostgresStore
    from magray.errors import BusyError

    with Memory.open(tmp_path / "local", embedder=FakeEmbedder()) as local:
        local.store_texts(["from the laptop"])
        archive = local.backup(tmp_path / "out").archive.path
    pg_memory.store_texts(["on the server"])
    pg_memory.db.busy_timeout = 0.5
    other = PostgresStore.open(pg_target)
    try:
        with other.write():  # another machine in the middle of a write
            with pytest.raises(BusyError, match="kept writing"):
                pg_memory.restore(archive, replace=True)
    finally:
        other.close()
    assert [r.text for r in pg_memory.list_records()] == ["on the server"]
    assert pg_memory.safety_copies() == []
    pg_memory.restore(archive, replace=True)  # once it is done, the restore goes through
    assert [r.text for r in pg_memory.list_records()] == ["from the laptop"]
