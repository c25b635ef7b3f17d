"""magray restore: round trips, refusals, safety copies, hostile archives, a live writer."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from archives import dump, entry, read_members, reseal, seal, tar_bytes, tree, with_manifest
from fakes import FakeEmbedder
from corpus import FILLER, NOTES
from magray import Filters, IntegrityError, Memory
from magray.backup import read_info
from magray.backup.verify import verify
from magray.errors import InputError, ModelMismatchError
from magray.records import LAYERS

REPO = Path(__file__).resolve().parents[2]
# A fake model under the default model's name: the CLI (configured with the default) then
# accepts these archives without loading any model.
DEFAULT_NAME = "all-MiniLM-L6-v2"


def fake(name: str = DEFAULT_NAME) -> FakeEmbedder:
    return FakeEmbedder(name=name)


def fill(memory, n: int = 20) -> None:
    memory.store_texts([f"note {i} on deploying service {i % 5}" for i in range(n)])
    memory.store_texts(["decide: sqlite for local state"], layer="insights")
    memory.store_texts(["how-to: rotate ssh keys"], layer="assets")


@pytest.fixture
def mem(home):
    with Memory.open(home, embedder=fake()) as memory:
        yield memory


def _db(home: Path) -> Path:
    return home / "data" / "magray.db"


# -- round trips --------------------------------------------------------------------------


QUERIES = [query for _, query in NOTES] + ["garden", "ssh keys", "database choice"]


def _results(memory) -> list:
    return [[(h.record.id, round(h.score, 5)) for h in
             memory.search(q, top_k=8, track=False, mode=mode)]
            for q in QUERIES for mode in ("vector", "hybrid")]


def test_round_trip_gives_identical_records_and_searches(memory, home, tmp_path, cli,
                                                          real_embedder):
    memory.store_texts(FILLER[:150])
    memory.store_texts([note for note, _ in NOTES], layer="assets")
    before, searches = dump(_db(home)), _results(memory)
    archive = memory.backup().archive.path
    memory.store_texts(["a later note that the restore must remove",
                        "and one more about kubernetes rollouts"])
    memory.db.touch([1, 2, 3])
    replaced = memory.db.count("interact")
    result = memory.restore(archive, replace=True)
    assert result.safety_copy is not None and result.replaced["interact"] == replaced > 150
    assert dump(_db(home)) == before
    assert _results(memory) == searches
    assert all(s.action == "fresh" for s in result.synced)  # the indexes came back whole
    # and on another machine, through the CLI, with no --yes needed for an empty memory
    other = tmp_path / "elsewhere"
    restored = cli("--home", str(other), "restore", str(archive))
    assert restored.code == 0, restored.err
    assert dump(_db(other)) == before
    with Memory.open(other, embedder=real_embedder) as copy:
        assert _results(copy) == searches


def test_index_behind_the_database_is_replayed_after_restore(mem, home):
    fill(mem)
    # records written straight to the database, as another process's unsynced write would
    with mem.db.write() as conn:
        conn.execute("UPDATE records SET layer = 'assets' WHERE id IN (1, 2)")
    archive = mem.backup().archive.path
    result = mem.restore(archive, replace=True)
    actions = {s.layer: s.action for s in result.synced}
    assert actions["interact"] == "updated" and actions["assets"] == "updated"
    for layer in LAYERS:
        index = mem.index(layer)
        assert index.staleness() == ""
        view = index.open_view()
        ids = set(mem.db.filtered_ids([layer], Filters()))
        assert (set(int(k) for k in view.keys) if view is not None else set()) == ids


def test_restore_across_sqlite_page_sizes(mem, home, tmp_path):
    fill(mem)
    archive = mem.backup().archive.path
    at_backup = dump(_db(home))
    other = tmp_path / "other"
    (other / "data").mkdir(parents=True, mode=0o700)
    conn = sqlite3.connect(other / "data" / "magray.db")  # another SQLite build's default
    conn.execute("PRAGMA page_size=1024")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    with Memory.open(other, embedder=fake()) as copy:
        assert copy.db.conn.execute("PRAGMA page_size").fetchone() == (1024,)
        copy.restore(archive)
        assert copy.db.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.db.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert dump(other / "data" / "magray.db") == at_backup


def test_unusable_archived_config_is_refused_before_anything_changes(home, tmp_path, cli):
    source = tmp_path / "source"
    with Memory.open(source, embedder=fake()) as memory:
        fill(memory, 3)
        (source / "config.toml").write_text("top_k = 500\n")  # broken after opening
        archive = memory.backup().archive.path
    result = cli("restore", str(archive))
    assert result.code == 2 and "--no-config" in result.err and "top_k" in result.err
    assert not (home / "config.toml").exists()
    assert cli("restore", "--no-config", str(archive)).code == 0


# -- asking first -------------------------------------------------------------------------


def test_replacing_data_needs_yes_when_not_interactive(mem, home, cli):
    fill(mem)
    archive = mem.backup().archive.path
    at_backup = dump(_db(home))
    mem.store_texts(["written after the backup"])
    before = dump(_db(home))
    result = cli("restore", str(archive))
    assert result.code == 2 and "--yes" in result.err and result.out == ""
    declined = cli("restore", str(archive), tty=True)  # a terminal that answers nothing
    assert declined.code == 1 and "cancelled" in declined.err
    assert dump(_db(home)) == before and mem.safety_copies() == []
    mem.close()  # a restore needs the memory to itself
    done = cli("restore", "--yes", str(archive))
    assert done.code == 0 and "previous data (23 records) kept in" in done.out
    assert dump(_db(home)) == at_backup


def test_restore_waits_for_other_processes_then_refuses(mem, home, cli, monkeypatch):
    fill(mem)
    archive = mem.backup().archive.path
    mem.store_texts(["written after the backup"])
    before = dump(_db(home))
    monkeypatch.setenv("MAGRAY_BUSY_TIMEOUT", "0.2")
    mem.search("anything", track=False)  # this open connection now holds a shared lock
    result = cli("restore", "--yes", str(archive))
    assert result.code == 1 and "another magray process has" in result.err
    assert dump(_db(home)) == before and mem.safety_copies() == []
    assert sorted(p.name for p in (home / "data").iterdir() if p.name.startswith(".")) == []
    mem.store_texts(["the memory still works"])


def test_interactive_restore_asks_and_proceeds_on_yes(mem, home):
    import pty

    fill(mem)
    archive = mem.backup().archive.path
    mem.store_texts(["written after the backup"])
    mem.close()
    controller, terminal = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "magray", "restore", str(archive)],
                               stdin=terminal, stdout=subprocess.PIPE, stderr=terminal,
                               env=env)
    os.close(terminal)
    seen = b""
    while b"[y/N]" not in seen:
        chunk = os.read(controller, 1024)
        assert chunk, seen
        seen += chunk
    os.write(controller, b"y\n")
    out, _ = process.communicate(timeout=120)
    os.close(controller)
    assert process.returncode == 0, seen
    assert b"verified: 22 records" in seen and b"Replace the 23 records here" in seen
    assert b"previous data (23 records) kept in" in out
    assert len(dump(_db(home))["records"]) == 22


def test_dry_run_verifies_and_changes_nothing(mem, home, cli):
    fill(mem)
    archive = mem.backup().archive.path
    mem.store_texts(["written after the backup"])
    before, files_before = dump(_db(home)), tree(home)
    result = cli("restore", "--dry-run", "--json", str(archive))
    data = json.loads(result.out)
    assert result.code == 0 and data["dry_run"] is True and data["safety_copy"] is None
    assert data["restored"] == {"interact": 20, "insights": 1, "assets": 1}
    assert data["replaced"] == {"interact": 21, "insights": 1, "assets": 1}
    assert dump(_db(home)) == before and tree(home) == files_before


# -- the safety copy ----------------------------------------------------------------------


def test_safety_copy_holds_the_replaced_data_until_the_next_restore(mem, home):
    fill(mem)
    archive = mem.backup().archive.path
    mem.store_texts(["only in the replaced data"])
    replaced = dump(_db(home))
    first = mem.restore(archive, replace=True).safety_copy
    assert verify(first).counts["interact"] == 21
    assert mem.safety_copies() == [first]
    undo = mem.restore(first, replace=True)  # the safety copy is itself an archive
    assert dump(_db(home)) == replaced
    assert mem.safety_copies() == [first, undo.safety_copy]  # a restore deletes none
    assert mem.discard_safety_copies() == [first, undo.safety_copy]
    assert mem.safety_copies() == []


def test_a_second_restore_keeps_the_first_safety_copy(mem, home, tmp_path):
    fill(mem)
    one = mem.backup(tmp_path / "one.tar.zst").archive.path
    mem.store_texts(["another archive's note"])
    two = mem.backup(tmp_path / "two.tar.zst").archive.path
    mem.store_texts(["only before the first restore"])
    first = mem.restore(one, replace=True).safety_copy
    second = mem.restore(two, replace=True).safety_copy
    assert first.exists() and mem.safety_copies() == [first, second]
    assert verify(first).counts["interact"] == 22  # the data from before both restores


def test_records_all_in_the_trash_are_data_a_restore_asks_for_and_keeps(mem, home, cli):
    fill(mem, n=2)
    archive = mem.backup().archive.path
    mem.forget([r.id for r in mem.list_records(limit=None)])  # everything in the trash
    assert mem.list_records(limit=None) == [] and len(mem.trash()) == 4
    before = dump(_db(home))
    mem.close()
    refused = cli("restore", str(archive))  # not a terminal: nothing asked, nothing done
    assert refused.code == 2 and "4 in the trash" in refused.err and "--yes" in refused.err
    assert dump(_db(home)) == before
    done = cli("restore", "--yes", str(archive))
    assert done.code == 0 and "previous data (0 records and 4 in the trash) kept" in done.out
    with Memory.open(home, embedder=fake()) as memory:
        assert memory.trash() == []
        memory.restore(memory.safety_copies()[0], replace=True)
        assert len(memory.trash()) == 4


def test_restore_keeps_or_restores_the_config(home, tmp_path, cli):
    source = tmp_path / "source"
    source.mkdir()
    (source / "config.toml").write_text("top_k = 7\n")
    with Memory.open(source, embedder=fake()) as memory:
        fill(memory, 3)
        archive = memory.backup().archive.path
    fresh = cli("restore", str(archive))  # no config here yet: the archive's is used
    assert fresh.code == 0 and "config: restored" in fresh.out
    assert (home / "config.toml").read_text() == "top_k = 7\n"
    (home / "config.toml").write_text("top_k = 3\n")
    kept = cli("restore", "--yes", str(archive))
    assert "config: the current config kept" in kept.out
    assert (home / "config.toml").read_text() == "top_k = 3\n"
    replaced = cli("restore", "--yes", "--config", str(archive))
    assert replaced.code == 0 and (home / "config.toml").read_text() == "top_k = 7\n"
    members = dict((m.name, d) for m, d in read_members(Memory.open(
        home, embedder=fake()).safety_copies()[0]))
    assert members["config.toml"] == b"top_k = 3\n"


# -- refusals -----------------------------------------------------------------------------


def test_archive_from_another_model_is_refused(home, tmp_path, cli, monkeypatch):
    with Memory.open(tmp_path / "a", embedder=fake("other-org/other-model")) as other:
        fill(other, 3)
        archive = other.backup().archive.path
    with Memory.open(home, embedder=fake()) as memory:
        fill(memory, 2)
        before = dump(_db(home))
        with pytest.raises(ModelMismatchError, match="embedded with other-org/other-model"):
            memory.restore(archive, replace=True)
    result = cli("restore", "--yes", str(archive))
    assert result.code == 1 and "other-org/other-model" in result.err
    assert dump(_db(home)) == before
    # the archive's own config names its model: restoring it with --config is accepted...
    (tmp_path / "a" / "config.toml").write_text('model = "other-org/other-model"\n')
    with Memory.open(tmp_path / "a", embedder=fake("other-org/other-model")) as other:
        with_config = other.backup().archive.path
    assert cli("restore", "--yes", "--dry-run", "--config", str(with_config)).code == 0
    # ... and MAGRAY_MODEL still wins over it
    monkeypatch.setenv("MAGRAY_MODEL", DEFAULT_NAME)
    assert cli("restore", "--yes", "--config", str(with_config)).code == 1


def test_newer_format_is_refused_but_damage_still_reads_as_damage(mem, home, tmp_path, cli):
    fill(mem, 3)
    archive = mem.backup().archive.path
    newer = reseal(archive, tmp_path / "newer.tar.zst", format_version=2,
                   magray_version="9.0.0")
    result = cli("restore", "--yes", str(newer))
    assert result.code == 2 and "format 2" in result.err and "upgrade magray" in result.err
    damaged = tmp_path / "damaged.tar.zst"
    raw = bytearray(newer.read_bytes())
    raw[-60] ^= 1
    damaged.write_bytes(raw)
    assert cli("backup", "verify", str(damaged)).code == 3


def test_newer_schema_is_refused(mem, home, tmp_path):
    fill(mem, 3)
    with mem.db.write() as conn:
        conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                     "VALUES ('magray', 'm999_future', 'x')")
    archive = mem.backup().archive.path
    with Memory.open(tmp_path / "b", embedder=fake()) as other:
        with pytest.raises(InputError, match="newer magray"):
            other.restore(archive)


def test_corrupt_or_truncated_archive_exits_3_and_changes_nothing(mem, home, tmp_path, cli):
    fill(mem)
    archive = mem.backup().archive.path
    mem.store_texts(["written after the backup"])
    before, files_before = dump(_db(home)), tree(home)
    good = archive.read_bytes()
    cases = {"flip": good[:900] + bytes([good[900] ^ 0x10]) + good[901:],
             "truncated": good[: len(good) * 2 // 3], "trailer": good[:-1]}
    for name, data in cases.items():
        bad = tmp_path / f"{name}.tar.zst"
        bad.write_bytes(data)
        result = cli("restore", "--yes", str(bad))
        assert result.code == 3, (name, result)
        assert dump(_db(home)) == before and tree(home) == files_before, name


# -- hostile archives ---------------------------------------------------------------------


def _hostile(case: str, archive: Path, outside: Path) -> bytes:
    members = read_members(archive)
    manifest, rest = json.loads(members[0][1]), members[1:]
    db = dict((m.name, d) for m, d in rest)["data/magray.db"]
    if case == "absolute path":
        return tar_bytes(with_manifest(manifest, rest + [entry(str(outside / "pwned"), b"x")]))
    if case == "dot-dot":
        return tar_bytes(with_manifest(manifest, rest + [
            entry("data/../../../outside/pwned", b"x")]))
    if case == "symlink":
        return tar_bytes(with_manifest(manifest, [entry("data/magray.db", kind=tarfile.SYMTYPE,
                                                        link=str(outside / "pwned"))] + rest))
    if case == "hard link":
        return tar_bytes(with_manifest(manifest, [entry("data/magray.db", kind=tarfile.LNKTYPE,
                                                        link="/etc/passwd")] + rest))
    if case == "device":
        return tar_bytes(with_manifest(manifest, rest + [
            entry("config.toml", kind=tarfile.CHRTYPE)]))
    if case == "fifo":
        return tar_bytes(with_manifest(manifest, rest + [
            entry("config.toml", kind=tarfile.FIFOTYPE)]))
    if case == "directory":
        return tar_bytes(with_manifest(manifest, [entry("data", kind=tarfile.DIRTYPE)] + rest))
    if case == "duplicate":
        return tar_bytes(with_manifest(manifest, rest + [entry("data/magray.db", db)]))
    if case == "unexpected member":
        return tar_bytes(with_manifest(manifest, rest + [entry("data/evil.py", b"x")]))
    if case == "pax header":
        return tar_bytes(with_manifest(manifest, rest + [entry("data/" + "x" * 120, b"x")]),
                         fmt=tarfile.PAX_FORMAT)
    if case == "gnu long name":
        return tar_bytes(with_manifest(manifest, rest + [entry("data/" + "x" * 120, b"x")]),
                         last_fmt=tarfile.GNU_FORMAT)
    if case == "bomb over the cap":  # 256 MiB of zeros, consistent with its manifest
        bomb = [(m, d) if m.name != "data/magray.db" else entry(m.name, bytes(256 << 20))
                for m, d in rest]
        return tar_bytes(with_manifest(manifest, bomb))
    if case == "size lie":  # the manifest says the real size, the header a huge one
        lie = with_manifest(manifest, rest)
        lie[1] = entry("data/magray.db", bytes(256 << 20))
        return tar_bytes(lie)
    if case == "oversized config":
        manifest["members"].append({"name": "config.toml", "size": 0, "sha256": "0" * 64})
        return tar_bytes(with_manifest(manifest, rest + [entry("config.toml",
                                                               b"#" * (2 << 20))]))
    if case == "zeros after the end":
        return tar_bytes(with_manifest(manifest, rest), tail=bytes(8 << 20))
    raise AssertionError(case)


HOSTILE = {
    "absolute path": "an absolute path", "dot-dot": "a '..' component",
    "symlink": "a symbolic link", "hard link": "a hard link",
    "device": "a character device", "fifo": "a FIFO", "directory": "a directory",
    "duplicate": "appears twice", "unexpected member": "not a file a magray backup holds",
    "pax header": "a pax extended header", "gnu long name": "a GNU long-name header",
    "bomb over the cap": "over restore_max_bytes", "size lie": "the tar header says",
    "zeros after the end": "data after the end-of-archive marker",
    "oversized config": "'config.toml' is 2097152 bytes",
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archive_is_refused_with_nothing_written(case, mem, home, tmp_path, cli,
                                                         monkeypatch):
    monkeypatch.setenv("MAGRAY_RESTORE_MAX_BYTES", str(64 << 20))
    fill(mem, 3)
    archive = mem.backup(tmp_path / "good.tar.zst").archive.path
    outside = tmp_path / "outside"
    hostile = seal(_hostile(case, archive, outside), tmp_path / "hostile.tar.zst")
    assert hostile.stat().st_size < 1 << 20  # small on disk, whatever it claims inside
    mem.store_texts(["written after the backup"])
    before, files_before = dump(_db(home)), tree(tmp_path)
    result = cli("restore", "--yes", str(hostile))
    assert result.code == 3, result
    assert HOSTILE[case] in result.err and result.err.count("\n") == 1
    assert tree(tmp_path) == files_before and dump(_db(home)) == before
    assert not outside.exists() and not (tmp_path.parent / "outside").exists()
    with pytest.raises(IntegrityError, match=HOSTILE[case].replace("(", r"\(")):
        verify(hostile, cap=64 << 20)


def test_restore_never_calls_tarfile_extraction():
    source = "".join(p.read_text() for p in (REPO / "magray" / "backup").glob("*.py"))
    assert "extractall" not in source and "extractfile" not in source and ".extract(" not in source


# -- a concurrent writer ------------------------------------------------------------------


WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from fakes import FakeEmbedder
from magray import Memory
stop, progress = Path(sys.argv[2]), Path(sys.argv[3])
n = 0
with Memory.open(embedder=FakeEmbedder(name="all-MiniLM-L6-v2")) as memory:
    while not stop.exists():
        memory.store_texts([f"writer note {n + i}" for i in range(5)],
                           layer=("interact", "insights", "assets")[n // 5 % 3])
        n += 5
        # Renamed into place: a reader never sees the file empty mid-write (it read 0 once).
        progress.with_suffix(".tmp").write_text(str(n))
        progress.with_suffix(".tmp").replace(progress)
"""


