"""Failure paths of the write paths: nothing acknowledged is lost, nothing committed is
reported as failed, and every failure is told in one line (issue 13, data safety)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from magray import Memory, config
from magray.errors import InputError
from magray.locks import locked

from fakes import FakeEmbedder


@pytest.fixture
def fake_cli(cli, monkeypatch):
    """The CLI with the fake embedder in place of the model (for logic not about meaning)."""
    for module in ("magray.encoder", "magray.memory"):  # the one loading, the one restoring
        monkeypatch.setattr(f"{module}.from_settings", lambda *a, **k: FakeEmbedder())
    return cli


# -- trouble after a commit is a warning -------------------------------------------------


def test_store_with_a_held_index_lock_prints_ids_and_exits_0(fake_cli, home, monkeypatch):
    assert fake_cli("store", "first note about tar flags").code == 0
    monkeypatch.setenv("MAGRAY_BUSY_TIMEOUT", "0.1")
    with locked(home / "data" / "indexes" / "interact.lock", timeout=1):
        result = fake_cli("store", "second note about rsync flags")
    assert result.code == 0, result
    assert result.out.strip() == "2"
    assert "warning: the interact index could not be updated" in result.err
    monkeypatch.delenv("MAGRAY_BUSY_TIMEOUT")
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        assert [h.record.id for h in memory.search("rsync flags", mode="vector", top_k=1)] == [2]


def test_promote_with_a_held_index_lock_reports_the_committed_move(home):
    warnings = []
    quick = config.defaults().replace(busy_timeout=0.1)  # the index lock is given up soon
    with Memory.open(home, settings=quick, embedder=FakeEmbedder(),
                     warn=warnings.append) as memory:
        [stored] = memory.store_texts(["deploys go through the staging cluster first"],
                                      layer="interact")
        with locked(home / "data" / "indexes" / "insights.lock", timeout=1):
            report = memory.promote(ids=[stored.id], threshold=0)
        assert [d.outcome for d in report.decisions] == ["promoted"]
        assert memory.get(stored.id).layer == "insights"
        assert any("insights index could not be updated" in w for w in warnings)


# -- Ctrl-C during a bulk store keeps what was committed ------------------------------------


class InterruptedEmbedder(FakeEmbedder):
    """Ctrl-C arrives while the model embeds its ``at``-th batch."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def embed_documents(self, texts):
        if self.calls + 1 == self.at:
            raise KeyboardInterrupt
        return super().embed_documents(texts)


def _notes(n: int) -> list[str]:
    return [f"note {i}: host{i} runs service {i * 7} on port {1000 + i}" for i in range(n)]


def test_ctrl_c_during_a_bulk_store_keeps_the_first_batch_and_says_so(home):
    from magray.errors import StoreInterrupted
    from magray.write import STORE_BATCH

    with Memory.open(home, embedder=InterruptedEmbedder(at=2)) as memory:
        with pytest.raises(StoreInterrupted) as stop:
            memory.store_texts(_notes(1000))
        assert isinstance(stop.value, KeyboardInterrupt)
        assert len(stop.value.stored) == STORE_BATCH
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        kept = memory.list_records(limit=None)
        assert sorted(r.id for r in kept) == [s.id for s in stop.value.stored]


def test_ctrl_c_during_store_from_stdin_prints_the_stored_ids_and_exits_130(cli, monkeypatch):
    monkeypatch.setattr("magray.encoder.from_settings", lambda *a, **k: InterruptedEmbedder(2))
    result = cli("store", "-", stdin="\n".join(_notes(1000)).encode())
    assert result.code == 130
    assert result.out.split() == [str(i) for i in range(1, 257)]
    assert result.err.strip().splitlines()[-1] == (
        "error: interrupted: stored 256, 0 duplicate(s) (their ids are above); the rest were "
        "not stored")


# -- the model is checked and recorded inside the write transaction --------------------------


def test_two_first_writers_with_different_models_never_mix_dimensions(home):
    """Both find the memory empty; the other writer records its model while this one
    embeds. This one's vectors must not land beside the other's."""
    from magray.errors import ModelMismatchError

    class Racing(FakeEmbedder):
        def embed_documents(self, texts):
            with Memory.open(home, embedder=FakeEmbedder(dim=16, name="other")) as other:
                other.store_texts(["the other model's note about ssh keys"])
            return super().embed_documents(texts)

    with Memory.open(home, embedder=Racing(dim=8, name="mine")) as memory:
        with pytest.raises(ModelMismatchError):
            memory.store_texts(["my note about gpg keys"])
    with Memory.open(home, embedder=FakeEmbedder(dim=16, name="other")) as memory:
        assert memory.recorded_model() == ("other", 16)
        assert [r.text for r in memory.list_records(limit=None)] == [
            "the other model's note about ssh keys"]
        assert memory.search("ssh keys", mode="vector")  # one vector space: search works


