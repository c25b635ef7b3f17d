"""Fixtures shared by the backup tests."""

from __future__ import annotations

import pytest

from archives import NOW, fill


@pytest.fixture
def archive(fake_memory, monkeypatch):
    """An archive of a filled memory (38 records), made at NOW with the fake model."""
    monkeypatch.setenv("MAGRAY_NOW", NOW)
    fill(fake_memory)
    return fake_memory.backup().archive.path
