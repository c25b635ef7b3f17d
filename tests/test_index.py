"""The index is a cache of the database: recall, staleness, and repair without the model."""

import os

import numpy as np
import pytest

from magray import Memory
from magray.index import LayerIndex

from fakes import FakeEmbedder
from corpus import QUERIES, sentences


def test_recall_against_exact_search(memory):
    """Approximate search agrees with brute force over the stored vectors (real model)."""
    memory.store_texts(sentences(2000))
    keys, vectors = next(memory.db.layer_vectors("interact", memory.dim, batch=10**6))
    found = 0
    for query in memory.embedder.embed_documents(QUERIES):
        exact = set(keys[np.argsort(-(vectors @ query))[:10]].tolist())
        found += len(exact & {i for i, _ in memory.index("interact").search(query, 10)})
    assert found / (10 * len(QUERIES)) >= 0.99


def _results(memory, queries):
    return [[(h.record.id, round(h.score, 5)) for h in
             memory.search(q, mode="vector", track=False)] for q in queries]


@pytest.fixture
def indexed(home):
    """300 records; ef_search high enough that the approximate search is exact here, so
    results before and after a repair can be compared for equality."""
    from magray import config

    settings = config.load(None).replace(hnsw_ef_search=500)
    with Memory.open(home, settings=settings, embedder=FakeEmbedder()) as memory:
        memory.store_texts(sentences(300))
        queries = ["the cat painted", "a blue fence", "jazz history"]
        yield memory, queries, _results(memory, queries)


def test_fresh_after_store(indexed):
    memory, _, _ = indexed
    assert memory.index("interact").staleness() == ""
    state = memory.index("interact").state()
    assert state.count == 300 and state.seq == memory.db.log_head("interact")


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate", "sidecar", "both"])
def test_damaged_index_repaired_on_next_command(indexed, damage):
    memory, queries, before = indexed
    index = memory.index("interact")
    if damage in ("delete", "both"):
        index.path.unlink()
    if damage in ("sidecar", "both"):
        index.sidecar.unlink()
    if damage == "garbage":
        index.path.write_bytes(os.urandom(index.path.stat().st_size))
    if damage == "truncate":
        with open(index.path, "r+b") as handle:
            handle.truncate(index.path.stat().st_size // 2)
    assert index.staleness() != ""
    calls = memory.embedder.calls
    assert _results(memory, queries) == before
    assert memory.embedder.calls == calls  # repaired from stored vectors, nothing re-embedded
    assert index.staleness() == ""


def test_write_whose_index_save_never_happened(indexed, monkeypatch):
    memory, queries, before = indexed
    monkeypatch.setattr(LayerIndex, "sync", lambda self, rebuild=False: None)
    new_id = memory.store_texts(["brand new note on jazz history"])[0].id
    monkeypatch.undo()
    index = memory.index("interact")
    assert index.staleness().startswith("behind the database")
    hits = memory.search("brand new note on jazz history", mode="vector", top_k=1, track=False)
    assert hits[0].record.id == new_id
    assert index.staleness() == "" and index.state().count == 301


def test_deleted_records_leave_the_index(indexed):
    memory, _, _ = indexed
    victim = memory.search("a blue fence", mode="vector", top_k=1, track=False)[0].record.id
    with memory.db.write() as conn:
        conn.execute("DELETE FROM records WHERE id = ?", (victim,))
    keys = {i for i, _ in memory.index("interact").search(
        memory.embedder.embed_query("a blue fence"), 100)}
    assert victim not in keys
    assert memory.index("interact").state().count == len(memory.index("interact").open_view())
    assert memory.index("interact").state().count == 299


def test_crash_between_index_rename_and_sidecar(indexed, monkeypatch):
    """The sidecar is written after the index file: a crash in between leaves an index newer
    than its sidecar, which a replay brings in step (it is idempotent)."""
    memory, queries, before = indexed
    import magray.files as files

    real = files.write_atomic
    monkeypatch.setattr(files, "write_atomic", lambda *a: (_ for _ in ()).throw(OSError("boom")))
    memory.store_texts(["one more note on the lighthouse"])
    monkeypatch.setattr(files, "write_atomic", real)
    index = memory.index("interact")
    assert index.staleness() != ""
    memory.sync()
    assert index.staleness() == "" and index.state().count == 301
    assert _results(memory, queries)[0][0][0] in {i for i, _ in before[0]} | {301}


def test_leftover_temporary_files_removed(indexed):
    memory, _, _ = indexed
    leftover = memory.paths.indexes / ".interact.usearch.tmp-99999"
    leftover.write_bytes(b"half an index")
    memory.index("interact").sync(rebuild=True)
    assert not leftover.exists()


def test_changed_settings_rebuild(indexed, home):
    memory, queries, before = indexed
    settings = memory.settings.replace(hnsw_m=8)
    with Memory.open(home, settings=settings, embedder=memory.embedder) as other:
        assert "other settings" in other.index("interact").staleness()
        assert _results(other, queries) == before
        assert other.index("interact").state().spec.m == 8


@pytest.mark.parametrize("moment", ["before index rename", "after index rename"])
def test_fault_around_the_index_rename(indexed, monkeypatch, moment):
    """A writer dies just before or just after renaming the new index into place: the
    record is in the database, the next command repairs the index, nothing is left over."""
    memory, queries, before = indexed
    import magray.files as files

    real_replace = os.replace

    def faulty(src, dst):
        if str(dst).endswith(".usearch") and moment == "before index rename":
            raise OSError("simulated crash before rename")
        real_replace(src, dst)
        if str(dst).endswith(".usearch") and moment == "after index rename":
            raise OSError("simulated crash after rename")

    monkeypatch.setattr(files.os, "replace", faulty)
    warnings = []
    monkeypatch.setattr(memory, "warn", warnings.append)
    memory.store_texts(["a note stored during a crash"])  # acknowledged: it is in the database
    monkeypatch.undo()
    assert "the next command will repair it" in warnings[0]
    index = memory.index("interact")
    assert index.staleness() != ""
    hits = memory.search("a note stored during a crash", mode="vector", top_k=1, track=False)
    assert hits[0].record.text == "a note stored during a crash"
    assert index.staleness() == "" and index.state().count == 301
    assert not files.leftovers(index.path) and not files.leftovers(index.sidecar)
