"""Store then search with the real default model."""

import numpy as np
import pytest

from corpus import FILLER, NOTES
from magray import Filters, NewRecord
from magray.errors import InputError


@pytest.fixture
def filled(memory):
    memory.store_texts(FILLER)
    ids = [memory.store_texts([note])[0].id for note, _ in NOTES]
    return memory, ids


@pytest.mark.parametrize("mode", ["hybrid", "vector"])
def test_paraphrase_finds_the_note_first(filled, mode):
    memory, ids = filled
    for (note, query), record_id in zip(NOTES, ids):
        hits = memory.search(query, mode=mode, top_k=5, track=False)
        assert hits[0].record.id == record_id, (query, [h.record.text for h in hits])


def test_keyword_mode_needs_shared_words(filled):
    memory, ids = filled
    hits = memory.search("kubectl rollout", mode="keyword", track=False)
    assert hits[0].record.id == ids[5] and hits[0].similarity is None
    assert memory.search("zzzz unrelatedword", mode="keyword") == []


def test_hybrid_ranks_exact_words_and_meaning(filled):
    memory, ids = filled
    hits = memory.search("ed25519 key", mode="hybrid", track=False)
    assert hits[0].record.id == ids[7]
    assert hits[0].similarity is not None and hits[0].similarity > 0.3


def test_scores_are_exact_cosine_similarities(filled):
    memory, _ = filled
    hits = memory.search("relational database choice", mode="vector", top_k=5, track=False)
    q = memory.embedder.embed_query("relational database choice")
    keys, vectors = memory.db.vectors([h.record.id for h in hits], memory.dim)
    exact = dict(zip(keys.tolist(), (vectors @ q).tolist()))
    for h in hits:
        assert h.score == pytest.approx(exact[h.record.id], abs=1e-4)
    assert [h.score for h in hits] == sorted([h.score for h in hits], reverse=True)


def test_min_score_and_top_k(filled):
    memory, _ = filled
    assert len(memory.search("garden flowers", top_k=3, track=False)) == 3
    hits = memory.search("garden flowers", min_score=0.5, mode="vector", top_k=50, track=False)
    assert all(h.similarity >= 0.5 for h in hits)
    assert len(hits) < 50


def test_search_counts_access_unless_told_not_to(filled):
    memory, ids = filled
    memory.search(NOTES[0][1], top_k=1)
    memory.search(NOTES[0][1], top_k=1, track=False)
    record = memory.get(ids[0])
    assert record.access_count == 1 and record.last_access is not None


def _store(memory, text, **fields):
    return memory.store([NewRecord(text=text, **fields)])[0].id


@pytest.fixture
def tagged(memory):
    memory.store_texts(FILLER[:200])
    ids = {
        "tag": _store(memory, "restart nginx after editing its config", tags=("ops", "web")),
        "project": _store(memory, "restart the api server after deploy", project="atlas"),
        "session": _store(memory, "restart the worker queue", session="s-42"),
        "kind": _store(memory, "restart postgres with pg_ctl restart", kind="command"),
        "old": _store(memory, "restart the router when wifi drops",
                      created_at="2020-01-02T03:04:05+00:00"),
        "layer": _store(memory, "restart docker daemon via systemctl", layer="assets"),
    }
    return memory, ids


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_every_filter(tagged, mode):
    memory, ids = tagged
    cases = {
        "tag": Filters(tags=("ops",)),
        "project": Filters(project="atlas"),
        "session": Filters(session="s-42"),
        "kind": Filters(kind="command"),
        "old": Filters(until="2021-01-01T00:00:00.000000+00:00"),
    }
    for name, filters in cases.items():
        hits = memory.search("restart", filters=filters, mode=mode, track=False)
        assert [h.record.id for h in hits] == [ids[name]], name
    hits = memory.search("restart", layers=("assets",), mode=mode, track=False)
    assert [h.record.id for h in hits] == [ids["layer"]]
    recent = memory.search("restart", filters=Filters(since="2025-01-01T00:00:00.000000+00:00"),
                           mode=mode, top_k=100, track=False)
    assert ids["old"] not in {h.record.id for h in recent}
    assert memory.search("restart", filters=Filters(tags=("ops", "nope")), mode=mode) == []


def test_filters_do_not_starve_results(memory, monkeypatch):
    import magray.search

    monkeypatch.setattr(magray.search, "EXACT_LIMIT", 10)  # force the widening ANN path
    memory.store_texts(FILLER[:150])
    memory.store_texts([f"meeting note number {i} about the quarterly budget" for i in range(30)],
                       project="finance")
    hits = memory.search("tulips by the river", filters=Filters(project="finance"),
                         mode="vector", top_k=20, track=False)
    assert len(hits) == 20
    assert all(h.record.project == "finance" for h in hits)