# -- SQLite's failures are magray's errors: a full disk and a read-only home exit 1 ---------


def _tighten(conn) -> None:
    """Make SQLite report a full disk at the next page it needs (SQLITE_FULL)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")


def test_a_full_disk_is_an_operational_error_and_nothing_is_lost(home):
    from magray.errors import MagrayError

    texts = [f"long note {i}: " + "spelled out words about backups " * 40 for i in range(40)]
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        kept = memory.store_texts(["the note that was stored before the disk filled"])
        _tighten(memory.db.conn)
        with pytest.raises(MagrayError) as failed:
            memory.store_texts(texts)
        assert failed.value.exit_code == 1
        assert str(failed.value).startswith(f"the disk holding {home / 'data' / 'magray.db'} "
                                            "is full")
        memory.db.conn.execute("PRAGMA max_page_count=1073741823")  # space returns
        assert [r.id for r in memory.list_records(limit=None)] == [kept[0].id]
        stored = memory.store_texts(texts)
        assert len(stored) == 40 and not any(s.duplicate for s in stored)
        assert memory.db.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_store_on_a_full_disk_says_so_in_one_line(fake_cli, home, monkeypatch):
    from magray.db.store import Store

    assert fake_cli("store", "a first note").code == 0
    configure = Store._configure

    def full(self):
        configure(self)
        _tighten(self.conn)

    monkeypatch.setattr(Store, "_configure", full)
    result = fake_cli("store", "a second note " + "that needs pages " * 500)
    assert result.code == 1, result
    assert result.err.count("\n") == 1 and result.err.startswith("error: the disk holding ")
    assert "is full" in result.err and not result.out
    monkeypatch.setattr(Store, "_configure", configure)
    assert fake_cli("store", "a second note").out.strip() == "2"


@pytest.fixture
def readonly_connections(monkeypatch):
    """Every connection to a magray.db opens it read-only (mode=ro): a read-only home
    that holds even for root, who writes through chmod."""
    import sqlite3

    connect = sqlite3.connect

    def readonly(path, *args, **kwargs):
        if str(path).endswith("magray.db") and not kwargs.get("uri"):
            return connect(f"{Path(path).absolute().as_uri()}?mode=ro", *args, uri=True,
                           **kwargs)
        return connect(path, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", readonly)


def test_search_and_store_in_a_read_only_home_exit_1_in_one_line(fake_cli, home,
                                                                 monkeypatch, request):
    assert fake_cli("store", "the wifi password is on the fridge").code == 0
    request.getfixturevalue("readonly_connections")
    for args in (("search", "wifi password"), ("store", "another note")):
        result = fake_cli(*args)
        assert result.code == 1, (args, result)
        assert result.err.startswith(f"error: the database {home / 'data' / 'magray.db'} "
                                     "is read-only"), (args, result)
        assert result.err.count("\n") == 1
    assert fake_cli("list", "--json").code == 0  # reading needs no write


# -- restore: reports what it did; a retry never deletes the only copy ----------------------


def _fill(memory, prefix: str, n: int = 5) -> None:
    memory.store_texts([f"{prefix} note {i} about deploying service {i}" for i in range(n)])


@pytest.fixture
def archive(tmp_path):
    """An archive of another memory (5 records), made with the fake model."""
    with Memory.open(tmp_path / "source", embedder=FakeEmbedder()) as source:
        _fill(source, "archived")
        return source.backup(tmp_path).archive.path


def test_a_restore_that_outlasts_its_deadline_still_reports_what_it_did(home, archive,
                                                                        monkeypatch):
    import magray.db.snapshot as snapshot

    class Late:  # every look at the clock finds the deadline long past
        now = 0.0

        def monotonic(self):
            self.now += 3600.0
            return self.now

    monkeypatch.setattr(snapshot, "time", Late())
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        _fill(memory, "mine")
        result = memory.restore(archive, replace=True)
        assert dict(result.replaced)["interact"] == 5 and result.safety_copy.exists()
        assert {r.text.split()[0] for r in memory.list_records(limit=None)} == {"archived"}
    assert (home / "data" / "indexes" / "interact.usearch").exists()


def test_a_retried_restore_keeps_the_only_copy_of_the_replaced_data(home, archive,
                                                                   monkeypatch):
    import magray.backup.restore as backup
    from magray.backup.verify import verify

    place = backup._place_index

    def broken(*args):
        raise OSError(28, "No space left on device")

    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        _fill(memory, "mine", n=7)
        monkeypatch.setattr(backup, "_place_index", broken)
        with pytest.raises(OSError):
            memory.restore(archive, replace=True)  # the load is done; the indexes are not
        monkeypatch.setattr(backup, "_place_index", place)
        memory.restore(archive, replace=True)  # the natural retry
        kept = [verify(p).counts["interact"] for p in memory.safety_copies()]
        assert 7 in kept, kept  # the person's own 7 records are still somewhere
        assert {r.text.split()[0] for r in memory.list_records(limit=None)} == {"archived"}


def test_a_store_just_before_the_restore_lock_is_in_the_safety_copy(home, archive,
                                                                   monkeypatch):
    import magray.backup.restore as backup
    from magray.backup.verify import verify

    match = backup.match_page_size
    calls = []

    def store_meanwhile(staged, store):  # runs after the plan, before the lock
        calls.append(1)
        with Memory.open(home, embedder=FakeEmbedder()) as other:
            other.store_texts([f"stored by another process during restore {len(calls)}"])
        match(staged, store)

    monkeypatch.setattr(backup, "match_page_size", store_meanwhile)
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        with pytest.raises(InputError, match="while the archive was being checked"):
            memory.restore(archive)  # an empty memory: no --yes was needed for the plan
        assert [r.text for r in memory.list_records()] == [
            "stored by another process during restore 1"]
        result = memory.restore(archive, replace=True)
        assert verify(result.safety_copy).counts["interact"] == 2


def test_an_in_process_restore_stamps_indexes_with_the_restored_store_id(home, archive):
    import json

    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        _fill(memory, "mine")
        before = memory.db.store_id
        memory.restore(archive, replace=True)
        memory.store_texts(["a note after the restore"])
        restored = memory.db.meta("store_id")
        assert restored != before and memory.db.store_id == restored
    sidecar = json.loads((home / "data" / "indexes" / "interact.json").read_text())
    assert sidecar["store_id"] == restored


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs: a disk that really fills (skipped where mounting is not permitted)."""
    import subprocess

    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs",
                              str(where)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_really_full_disk_loses_nothing_and_works_again_once_space_returns(
        fake_cli, small_disk, monkeypatch):
    import sqlite3

    monkeypatch.setenv("MAGRAY_HOME", str(small_disk / "home"))
    first = fake_cli("store", "-", stdin="\n".join(_notes(300)).encode())
    assert first.code == 0, first
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as out:  # fill the disk to the last block
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    more = [f"later note {i}: " + "words about the full disk " * 30 for i in range(300)]
    full = fake_cli("store", "-", stdin="\n".join(more).encode())
    assert full.code == 1, full
    assert full.err.startswith("error: ") and full.err.count("\n") == 1, full
    assert " is full" in full.err or "No space left" in full.err, full
    filler.unlink()  # space returns
    again = fake_cli("store", "-", stdin="\n".join(more).encode())
    assert again.code == 0, again
    db = sqlite3.connect(small_disk / "home" / "data" / "magray.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT count(*) FROM records").fetchone() == (600,)
    db.close()


