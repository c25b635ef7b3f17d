"""The Writer (magray/write.py): the paths no other test reaches. A text thought to be
stored already whose record is deleted before the insert is embedded after all, by store
and by import; and each call times itself alone (its Op is the call's, never shared)."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import FakeEmbedder

from magray import NewRecord, clock
from magray.errors import StoreInterrupted
from magray.transfer import Entry


def delete_after_checking(memory, monkeypatch, text: str) -> list[int]:
    """Make the Writer's 'already stored?' check answer truly, then trash the record of
    ``text``: what another process's forget between the check and the insert does."""
    real = memory.db.existing
    trashed: list[int] = []

    def existing(layer, hashes):
        found = real(layer, hashes)
        for record in memory.list_records(limit=None):
            if record.text == text and record.content_hash in found and not trashed:
                with memory.db.write() as tx:
                    memory.db.trash(tx, record.id, "forgotten", clock.now_iso())
                trashed.append(record.id)
        return found

    monkeypatch.setattr(memory.db, "existing", existing)
    return trashed


def test_a_duplicate_deleted_before_its_insert_is_stored_with_a_fresh_vector(fake_memory,
                                                                             monkeypatch):
    first = fake_memory.store_texts(["the zephyr note that was here"])[0]
    trashed = delete_after_checking(fake_memory, monkeypatch, "the zephyr note that was here")
    again = fake_memory.writer.store_records([NewRecord(text="the zephyr note that was here"),
                                              NewRecord(text="a new note")])
    assert trashed == [first.id]
    assert [s.duplicate for s in again] == [False, False] and again[0].id != first.id
    keys, vectors = fake_memory.db.vectors([again[0].id], fake_memory.dim)
    expected = fake_memory.embedder.embed_documents(["the zephyr note that was here"])[0]
    assert keys.tolist() == [again[0].id] and np.allclose(vectors[0], expected)
    assert [h.record.id for h in fake_memory.search("zephyr", mode="keyword")] == [again[0].id]


def test_an_import_whose_duplicate_was_deleted_embeds_the_text(fake_memory, monkeypatch):
    first = fake_memory.store_texts(["an exported note"])[0]
    record = fake_memory.get(first.id)
    trashed = delete_after_checking(fake_memory, monkeypatch, "an exported note")
    report = fake_memory.writer.import_records([Entry(record)])  # no vector in the file
    assert trashed == [first.id]
    assert (report.added, report.merged, report.embedded) == (1, 0, 1)
    restored = fake_memory.list_records(limit=None)
    assert [r.text for r in restored] == ["an exported note"]
    keys, vectors = fake_memory.db.vectors([r.id for r in restored], fake_memory.dim)
    assert np.allclose(vectors[0], fake_memory.embedder.embed_documents(["an exported note"])[0])


class StopsOnce(FakeEmbedder):
    """Ctrl-C on the first batch it embeds, then embeds normally."""

    def embed_documents(self, texts):
        if self.calls == 0:
            self.calls += 1
            raise KeyboardInterrupt
        return super().embed_documents(texts)


def test_each_store_call_is_timed_alone(home):
    from magray import Memory

    with Memory.open(home, embedder=StopsOnce()) as memory:
        with pytest.raises(StoreInterrupted):
            memory.store_texts(["lost to the interrupt", "this one too"])
        memory.store_texts(["one", "two", "three"])
        memory.store_texts(["four"])
        rows = memory.db.conn.execute(
            "SELECT op, items, cache_misses FROM ops ORDER BY rowid").fetchall()
    # The interrupted call recorded nothing (its figures ride on its last commit) and lent
    # none of its counts to the calls after it.
    assert rows == [("store", 3, 3), ("store", 1, 1)]