def test_empty_memory_returns_nothing(memory):
    assert memory.search("anything") == []
    assert memory.search("anything", mode="keyword") == []


@pytest.mark.parametrize("options, message", [
    ({"top_k": 0}, "top_k must be from 1 to 100"),
    ({"top_k": 101}, "top_k must be from 1 to 100"),
    ({"mode": "fuzzy"}, "mode must be one of"),
    ({"layers": ("attic",)}, "unknown layer 'attic'"),
])
def test_bad_search_options(memory, options, message):
    with pytest.raises(InputError, match=message):
        memory.search("x", **options)


def test_query_vectors_are_cached(memory):
    memory.store_texts(["a note about sailing"])
    memory.search("boats on the sea")
    rows = memory.db.conn.execute("SELECT model FROM embed_cache").fetchall()
    assert sorted(r[0] for r in rows) == ["all-MiniLM-L6-v2|document", "all-MiniLM-L6-v2|query"]


def test_embeddings_are_normalised_float32_blobs(memory):
    memory.store_texts(["a note about sailing"])
    blob, = memory.db.conn.execute("SELECT embedding FROM records").fetchone()
    vector = np.frombuffer(blob, dtype=np.float32)
    assert vector.shape == (384,) and np.linalg.norm(vector) == pytest.approx(1, abs=1e-5)


@pytest.fixture
def sparse_graph_memory(home):
    """2,000 records under the sparsest HNSW settings magray accepts: the graph misses
    many true neighbours, so only an exact scan finds them."""
    from fakes import FakeEmbedder

    from magray import Memory, config

    settings = config.load(home / "config.toml").replace(hnsw_m=2, hnsw_ef_search=1)
    with Memory.open(home, settings=settings, embedder=FakeEmbedder(dim=64)) as memory:
        memory.store_texts([f"note {i} on {FILLER[i % len(FILLER)]}" for i in range(2000)],
                           layer="assets")
        yield memory


def exact_top(memory, query: str, n: int) -> list[int]:
    keys, vectors = memory.db.vectors(memory.db.filtered_ids(["assets"], Filters(), limit=10**6),
                                      memory.dim)
    scores = vectors @ memory.embedder.embed_query(query)
    return [int(keys[i]) for i in np.lexsort((keys, -scores))[:n]]


def test_a_layer_small_enough_is_searched_exactly(sparse_graph_memory):
    """Results do not depend on how an index happened to be built: a layer of up to
    EXACT_LIMIT records gives the exact top-k, before and after a rebuild."""
    memory = sparse_graph_memory
    queries = ["budget review", "tulips by the river", "restart the server", "sailing"] + \
        [FILLER[i][:40] for i in range(0, 120, 10)]
    before = [[h.record.id for h in memory.search(q, mode="vector", top_k=10, track=False)]
              for q in queries]
    assert before == [exact_top(memory, q, 10) for q in queries]
    memory.index("assets").path.unlink()
    memory.sync(rebuild=True)
    after = [[h.record.id for h in memory.search(q, mode="vector", top_k=10, track=False)]
             for q in queries]
    assert after == before


def test_a_delete_racing_a_search_does_not_rebuild_the_index(fake_memory, monkeypatch):
    import magray.search
    from magray import Memory
    from magray.index import LayerIndex

    monkeypatch.setattr(magray.search, "EXACT_LIMIT", 0)  # the HNSW path, as in a large layer
    fake_memory.store_texts(FILLER[:60], layer="assets")
    query = FILLER[3]
    first = fake_memory.search(query, mode="vector", top_k=5, track=False)
    doomed = first[0].record.id
    rebuilds = []
    real_sync, real_search = LayerIndex.sync, LayerIndex.search

    def sync(self, *, rebuild=False):
        rebuilds.append(rebuild)
        return real_sync(self, rebuild=rebuild)

    def search(self, *args, **kw):  # another process deletes between index and database
        found = real_search(self, *args, **kw)
        if found and not rebuilds:
            with Memory.open(fake_memory.paths.data.parent,
                             embedder=fake_memory.embedder) as other:
                other.forget([doomed])
        return found

    monkeypatch.setattr(LayerIndex, "sync", sync)
    monkeypatch.setattr(LayerIndex, "search", search)
    hits = fake_memory.search(query, mode="vector", top_k=5, track=False)
    assert [h.record.id for h in hits] == [h.record.id for h in first[1:]] + [hits[-1].record.id]
    assert doomed not in {h.record.id for h in hits} and True not in rebuilds
