"""Sizes and durations for people, each in one convention everywhere (a leaf module).

Sizes are IEC (powers of 1024: KiB, MiB, GiB), as the README and every command show them;
durations use s, min, h and d, switching to the next unit only at two of it, so a TTL of
24 h reads "24 h" rather than "1.0 d".
"""

from __future__ import annotations

from datetime import timedelta

_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_DURATION_UNITS = (("d", 86400), ("h", 3600), ("min", 60))


def size(n: int) -> str:
    """Bytes for people: 812 B, 1.5 KiB, 3.0 MiB, 5.0 GiB."""
    value = float(n)
    for unit in _SIZE_UNITS:
        if abs(value) < 1024 or unit == _SIZE_UNITS[-1]:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("not reached")


def duration(span: float | timedelta) -> str:
    """A duration (seconds or a timedelta) for people: 250 ms, 1.5 s, 40 s, 12 min, 24 h,
    3.5 d."""
    seconds = span.total_seconds() if isinstance(span, timedelta) else float(span)
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds == 0:
        return "0 s"
    if seconds < 1:
        return f"{sign}{seconds * 1000:.0f} ms"
    for unit, length in _DURATION_UNITS:
        if seconds >= 2 * length:
            return sign + _figures(seconds / length, unit)
    return sign + _figures(seconds, "s")


def _figures(value: float, unit: str) -> str:
    return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
