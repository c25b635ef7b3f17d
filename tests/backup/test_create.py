"""magray backup: archive contents, verification, interruption, listing and retention."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from archives import (TRAILER, entry, manifest_of, read_members, reseal, seal, tar_bytes,
                      with_manifest)
from fakes import FakeEmbedder
from magray import IntegrityError, Memory, __version__
from magray.backup import (LAYERS, Retention, layer_files, list_archives, prune, select_kept,
                           verify)
from magray.errors import InputError

REPO = Path(__file__).resolve().parents[2]
NOW = "2025-03-04T05:06:07+00:00"


def fill(memory, n: int = 30) -> None:
    memory.store_texts([f"note {i} about deploying service {i % 7}" for i in range(n)])
    memory.store_texts([f"decision {i}: use sqlite for local state" for i in range(5)],
                       layer="insights")
    memory.store_texts([f"how-to {i}: rotate the ssh keys yearly" for i in range(3)],
                       layer="assets")


@pytest.fixture
def archive(fake_memory, monkeypatch):
    monkeypatch.setenv("MAGRAY_NOW", NOW)
    fill(fake_memory)
    return fake_memory.backup().archive.path


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


# -- verification -------------------------------------------------------------------------


def _positions(size: int) -> list[int]:
    """Every byte of the first and last 600, and every 7th byte between."""
    return sorted(set(range(min(600, size))) | set(range(max(0, size - 600), size))
                  | set(range(0, size, 7)))


def test_every_single_byte_flip_is_detected(archive, tmp_path):
    good = archive.read_bytes()
    bad = tmp_path / "bad.tar.zst"
    bad.write_bytes(good)
    fd = os.open(bad, os.O_RDWR)
    checked = 0
    try:
        for position in _positions(len(good)):
            for bit in (0x01, 0x80):
                os.pwrite(fd, bytes([good[position] ^ bit]), position)
                with pytest.raises(IntegrityError, match="failed verification|trailer|zstd"):
                    verify(bad)
                checked += 1
            os.pwrite(fd, good[position:position + 1], position)
    finally:
        os.close(fd)
    assert checked > 1000 and verify(bad).records == 38


def test_every_truncation_is_detected(archive, tmp_path):
    good = archive.read_bytes()
    bad = tmp_path / "short.tar.zst"
    bad.write_bytes(good)
    for length in sorted(set(range(0, len(good), 97)) | {1, 47, 48, len(good) - 1},
                         reverse=True):
        os.truncate(bad, length)
        with pytest.raises(IntegrityError):
            verify(bad)


def test_verify_cli_names_the_failed_check(archive, tmp_path, cli):
    ok = cli("backup", "verify", str(archive))
    assert ok.code == 0 and ok.out.startswith(f"ok: {archive}")
    good = archive.read_bytes()
    trailer = tmp_path / "trailer.tar.zst"
    trailer.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    result = cli("backup", "verify", str(trailer))
    assert result.code == 3 and "archive checksum" in result.err and result.out == ""
    short = tmp_path / "short.tar.zst"
    short.write_bytes(good[: len(good) // 2])
    result = cli("backup", "verify", str(short))
    assert result.code == 3 and "truncated" in result.err
    assert result.err.count("\n") == 1 and result.err.startswith("error: ")


def test_verify_refuses_what_is_not_a_regular_file(tmp_path, cli):
    fifo = tmp_path / "pipe.tar.zst"
    os.mkfifo(fifo)
    assert cli("backup", "verify", str(fifo)).code == 2  # refused, not opened (no hang)
    assert cli("backup", "verify", str(tmp_path)).code == 2
    assert cli("backup", "verify", str(tmp_path / "missing.tar.zst")).code == 1


def test_member_hash_mismatch_is_named(archive, tmp_path):
    forged = reseal(archive, tmp_path / "forged.tar.zst")  # valid container, ...
    manifest = manifest_of(forged)
    manifest["members"][0]["sha256"] = "0" * 64          # ... but a wrong member hash
    members = read_members(archive)[1:]
    seal(tar_bytes([entry("manifest.json", json.dumps(manifest).encode())] + members), forged)
    with pytest.raises(IntegrityError, match="member 'data/magray.db': SHA-256"):
        verify(forged)


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


# -- listing ------------------------------------------------------------------------------


def test_list_shows_time_size_counts_and_unreadable_files(fake_memory, cli, home, monkeypatch):
    fill(fake_memory, 4)
    for day in ("2025-01-02", "2025-01-01"):
        monkeypatch.setenv("MAGRAY_NOW", f"{day}T10:00:00+00:00")
        fake_memory.backup()
    (home / "backups" / "junk.tar.zst").write_bytes(b"not an archive")
    listing = fake_memory.backups()
    assert [a.created_at[:10] for a in listing.archives] == ["2025-01-01", "2025-01-02"]
    assert [p.name for p, _ in listing.unreadable] == ["junk.tar.zst"]
    result = cli("backup", "list", "--json")
    data = json.loads(result.out)
    assert [a["records"] for a in data["archives"]] == [12, 12]
    assert data["archives"][0]["counts"] == {"interact": 4, "insights": 5, "assets": 3}
    assert data["unreadable"][0]["path"].endswith("junk.tar.zst")
    plain = cli("backup", "list")
    lines = plain.out.splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[2] == "12"
    assert "unreadable" in plain.err


# -- retention ----------------------------------------------------------------------------

# Daily backups at 03:00 UTC through 2025, kept by --keep-daily 7 --keep-weekly 4
# --keep-monthly 12. 2025-12-31 is a Wednesday in ISO week 2026-W01 (Dec 29 - Jan 4).
YEAR_KEPT = sorted(
    [date(2025, 12, d) for d in range(25, 32)]             # daily: the last 7 days
    + [date(2025, 12, 21), date(2025, 12, 14)]              # weekly: Sundays of W51, W50
    # (W01's newest is Dec 31 and W52's is Dec 28: both kept as dailies already)
    + [date(2025, m, d) for m, d in ((1, 31), (2, 28), (3, 31), (4, 30), (5, 31), (6, 30),
                                     (7, 31), (8, 31), (9, 30), (10, 31), (11, 30))])
# monthly: the last day of each month (December's is Dec 31, a daily)


def _year() -> list[datetime]:
    start = datetime(2025, 1, 1, 3, tzinfo=timezone.utc)
    return [start + timedelta(days=n) for n in range(365)]


def test_retention_selection_over_a_year():
    times = _year()
    kept = select_kept(times, Retention(daily=7, weekly=4, monthly=12), timezone.utc)
    assert sorted(times[i].date() for i in kept) == YEAR_KEPT
    only_new = select_kept(times, Retention(daily=0), timezone.utc)
    assert only_new == set()
    several_a_day = [t + timedelta(hours=h) for t in times[-3:] for h in (0, 6, 12)]
    kept = select_kept(several_a_day, Retention(daily=2), timezone.utc)
    assert sorted(several_a_day[i] for i in kept) == [several_a_day[5], several_a_day[8]]


def test_a_simulated_year_of_daily_pruned_backups(fake_memory, tmp_path, monkeypatch):
    """A cron year: every day a new archive appears and retention runs; what survives is
    exactly the expected set. Daily archives are made by resealing one real archive with
    that day's creation time (a real backup costs fsyncs; the retention logic is the same)."""
    fill(fake_memory, 3)
    template = read_members(fake_memory.backup(tmp_path / "t.tar.zst").archive.path)
    manifest = json.loads(template[0][1])
    directory = tmp_path / "year"
    directory.mkdir()
    policy = Retention(daily=7, weekly=4, monthly=12)
    for moment in _year():
        stamp = moment.strftime("%Y%m%dT%H%M%SZ")
        manifest["created_at"] = moment.isoformat(timespec="microseconds")
        made = seal(tar_bytes(with_manifest(manifest, template[1:])),
                    directory / f"magray-{stamp}.tar.zst")
        prune(directory, fake_memory.db.store_id, policy, protect=made, tz=timezone.utc)
    survivors = sorted(a.created.date() for a in list_archives(directory).archives)
    assert survivors == YEAR_KEPT


