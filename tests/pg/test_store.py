"""PostgresStore against a real server, method by method, and against the SQLite Store: the
same calls on both engines give the same answers (ids, records, order, trash, cache, log)."""

from __future__ import annotations

import numpy as np
import pytest

from magray import clock
from magray.records import Filters, NewRecord

pytest.importorskip("psycopg")

DIM = 8
WHEN = "2026-01-02T03:04:05.000000+00:00"


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def sample(store) -> list[int]:
    items = [NewRecord("the wifi password is on the fridge", tags=("home", "wifi")),
             NewRecord("deploy with make release", layer="insights", project="web",
                       kind="howto", importance=0.5),
             NewRecord("Grüße aus München: the café opens at nine", session="s1",
                       tags=("travel",), created_at="2025-06-01T10:00:00Z")]
    with store.write() as tx:
        return [store.insert(tx, item, vec(n), WHEN)[0] for n, item in enumerate(items)]


def test_insert_assigns_increasing_ids_and_reads_back_the_same_records(store):
    ids = sample(store)
    assert ids == sorted(ids) and len(set(ids)) == 3
    records = store.records(ids)
    assert records[ids[0]].tags == ("home", "wifi")
    assert records[ids[1]].layer == "insights" and records[ids[1]].importance == 0.5
    assert records[ids[2]].created_at == "2025-06-01T10:00:00.000000+00:00"
    assert records[ids[2]].text.startswith("Grüße")
    assert store.count("interact") == 2 and store.count("insights") == 1
    assert store.issued_through() == ids[-1]
    assert store.store_id


def test_the_same_text_in_the_same_layer_is_an_access_with_tags_merged(store):
    ids = sample(store)
    with store.write() as tx:
        again = store.insert(tx, NewRecord("the wifi password is on the fridge",
                                           tags=("router",), importance=0.9), None, WHEN)
    assert again == (ids[0], True)
    record = store.records([ids[0]])[ids[0]]
    assert record.access_count == 1 and record.last_access == WHEN
    assert record.tags == ("home", "router", "wifi") and record.importance == 0.9
    assert store.existing("interact", [record.content_hash, "nope"]) == {record.content_hash}


def test_a_missing_vector_for_a_new_text_asks_for_one(store):
    from magray.db.base import VectorNeeded
    with pytest.raises(VectorNeeded), store.write() as tx:
        store.insert(tx, NewRecord("never stored"), None, WHEN)
    assert store.count("interact") == 0


def test_vectors_come_back_bit_for_bit(store):
    ids = sample(store)
    found, matrix = store.vectors(ids, DIM)
    by_id = dict(zip(found.tolist(), matrix))
    for n, rid in enumerate(ids):
        assert np.array_equal(by_id[rid], vec(n))
    records, matrix = store.records_and_vectors(ids[:2], DIM)
    assert list(records) == ids[:2] or set(records) == set(ids[:2])
    batches = list(store.layer_vectors("interact", DIM, batch=1))
    assert [b[0].tolist() for b in batches] == [[ids[0]], [ids[2]]]
    assert np.array_equal(batches[1][1][0], vec(2))


def test_filters_select_the_same_records(store):
    ids = sample(store)
    both = ("interact", "insights")
    assert [r.id for r in store.recent(both, Filters(), None)] == [ids[1], ids[0], ids[2]]
    assert store.filtered_ids(both, Filters(tags=("wifi", "home"))) == [ids[0]]
    assert store.filtered_ids(both, Filters(tags=("wifi", "travel"))) == []
    assert store.filtered_ids(both, Filters(project="web", kind="howto")) == [ids[1]]
    assert store.filtered_ids(both, Filters(session="s1")) == [ids[2]]
    assert sorted(store.filtered_ids(both, Filters(since="2026-01-01T00:00:00.000000+00:00"))
                  ) == ids[:2]
    assert store.filtered_ids(both, Filters(until="2025-12-31T00:00:00.000000+00:00")
                              ) == [ids[2]]
    assert [r.id for r in store.recent(both, Filters(), 1)] == [ids[1]]


