"""Retention for cron: which of a memory's archives to keep (daily, weekly, monthly), and
deleting the rest, never the newest that verifies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Sequence

from .. import files
from ..errors import InputError, IntegrityError
from .layout import same_path
from .manifest import BackupInfo
from .verify import list_archives, verify


@dataclass(frozen=True)
class Retention:
    """Grandfather-father-son retention: keep the newest archive of each of the last N days,
    weeks and months that have archives (None: that rule is not used)."""

    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None

    def __post_init__(self) -> None:
        for name in ("daily", "weekly", "monthly"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InputError(f"{name} must be a whole number, 0 or more", param=name)

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.daily, self.weekly, self.monthly))


@dataclass(frozen=True)
class Pruned:
    """What retention kept and removed (``dry_run``: would have removed)."""

    kept: tuple[BackupInfo, ...]
    removed: tuple[BackupInfo, ...]
    dry_run: bool = False


def select_kept(times: Sequence[datetime], retention: Retention, tz: tzinfo | None = None
                ) -> set[int]:
    """Indices of ``times`` that retention keeps, as restic's ``forget`` does: going from
    newest to oldest, each rule keeps the newest archive of each of its last N buckets
    (calendar days, ISO weeks, months in ``tz``, default local time) that hold one."""
    rules = [(retention.daily, lambda t: t.date()),
             (retention.weekly, lambda t: t.isocalendar()[:2]),
             (retention.monthly, lambda t: (t.year, t.month))]
    left = [n or 0 for n, _ in rules]
    last: list[object] = [None] * len(rules)
    kept: set[int] = set()
    for i in sorted(range(len(times)), key=lambda i: times[i], reverse=True):
        moment = times[i].astimezone(tz)
        for r, (_, bucket_of) in enumerate(rules):
            bucket = bucket_of(moment)
            if left[r] > 0 and bucket != last[r]:
                kept.add(i)
                last[r] = bucket
                left[r] -= 1
    return kept


def prune(directory: Path, store_id: str, retention: Retention, *, protect: Path | None = None,
          dry_run: bool = False, cap: int | None = None, tz: tzinfo | None = None) -> Pruned:
    """Delete this store's archives in ``directory`` that retention does not keep. The newest
    archive that verifies (``protect``, or found by verifying newest first) is always kept;
    archives of other stores and unreadable files are never touched."""
    mine = [a for a in list_archives(directory).archives if a.store_id == store_id]
    if not mine:
        return Pruned((), (), dry_run)
    if protect is None:
        protect = _newest_verified(mine, cap)
    kept_at = select_kept([a.created for a in mine], retention, tz)
    kept_at |= {i for i, a in enumerate(mine) if same_path(a.path, protect)}
    kept = [a for i, a in enumerate(mine) if i in kept_at]
    removed = [a for i, a in enumerate(mine) if i not in kept_at]
    if not dry_run:
        for item in removed:
            item.path.unlink(missing_ok=True)
        if removed:
            files.sync_dir(Path(directory))
    return Pruned(tuple(kept), tuple(removed), dry_run)


def _newest_verified(archives: Sequence[BackupInfo], cap: int | None) -> Path:
    for item in sorted(archives, key=lambda a: a.created_at, reverse=True):
        try:
            return verify(item.path, cap=cap).path
        except IntegrityError:
            continue
    raise IntegrityError("none of this memory's archives verifies; nothing was deleted")