def test_backups_under_a_concurrent_writer_restore_consistently(mem, home, tmp_path):
    fill(mem, 5)
    stop, progress = tmp_path / "stop", tmp_path / "progress"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(REPO / "tests"), str(stop), str(progress)],
        env={**os.environ, "PYTHONPATH": str(REPO)})
    archives, written = [], []
    try:
        while not progress.exists() or int(progress.read_text()) < 30:
            assert writer.poll() is None, "the writer died"
            time.sleep(0.05)
        written.append(int(progress.read_text()))
        # Four backups at least, and until the writer has written meanwhile: on a quiet
        # machine four backups can all fit between two of its batches.
        while len(archives) < 4 or (int(progress.read_text()) == written[0]
                                    and len(archives) < 40):
            archives.append(mem.backup().archive.path)
        written.append(int(progress.read_text()))
    finally:
        stop.touch()
        assert writer.wait(timeout=120) == 0
    assert written[-1] > written[0]  # the writer really wrote while the backups ran
    for number, archive in enumerate(archives):
        info = read_info(archive)
        members = dict((m.name, d) for m, d in read_members(archive))
        snapshot = tmp_path / f"snap{number}.db"
        snapshot.write_bytes(members["data/magray.db"])
        conn = sqlite3.connect(snapshot)
        for layer in LAYERS:  # an archived index is never ahead of the archived database
            if f"data/indexes/{layer}.json" in members:
                seq = json.loads(members[f"data/indexes/{layer}.json"])["seq"]
                head = conn.execute("SELECT coalesce(max(seq), 0) FROM index_log WHERE "
                                    "layer = ?", (layer,)).fetchone()[0]
                assert seq <= head
        conn.close()
        with Memory.open(tmp_path / f"restored{number}", embedder=fake()) as copy:
            result = copy.restore(archive)
            assert copy.db.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert all(s.action in ("fresh", "updated") for s in result.synced)
            texts = [r[0] for r in copy.db.conn.execute(
                "SELECT text FROM records WHERE text LIKE 'writer note %'")]
            numbers = sorted(int(t.rsplit(" ", 1)[1]) for t in texts)
            assert numbers == list(range(len(numbers))) and len(numbers) % 5 == 0
            assert sum(info.counts.values()) == 7 + len(numbers)
            for layer in LAYERS:  # every index agrees with the restored database
                index = copy.index(layer)
                assert index.staleness() == ""
                view = index.open_view()
                keys = set(int(k) for k in view.keys) if view is not None else set()
                ids = {r[0] for r in copy.db.conn.execute(
                    "SELECT id FROM records WHERE layer = ?", (layer,))}
                assert keys == ids