def test_a_really_read_only_home_exits_1_in_one_line(fake_cli, small_disk, monkeypatch):
    import subprocess

    monkeypatch.setenv("MAGRAY_HOME", str(small_disk / "home"))
    assert fake_cli("store", "the wifi password is on the fridge").code == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        for args in (("search", "wifi password"), ("store", "another note")):
            result = fake_cli(*args)
            assert result.code == 1, (args, result)
            assert result.err.startswith(f"error: the data directory {small_disk}/home/data "
                                         "is read-only"), result
            assert result.err.count("\n") == 1, result
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert fake_cli("store", "another note").code == 0


def test_a_restore_whose_index_update_fails_still_reports_the_restore(home, archive,
                                                                     monkeypatch):
    import magray.backup.restore as backup
    from magray.index import LayerIndex

    def crash(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    warnings = []
    with Memory.open(home, embedder=FakeEmbedder(), warn=warnings.append) as memory:
        _fill(memory, "mine")
        memory.store_texts(["one more of mine"])
        monkeypatch.setattr(backup, "_place_index", lambda *args: None)  # to be rebuilt
        monkeypatch.setattr(LayerIndex, "_save", crash)
        result = memory.restore(archive, replace=True)
        assert result.safety_copy.exists() and dict(result.replaced)["interact"] == 6
        assert {r.text.split()[0] for r in memory.list_records(limit=None)} == {"archived"}
        assert any("interact index could not be updated" in w for w in warnings), warnings


def _open_at(path: str, start: float, results) -> None:
    from magray.db.store import Store

    while time.time() < start:  # every process opens the new file at the same moment
        pass
    try:
        Store.open(Path(path), busy_timeout=20).close()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(repr(exc))


def test_processes_opening_a_new_memory_together_all_succeed(tmp_path):
    """SQLite answers the switch to WAL "locked" at once, not after its busy timeout, when
    another process opens the same new file: several agents' `magray mcp` starting on a new
    home failed that way (2 of 10 rounds of six processes before the fix)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for round_ in range(10):
        path = str(tmp_path / f"new-{round_}.db")
        results = context.Queue()
        start = time.time() + 0.3
        workers = [context.Process(target=_open_at, args=(path, start, results))
                   for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert [results.get() for _ in workers] == ["ok"] * 6