def test_dump_by_id_and_by_layer_with_raw_vectors(store):
    ids = sample(store)
    everything = ("interact", "insights", "assets")
    assert [r.id for r, _ in store.dump(everything, Filters(), batch=2)] == ids
    by_layer = [(r.id, v) for r, v in store.dump(everything, Filters(), vectors=True,
                                                  by_layer=True, batch=1)]
    assert [i for i, _ in by_layer] == [ids[0], ids[2], ids[1]]
    assert by_layer[0][1] == vec(0).tobytes()


def test_insert_record_keeps_an_id_never_issued_and_renumbers_one_that_was(store):
    ids = sample(store)
    record = store.records([ids[0]])[ids[0]]
    with store.write() as tx:
        store.delete(tx, [ids[0]])
        kept = store.insert_record(tx, record.__class__(**{**record.__dict__, "id": 500,
                                                            "text": "imported",
                                                            "content_hash": "h"}), vec(9))
        renumbered = store.insert_record(tx, record, vec(0))
    assert kept == 500 and renumbered == 501 and store.issued_through() == 501
    with store.write() as tx:
        assert store.insert(tx, NewRecord("after the import"), vec(3), WHEN)[0] == 502


def test_update_metadata_and_find(store):
    ids = sample(store)
    record = store.records([ids[1]])[ids[1]]
    changed = record.__class__(**{**record.__dict__, "tags": ("b", "a"), "access_count": 7,
                                  "project": None})
    with store.write() as tx:
        store.update_metadata(tx, changed)
        found = store.find(tx, "insights", record.content_hash)
    assert found.tags == ("a", "b") and found.access_count == 7 and found.project is None


def test_trash_restore_and_purge(store):
    ids = sample(store)
    with store.write() as tx:
        store.set_meta(tx, "model_key", "fake@0")
        assert store.trash(tx, ids[0], "forgotten", WHEN)
        assert store.trash(tx, ids[1], "merged", WHEN, merged_into=ids[0])
    assert store.count("interact") == 1 and store.records([ids[0]]) == {}
    trashed = store.trashed()
    assert {t.record.id for t in trashed} == set(ids[:2])
    assert {t.reason for t in trashed} == {"forgotten", "merged"}
    assert store.trashed([ids[1]])[0].merged_into == ids[0]
    assert store.trash_vectors([ids[0]]) == {ids[0]: (vec(0).tobytes(), "fake@0")}
    with store.write() as tx:
        store.untrash(tx, ids[0], accessed="2026-02-02T00:00:00.000000+00:00")
        store.untrash(tx, ids[1], vector=vec(7).tobytes())
    assert store.records([ids[0]])[ids[0]].last_access == "2026-02-02T00:00:00.000000+00:00"
    assert np.array_equal(store.vectors([ids[1]], DIM)[1][0], vec(7))
    with store.write() as tx:
        store.trash(tx, ids[2], "expired", WHEN)
        assert store.purge_trash(tx, [ids[2], 999]) == 1
    assert store.trashed() == []


def test_the_index_log_records_every_vector_entering_or_leaving_a_layer(store):
    ids = sample(store)
    assert store.changed_since("interact", 0)[0] == [ids[0], ids[2]]
    head = store.log_head("interact")
    with store.write() as tx:
        store.trash(tx, ids[0], "forgotten", WHEN)
    changed, new_head = store.changed_since("interact", head)
    assert changed == [ids[0]] and new_head > head == store.changed_since("interact", 0)[1] - 1
    store.prune_log("interact", new_head)
    assert store.log_pruned_through("interact") == new_head
    assert store.log_head("interact") == new_head
    assert store.changed_since("interact", 0) == ([], 0)
    assert store.ids_in_layer(ids, "interact") == [ids[2]]


