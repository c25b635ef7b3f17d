"""magray backup: what an archive holds, and writing it safely."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from archives import TRAILER, NOW, fill, read_members
from magray import __version__
from magray.backup import layer_files
from magray.backup.verify import verify
from magray.errors import InputError
from magray.records import LAYERS

REPO = Path(__file__).resolve().parents[2]

# -- what an archive holds ----------------------------------------------------------------


def test_manifest_describes_every_member(fake_memory, archive, home):
    members = read_members(archive)  # plain tarfile over zstd reads it
    names = [m.name for m, _ in members]
    assert names[0] == "manifest.json"
    assert set(names[1:]) == {"data/magray.db"} | {
        f"data/indexes/{layer}.{ext}" for layer in LAYERS for ext in ("usearch", "json")}
    assert all(m.isfile() and m.mode == 0o600 for m, _ in members)
    manifest = json.loads(members[0][1])
    assert manifest["format"] == "magray-backup" and manifest["format_version"] == 1
    assert manifest["magray_version"] == __version__
    assert manifest["created_at"] == "2025-03-04T05:06:07.000000+00:00"
    assert (manifest["model"], manifest["model_key"], manifest["dim"]) == (
        "fake-bow", "fake-bow", 128)
    assert manifest["counts"] == {"interact": 30, "insights": 5, "assets": 3}
    assert manifest["store_id"] == fake_memory.db.store_id
    data = {m.name: blob for m, blob in members}
    assert [m["name"] for m in manifest["members"]] == names[1:]
    for member in manifest["members"]:
        assert member["size"] == len(data[member["name"]])
        assert member["sha256"] == hashlib.sha256(data[member["name"]]).hexdigest()
    assert archive.name == "magray-20250304T050607Z.tar.zst"
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "backups").stat().st_mode) == 0o700


def test_container_is_zstd_with_checksum_and_a_sha256_trailer(archive):
    import zstandard

    raw = archive.read_bytes()
    assert zstandard.get_frame_parameters(raw[:18]).has_checksum
    magic, length, tag, digest = TRAILER.unpack(raw[-TRAILER.size:])
    assert (magic, length, tag) == (0x184D2A5E, 40, b"MGRYSUM1")
    assert digest == hashlib.sha256(raw[:-TRAILER.size]).digest()


def test_database_member_is_a_sound_self_contained_snapshot(archive, tmp_path):
    db = tmp_path / "snap.db"
    db.write_bytes(dict((m.name, d) for m, d in read_members(archive))["data/magray.db"])
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert conn.execute("SELECT count(*) FROM records").fetchone() == (38,)
    conn.close()


def test_config_file_is_archived(fake_memory, home):
    (home / "config.toml").write_text("# mine\ntop_k = 7\n")
    fill(fake_memory, 3)
    members = dict((m.name, d) for m, d in read_members(fake_memory.backup().archive.path))
    assert members["config.toml"] == b"# mine\ntop_k = 7\n"


def test_layer_files_agree_with_layer_index(fake_memory):
    fill(fake_memory, 2)
    for layer in LAYERS:
        index = fake_memory.index(layer)
        assert layer_files(fake_memory.paths, layer) == (index.path, index.sidecar,
                                                         index.lock_path)


def test_an_empty_memory_backs_up_and_verifies(fake_memory):
    info = fake_memory.backup().archive
    assert info.records == 0 and info.model is None
    assert verify(info.path).records == 0


# -- writing safely -----------------------------------------------------------------------


def test_interrupted_backup_leaves_nothing(fake_memory, home):
    fill(fake_memory)

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fake_memory.backup(progress=interrupt)
    assert os.listdir(home / "backups") == []


KILLER = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from fakes import FakeEmbedder
from magray import Memory
with Memory.open(embedder=FakeEmbedder()) as memory:
    memory.store_texts([f"note {i}" for i in range(40)])
    memory.backup(progress=lambda done, total: os.kill(os.getpid(), signal.SIGKILL))
"""


def test_killed_backup_leaves_no_archive_and_its_leftovers_are_cleaned(home, fake_memory):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", KILLER, str(REPO / "tests")], env=env)
    assert done.returncode == -signal.SIGKILL
    backups = home / "backups"
    leftovers = sorted(p.name for p in backups.iterdir())
    assert leftovers and all(name.startswith(".") for name in leftovers)  # only temp names
    assert list(backups.glob("*.tar.zst")) == []
    assert fake_memory.backups().archives == ()
    info = fake_memory.backup().archive
    assert sorted(p.name for p in backups.iterdir()) == [info.path.name]


def test_output_directory_or_file_and_never_an_overwrite(fake_memory, tmp_path, monkeypatch):
    monkeypatch.setenv("MAGRAY_NOW", NOW)
    fill(fake_memory, 2)
    first = fake_memory.backup(tmp_path / "out").archive.path
    second = fake_memory.backup(tmp_path / "out").archive.path  # same second: a new name
    assert first.name == "magray-20250304T050607Z.tar.zst"
    assert second.name == "magray-20250304T050607Z-2.tar.zst"
    named = fake_memory.backup(tmp_path / "mine.tar.zst").archive.path
    assert named == tmp_path / "mine.tar.zst" and verify(named).records == 10
    with pytest.raises(InputError, match="already exists"):
        fake_memory.backup(tmp_path / "mine.tar.zst")
    with pytest.raises(InputError, match="does not exist"):
        fake_memory.backup(tmp_path / "nowhere" / "x.tar.zst")
    (tmp_path / "plain").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        fake_memory.backup(tmp_path / "plain")


def test_backup_cli_is_silent_for_cron_and_json_for_scripts(fake_memory, cli, home):
    fill(fake_memory, 3)
    quiet = cli("backup")
    assert (quiet.code, quiet.out, quiet.err) == (0, "", "")
    result = cli("backup", "--json", "--output", str(home / "elsewhere/"))
    data = json.loads(result.out)
    assert set(data) == {"path", "size", "created_at", "records", "counts", "model",
                         "model_key", "dim", "format_version", "magray_version", "verified",
                         "pruned"}
    assert data["records"] == 11 and data["verified"] is True and data["pruned"] is None
    assert Path(data["path"]).parent == home / "elsewhere"
    assert data["size"] == Path(data["path"]).stat().st_size


def test_backup_never_loads_the_model(fake_memory, home):
    fill(fake_memory, 3)
    code = ("import sys\nfrom magray.cli import main\n"
            "try:\n    main(['backup'])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in ('torch', 'sentence_transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_progress_bar_counts_mib_and_closes_when_complete(monkeypatch):
    from contextlib import contextmanager

    from magray.cli import backup as cli_backup, output

    events = []

    @contextmanager
    def fake_progress(total, label):
        events.append(("open", total, label))
        yield lambda n: events.append(("advance", n))
        events.append(("close",))

    monkeypatch.setattr(output, "progress", fake_progress)
    with cli_backup._progress("backing up") as update:
        for done in (0, 1 << 19, 3 << 20, 100 << 20):
            update(done, 100 << 20)
        assert events[-1] == ("close",)  # closed as soon as the count was complete
    assert events[0] == ("open", 100, "backing up")
    assert sum(e[1] for e in events if e[0] == "advance") == 100