def test_real_daily_backups_with_retention_from_the_cli(fake_memory, cli, home, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    import time

    time.tzset()
    fill(fake_memory, 3)
    start = datetime(2025, 1, 20, 3, tzinfo=timezone.utc)
    for n in range(24):  # Jan 20 .. Feb 12
        monkeypatch.setenv("MAGRAY_NOW", (start + timedelta(days=n)).isoformat())
        result = cli("backup", "--keep-daily", "3", "--keep-weekly", "2", "--keep-monthly",
                     "2", "--json")
        assert result.code == 0, result.err
    kept = [a.created.date() for a in fake_memory.backups().archives]
    # dailies Feb 10-12; weekly: W07 newest Feb 12, W06 newest Feb 9; monthly: Jan 31
    assert kept == [date(2025, 1, 31), date(2025, 2, 9), date(2025, 2, 10),
                    date(2025, 2, 11), date(2025, 2, 12)]
    last = json.loads(result.out)["pruned"]
    assert sorted(Path(p).name for p in last["kept"]) == sorted(
        a.path.name for a in fake_memory.backups().archives)
    assert last["removed"] == []  # Feb 12 displaces nothing: Feb 11 stays a daily


def test_newest_verified_archive_is_never_deleted(fake_memory, monkeypatch, home):
    fill(fake_memory, 3)
    paths = []
    for day in ("2025-05-01", "2025-05-02", "2025-05-03"):
        monkeypatch.setenv("MAGRAY_NOW", f"{day}T03:00:00+00:00")
        paths.append(fake_memory.backup().archive.path)
    # keep nothing by the rules: the newest verified archive survives all the same
    pruned = fake_memory.prune_backups(Retention(daily=0))
    assert [a.path for a in pruned.kept] == [paths[2]]
    # when the newest is damaged, the newest that verifies is the one protected
    monkeypatch.setenv("MAGRAY_NOW", "2025-05-04T03:00:00+00:00")
    newest = fake_memory.backup().archive.path
    newest.write_bytes(newest.read_bytes()[:-1] + b"\0")
    pruned = fake_memory.prune_backups(Retention(daily=0))
    assert [a.path for a in pruned.kept] == [paths[2]]
    assert [a.path for a in pruned.removed] == [newest]


def test_prune_leaves_other_stores_and_unreadable_files_alone(fake_memory, tmp_path, home):
    fill(fake_memory, 3)
    mine = fake_memory.backup().archive.path
    with Memory.open(tmp_path / "other", embedder=FakeEmbedder()) as other:
        other.store_texts(["someone else's note"])
        theirs = other.backup(home / "backups").archive.path
    junk = home / "backups" / "junk.tar.zst"
    junk.write_bytes(b"junk")
    dry = fake_memory.prune_backups(Retention(daily=0), dry_run=True)
    assert dry.dry_run and [a.path for a in dry.kept] == [mine]
    assert mine.exists() and theirs.exists() and junk.exists()


def test_prune_cli_needs_a_rule_and_reports(fake_memory, cli):
    fill(fake_memory, 2)
    fake_memory.backup()
    assert cli("backup", "prune").code == 2
    result = cli("backup", "prune", "--keep-daily", "1", "--dry-run", "--json")
    assert result.code == 0 and json.loads(result.out)["dry_run"] is True
    assert cli("backup", "--json", "list").code == 2  # create options before a subcommand


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

