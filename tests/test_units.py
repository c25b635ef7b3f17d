"""Sizes and durations for people: one convention each (magray/units.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from magray import units


def test_sizes_are_iec():
    assert [units.size(n) for n in (0, 812, 1536, 3 << 20, 5 << 30)] == [
        "0 B", "812 B", "1.5 KiB", "3.0 MiB", "5.0 GiB"]


@pytest.mark.parametrize("span, shown", [
    (timedelta(seconds=40), "40 s"),
    (timedelta(hours=24), "24 h"),  # a unit is used from two of it on: a TTL reads as set
    (timedelta(days=90), "90 d"),
    (timedelta(days=3, hours=12), "3.5 d"),
    (timedelta(minutes=30), "30 min"),
    (1.5, "1.5 s"),
    (0.25, "250 ms"),
    (0, "0 s"),
    (-7200, "-2.0 h"),  # a clock that went back reads as such, not as a huge number
])
def test_durations_read_as_people_say_them(span, shown):
    assert units.duration(span) == shown
