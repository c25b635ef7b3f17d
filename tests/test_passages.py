"""Long texts: every passage is embedded, so a fact past the model's window is found."""

from __future__ import annotations

import numpy as np
import pytest

from long_notes import SHORT, notes


@pytest.fixture
def stored(memory):
    texts = [note for note, _ in notes()]
    ids = {text: s.id for text, s in zip(texts, memory.store_texts(texts, layer="assets"))}
    memory.store_texts(SHORT)
    return ids


def test_window_is_the_model_s_own(real_embedder):
    from magray import passages

    tokens = passages.tokens_for(real_embedder)
    assert tokens.window == 254  # all-MiniLM-L6-v2: 256 with [CLS] and [SEP]
    note = notes()[0][0]
    spans = passages.spans(note, tokens)
    assert len(spans) > 3 and spans[0][0] == 0 and spans[-1][1] == len(note)
    for (a, b), (c, d) in zip(spans, spans[1:]):
        assert c < b  # neighbours overlap
    assert all(len(tokens.offsets(note[a:b])) <= tokens.window for a, b in spans)


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_a_fact_past_the_window_is_found(memory, stored, mode):
    for note, query in notes():
        hits = memory.search(query, top_k=3, mode=mode, track=False)
        assert stored[note] in [h.record.id for h in hits], query
        hit = next(h for h in hits if h.record.id == stored[note])
        assert hit.passage is not None and hit.passage.end == len(note)  # the fact's passage
        assert note.rsplit("\n", 1)[-1] in note[hit.passage.start:hit.passage.end]


def test_the_record_stays_one_record(memory, stored):
    note = notes()[0][0]
    record_id = stored[note]
    assert memory.get(record_id).text == note
    assert [e.record.text for e in memory.export(layers=["assets"])].count(note) == 1
    query = "where did I hide the extra key to my home"

    def found() -> bool:
        hits = memory.search(query, top_k=3, mode="vector", track=False)
        return record_id in [h.record.id for h in hits]

    def passages() -> int:
        return memory.db.conn.execute("SELECT count(*) FROM passages WHERE record_id = ?",
                                      (record_id,)).fetchone()[0]

    kept = passages()
    assert kept > 1 and found()
    memory.forget([record_id])  # to the trash: out of search, its passages kept with it
    assert not found() and passages() == kept
    assert not memory.index("assets").staleness()
    memory.restore_from_trash([record_id])  # back whole: found by the fact past the window
    assert found() and passages() == kept
    assert not memory.index("assets").staleness()
    memory.forget([record_id], purge=True)  # destroyed: its passages go with it
    assert not found() and passages() == 0
    assert not memory.index("assets").staleness()


def test_optimize_upgrades_a_long_record_stored_with_one_vector(memory, stored):
    note, query = notes()[0]
    record_id = stored[note]
    # As magray stored it before passages: one vector, no passage rows.
    with memory.db.write() as conn:
        conn.execute("DELETE FROM passages")
        conn.execute("DELETE FROM meta WHERE key = 'passages_checked'")
    memory.sync(rebuild=True)
    before = [h.record.id for h in memory.search(query, top_k=3, mode="vector", track=False)]
    assert record_id not in before  # what the issue saw: the fact was not found
    memory.optimize()
    after = memory.search(query, top_k=3, mode="vector", track=False)
    assert record_id in [h.record.id for h in after]
    again = memory.db.conn.execute("SELECT count(*) FROM passages").fetchone()[0]
    memory.optimize()  # checked once: nothing is split or embedded twice
    assert memory.db.conn.execute("SELECT count(*) FROM passages").fetchone()[0] == again


def test_a_promoted_long_record_keeps_its_passages(memory, stored):
    note, query = notes()[1]
    with memory.db.write() as conn:  # a layer move, as promote makes it (the log follows)
        conn.execute("UPDATE records SET layer = 'insights' WHERE id = ?", (stored[note],))
    hits = memory.search(query, top_k=3, layers=("insights",), mode="vector", track=False)
    assert hits and hits[0].record.id == stored[note] and hits[0].passage.ordinal > 0
    memory.sync()
    assert not memory.index("assets").staleness()


def test_short_texts_have_no_passages(fake_memory):
    fake_memory.store_texts(["a short note", "another one"])
    assert fake_memory.db.conn.execute("SELECT count(*) FROM passages").fetchone()[0] == 0
    assert np.isfinite(fake_memory.search("short", mode="vector")[0].score)


def test_export_and_import_carry_long_records(memory, stored, real_embedder, tmp_path):
    from magray import Memory

    note, query = notes()[2]
    entries = list(memory.export(vectors=True))
    with Memory.open(tmp_path / "other", embedder=real_embedder) as other:
        other.import_records(entries)
        hits = other.search(query, top_k=3, mode="vector", track=False)
        assert note in [h.record.text for h in hits]


def test_reembed_covers_every_passage(home):
    from fakes import FakeEmbedder
    from magray import Memory

    long_text = " ".join(f"word{n}" for n in range(800))
    with Memory.open(home, embedder=FakeEmbedder(name="first")) as memory:
        memory.store_texts([long_text])
        assert memory.db.conn.execute("SELECT count(*) FROM passages").fetchone()[0] > 2
    second = FakeEmbedder(name="second")
    with Memory.open(home, embedder=second) as memory:
        memory.optimize(reembed=True)
        rows = memory.db.conn.execute("SELECT start, end, embedding FROM passages "
                                      "WHERE ordinal > 0").fetchall()
        assert rows
        for start, end, blob in rows:
            expected = second.embed_documents([long_text[start:end]])[0]
            assert np.allclose(np.frombuffer(blob, dtype=np.float32), expected, atol=1e-6)
        assert not memory.index("interact").staleness()
