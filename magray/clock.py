"""Time in magray: aware UTC datetimes, stored as fixed-width ISO 8601 text.

The fixed width (always microseconds, always +00:00) makes stored timestamps sort and
compare correctly as plain strings, in Python and in SQL alike.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone

from .errors import InputError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w|y)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def now() -> datetime:
    """The current time; ``MAGRAY_NOW`` (ISO 8601) pins it, for tests and reproducible runs."""
    pinned = os.environ.get("MAGRAY_NOW")
    if pinned:
        return parse_time(pinned, what="MAGRAY_NOW")
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """Fixed-width UTC text for a datetime."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def now_iso() -> str:
    return iso(now())


def parse_time(text: str, *, what: str = "time") -> datetime:
    """Parse ISO 8601 (a date, or a date and time); a naive time is taken as local time."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{what}: expected an ISO 8601 date or time, got {text!r}")
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"{what}: {text!r} is not an ISO 8601 date or time") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local wall-clock time, as a person means it
    return moment.astimezone(timezone.utc)


def parse_duration(text: str, *, what: str = "duration") -> timedelta | None:
    """Parse ``90s``, ``15m``, ``24h``, ``90d``, ``2w``, ``1y``; ``none``/``0`` means no limit."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return None if text == 0 else timedelta(seconds=float(text))
    if not isinstance(text, str):
        raise InputError(f"{what}: expected a duration like '24h' or '90d', got {text!r}")
    if text.strip().lower() in ("none", "0", "never", ""):
        return None
    match = _DURATION.match(text)
    if not match:
        raise InputError(f"{what}: {text!r} is not a duration like '24h', '90d' or 'none'")
    return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2].lower()])


def parse_since(text: str, *, what: str) -> str:
    """A bound for ``--since``/``--until``: ISO 8601, or a duration ago (``7d`` = 7 days ago)."""
    if _DURATION.match(text or ""):
        return iso(now() - parse_duration(text, what=what))
    return iso(parse_time(text, what=what))
