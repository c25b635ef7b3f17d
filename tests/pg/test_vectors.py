"""Vectors on PostgreSQL: bulk stores through COPY, per-layer HNSW indexes (vector or
halfvec), nearest-neighbour search with filters that never starve."""

from __future__ import annotations

import numpy as np
import pytest

from magray.records import Filters, NewRecord

pytest.importorskip("psycopg")

DIM = 16
WHEN = "2026-01-02T03:04:05.000000+00:00"


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def filled(pg_store):
    """400 records in interact, a tenth of them tagged 'rare'; their vectors."""
    vectors = unit(np.random.default_rng(1).standard_normal((400, DIM)))
    items = [(NewRecord(f"note {n}", tags=("rare",) if n % 10 == 0 else ()), vectors[n])
             for n in range(400)]
    with pg_store.write() as tx:
        ids = [rid for rid, _ in pg_store.insert_many(tx, items, WHEN)]
    return pg_store, ids, vectors


def test_insert_many_copies_new_records_and_counts_repeats_as_accesses(pg_store):
    vectors = unit(np.random.default_rng(2).standard_normal((3, DIM)))
    with pg_store.write() as tx:
        first = pg_store.insert(tx, NewRecord("already here"), vectors[0], WHEN)[0]
        result = pg_store.insert_many(tx, [
            (NewRecord("new one", tags=("b", "a")), vectors[1]),
            (NewRecord("already here", tags=("x",)), None),
            (NewRecord("new one"), vectors[1]),
            (NewRecord("another", layer="assets", created_at="2025-01-01"), vectors[2]),
        ], WHEN)
    assert [dup for _, dup in result] == [False, True, True, False]
    assert result[1][0] == first and result[0][0] == result[2][0]
    records = pg_store.records([rid for rid, _ in result])
    assert records[first].access_count == 1 and records[first].tags == ("x",)
    assert records[result[0][0]].tags == ("a", "b") and records[result[0][0]].access_count == 1
    assert records[result[3][0]].created_at == "2025-01-01T00:00:00.000000+00:00"
    assert np.array_equal(pg_store.vectors([result[3][0]], DIM)[1][0], vectors[2])
    # the triggers ran for COPY too: keyword search and the index log see the new records
    assert [i for i, _ in pg_store.keyword_search("another", ("assets",), Filters(), 5)
            ] == [result[3][0]]
    assert result[3][0] in pg_store.changed_since("assets", 0)[0]


def use_the_index(store) -> None:
    """A few hundred rows are cheaper to sort than to search by index; make the planner
    take the index path a large memory takes, to test it."""
    for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
        store.conn.execute(f"SET {setting} = off")


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_nearest_through_the_hnsw_index_finds_the_exact_neighbours(filled, dtype):
    store, ids, vectors = filled
    assert store.ensure_vector_index(DIM, dtype, m=8, ef_construction=64)
    assert not store.ensure_vector_index(DIM, dtype, m=8, ef_construction=64)
    store.set_ef_search(100)
    use_the_index(store)
    query = vectors[7]
    exact = np.argsort(-(vectors @ query))[:5]
    hits = store.nearest("interact", query, 5)
    assert [rid for rid, _ in hits] == [ids[n] for n in exact]
    assert hits[0][1] == pytest.approx(1.0, abs=1e-2 if dtype == "f16" else 1e-5)
    plan = "\n".join(r[0] for r in store.conn.execute(
        "EXPLAIN SELECT id FROM records WHERE layer = 'interact' ORDER BY embedding::"
        f"{'halfvec' if dtype == 'f16' else 'vector'}({DIM}) <#> %s LIMIT 5",
        (str(query.tolist()),)))
    assert "records_hnsw_interact" in plan


def test_a_selective_filter_never_starves_the_search(filled):
    store, ids, vectors = filled
    store.ensure_vector_index(DIM, "f32", m=8, ef_construction=64)
    use_the_index(store)
    store.set_ef_search(10)  # fewer candidates than the filter lets through in one pass
    hits = store.nearest("interact", vectors[3], 20, Filters(tags=("rare",)))
    rare = [n for n in range(400) if n % 10 == 0]
    assert len(hits) == 20 and {rid for rid, _ in hits} <= {ids[n] for n in rare}
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)
    store.conn.execute("SET hnsw.iterative_scan = off")  # what pgvector did before 0.8
    assert len(store.nearest("interact", vectors[3], 20, Filters(tags=("rare",)))) < 20


def test_other_layers_are_not_searched(filled):
    store, ids, vectors = filled
    store.ensure_vector_index(DIM, "f32")
    assert store.nearest("assets", vectors[0], 5) == []


def test_a_new_dimension_rebuilds_the_indexes(pg_store):
    assert pg_store.ensure_vector_index(DIM, "f32")
    assert pg_store.ensure_vector_index(DIM * 2, "f32")
    assert pg_store.meta("vector_index").startswith(f"vector({DIM * 2})")


def test_server_facts_for_status(pg_store):
    facts = pg_store.server_facts()
    assert facts["postgresql"].startswith("18") and facts["pgvector"].startswith("0.8")
    assert facts["server"] == pg_store.target.host and facts["latency_seconds"] >= 0
    assert pg_store.database_bytes() > 0
