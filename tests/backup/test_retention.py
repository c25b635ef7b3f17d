"""magray backup retention: which archives a policy keeps, and pruning the rest."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from archives import fill, read_members, seal, tar_bytes, with_manifest
from fakes import FakeEmbedder
from magray import Memory
from magray.backup import Retention, list_archives, prune, select_kept

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