def test_the_embedding_cache(store):
    with store.write() as tx:
        store.cache_vectors(tx, "m", [("h1", vec(1)), ("h2", vec(2))], "2026-01-01")
    store.touch_cache("m", ["h2"], "2026-03-01")
    found, stale = store.cached_vectors("m", ["h1", "h2", "h3"], DIM, used_before="2026-02-01")
    assert set(found) == {"h1", "h2"} and np.array_equal(found["h1"], vec(1))
    assert stale == ["h1"]
    assert store.cached_vectors("m", ["h1"], DIM + 1) == ({}, [])


def test_touch_counts_accesses_and_records_the_operation(store):
    from magray.db.base import Op
    import time

    ids = sample(store)
    store.touch(ids[:2], Op("search", time.perf_counter(), items=2, cache_hits=1))
    records = store.records(ids)
    assert [records[i].access_count for i in ids] == [1, 1, 0]
    assert records[ids[0]].last_access >= clock.iso(clock.now()).split("T")[0]
    assert store.meta("nope") is None


def test_keyword_search_ranks_like_fts5(store):
    texts = ["the cafe in munich opens at nine", "wifi router password",
             "router firmware update for the router", "munich munich munich travel notes",
             "foo_bar baz", "nothing relevant here at all"]
    with store.write() as tx:
        ids = [store.insert(tx, NewRecord(t), vec(n), WHEN)[0] for n, t in enumerate(texts)]
    layers = ("interact",)

    def ranked(q, **filters):
        return [i for i, _ in store.keyword_search(q, layers, Filters(**filters), 10)]

    assert ranked("Café München") == [ids[3], ids[0]] or ranked("Café München") == [ids[0]]
    assert ranked("router") == [ids[2], ids[1]]
    assert ranked("munich cafe") == [ids[0], ids[3]]
    assert ranked("foo_bar") == [ids[4]]
    assert ranked("zzz") == []
    assert ranked("router", tags=("x",)) == []
    relevance = dict(store.keyword_search("router", layers, Filters(), 10))
    assert relevance[ids[2]] > relevance[ids[1]] > 0


def test_two_databases_in_one_process_keep_their_own_vector_type(pg_server, pg_store):
    """Each database's pgvector type has its own oid: a process holding two memories (an
    MCP server, an export from one into another) must send each its own."""
    import psycopg

    from magray.db.pg import parse_database
    from magray.db.pg.store import PostgresStore

    with psycopg.connect(pg_server.uri(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS magray_second WITH (FORCE)")
        admin.execute("CREATE DATABASE magray_second")
    second = PostgresStore.open(parse_database(pg_server.url("magray_second")))
    try:
        for n, store in enumerate((pg_store, second, pg_store)):
            with store.write() as tx:
                rid, _ = store.insert(tx, NewRecord(f"note {n}"), vec(1), WHEN)
            assert np.array_equal(store.vectors([rid], DIM)[1][0], vec(1))
    finally:
        second.close()
        with psycopg.connect(pg_server.uri(), autocommit=True) as admin:
            admin.execute("DROP DATABASE magray_second WITH (FORCE)")


def test_insert_many_is_insert_for_each_item_in_order(store):
    from magray.db.base import VectorNeeded

    with store.write() as tx:
        first, _ = store.insert(tx, NewRecord("here already"), vec(0), WHEN)
        outcomes = store.insert_many(tx, [(NewRecord("new", tags=("a",)), vec(1)),
                                          (NewRecord("here already", tags=("b",)), None),
                                          (NewRecord("new", tags=("c",)), vec(1)),
                                          (NewRecord("other"), vec(2))], WHEN)
    assert [d for _, d in outcomes] == [False, True, True, False]
    assert outcomes[1][0] == first and outcomes[0][0] == outcomes[2][0] < outcomes[3][0]
    records = store.records([first, outcomes[0][0]])
    assert records[first].tags == ("b",) and records[outcomes[0][0]].tags == ("a", "c")
    with pytest.raises(VectorNeeded), store.write() as tx:
        store.insert_many(tx, [(NewRecord("never embedded"), None)], WHEN)
