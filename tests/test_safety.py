"""Failure paths of the write paths: nothing acknowledged is lost, nothing committed is
reported as failed, and every failure is told in one line (issue 13, data safety)."""

from __future__ import annotations

import pytest

from magray import Memory
from magray.locks import locked

from conftest import FakeEmbedder


@pytest.fixture
def fake_cli(cli, monkeypatch):
    """The CLI with the fake embedder in place of the model (for logic not about meaning)."""
    monkeypatch.setattr("magray.memory.from_settings", lambda *a, **k: FakeEmbedder())
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
    with Memory.open(home, embedder=FakeEmbedder(), warn=warnings.append) as memory:
        [stored] = memory.store_texts(["deploys go through the staging cluster first"])
        memory.settings = memory.settings.replace(busy_timeout=0.1)
        memory._indexes.clear()
        with locked(home / "data" / "indexes" / "insights.lock", timeout=1):
            report = memory.promote(ids=[stored.id], threshold=0)
        assert [d.outcome for d in report.decisions] == ["promoted"]
        assert memory.get(stored.id).layer == "insights"
        assert any("insights index could not be updated" in w for w in warnings)
