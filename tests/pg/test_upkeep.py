"""The rest of the Repository boundary on both engines: status figures, lifecycle queries,
cache upkeep, maintenance, re-embedding, redaction, passages and sources. Each test runs
on SQLite and on PostgreSQL and expects the same answers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from magray.db.base import Op, Unchanged
from magray.records import Filters, NewRecord, Passage, Source

pytest.importorskip("psycopg")

DIM = 4
OLD, NEW = "2025-01-01T00:00:00.000000+00:00", "2026-01-01T00:00:00.000000+00:00"


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def stored(store, *items: NewRecord, when: str = NEW) -> list[int]:
    with store.write() as tx:
        return [store.insert(tx, item, vec(n), when)[0] for n, item in enumerate(items)]


def test_status_figures(store):
    stored(store, NewRecord("a"))
    store.touch([], Op("search", time.perf_counter(), items=3, cache_hits=2, cache_misses=1))
    store.touch([], Op("search", time.perf_counter(), items=1, cache_hits=1))
    durations, since, count, seconds = store.operation("search")
    assert len(durations) == 2 and durations == sorted(durations) and since and count == 2
    assert store.operation("store") == ([], None, 0, 0.0)
    assert store.cache_use() == (3, 1, 3, 1)
    store.add_to_meta("scanned", 5)
    store.add_to_meta("scanned", 2)
    assert store.meta("scanned") == "7"
    assert store.trash_count() == 0 and store.cache_entries() == 0
    assert store.created_range("interact") == (NEW, NEW)
    assert store.created_range("assets") == (None, None)


def test_lifecycle_facts_and_expiry(store):
    ids = stored(store, NewRecord("old", created_at=OLD), NewRecord("new"),
                 NewRecord("elsewhere", layer="assets", created_at=OLD))
    facts = store.facts("interact")
    assert [f.id for f in facts] == ids[:2] and facts[0].text == "old"
    assert [f.id for f in store.facts("interact", [ids[1], ids[2]])] == [ids[1]]
    assert [f.id for f in store.expired("interact", "2025-06-01")] == [ids[0]]
    assert store.count_expired("interact", "2025-06-01") == 1
    store.touch([ids[0]])  # used now: no longer expired
    assert store.count_expired("interact", "2025-06-01") == 0
    assert store.layer_ids("interact") == ids[:2]
    assert store.texts(ids) == {ids[0]: "old", ids[1]: "new", ids[2]: "elsewhere"}
    assert store.texts(ids, "assets") == {ids[2]: "elsewhere"}


def test_move_promotes_merges_or_reports_a_change(store):
    ids = stored(store, NewRecord("up", tags=("a",)), NewRecord("twin", tags=("b",)),
                 NewRecord("twin", layer="insights", tags=("c",)))
    with store.write() as tx:
        assert store.move(tx, ids[0], "interact", "insights", NEW) == ("promoted", None)
        assert store.move(tx, ids[1], "interact", "insights", NEW) == ("merged", ids[2])
        assert store.move(tx, ids[0], "interact", "insights", NEW) == ("changed", None)
    assert store.records([ids[0]])[ids[0]].layer == "insights"
    assert store.records([ids[2]])[ids[2]].tags == ("b", "c")
    assert store.trashed([ids[1]])[0].merged_into == ids[2]
    assert ids[0] in store.changed_since("insights", 0)[0]


def test_trash_only_if_unchanged(store):
    (rid,) = stored(store, NewRecord("planned"))
    plan = Unchanged("interact", 0, None)
    store.touch([rid])  # used after the plan was made
    with store.write() as tx:
        assert not store.trash(tx, rid, "evicted", NEW, unchanged=plan)
        record = store.records([rid])[rid]
        now = Unchanged("interact", record.access_count, record.last_access)
        assert store.trash(tx, rid, "evicted", NEW, unchanged=now)
    assert store.trash_count() == 1


def test_cache_upkeep(store):
    with store.write() as tx:
        store.cache_vectors(tx, "m1", [("h1", vec(1)), ("h2", vec(2))], OLD)
        store.cache_vectors(tx, "m2", [("h1", vec(3))], NEW)
    entry = 4 * DIM + 2 + 2  # vector, hash and model name, as the SQLite store counts
    assert store.prune_cache(entry, dry_run=True) == (2, 2 * entry)
    assert store.cache_entries() == 3
    assert store.prune_cache(2 * entry) == (1, entry)
    assert store.cache_entries() == 2
    with store.write() as tx:
        assert store.forget_cached_text(tx, "h1") == 2
    assert store.keep_cache_of(["m1"]) == 0 and store.cache_entries() == 0


def test_maintenance_runs_and_keeps_the_data(store):
    ids = stored(store, NewRecord("alpha beta"), NewRecord("gamma"))
    store.compact()
    assert store.optimize_keywords() == "optimized"
    hits = store.keyword_search("beta", ("interact",), Filters(), 5)
    assert [i for i, _ in hits] == [ids[0]]


def test_reembedding_stages_then_switches(store):
    ids = stored(store, NewRecord("one"), NewRecord("two"))
    store.restart_reembed("new-model")
    assert store.meta("reembed_target") == "new-model"
    assert store.reembed_counts() == (0, 2)
    assert store.unembedded(1) == [(ids[0], "one")]
    store.stage_vectors([(ids[0], "one", vec(10)), (ids[1], "changed meanwhile", vec(11))])
    assert store.reembed_counts() == (1, 1)
    assert not store.switch_vectors("new", "new@0", DIM)
    store.stage_vectors([(ids[1], "two", vec(11))])
    assert store.switch_vectors("new", "new@0", DIM)
    assert store.meta("model_key") == "new@0" and store.meta("reembed_target") is None
    found, matrix = store.vectors(ids, DIM)
    assert np.array_equal(dict(zip(found.tolist(), matrix))[ids[1]], vec(11))


def test_redaction_rewrites_or_joins(store):
    ids = stored(store, NewRecord("token sk-123 here", tags=("x",)), NewRecord("token here"))
    with store.write() as tx:
        store.secure_delete(tx)
        first = store.records([ids[0]])[ids[0]]
        assert store.redact(tx, "records", first, {"text": "token here"}, vec(5), NEW)
    assert store.records([ids[0]]) == {}
    assert store.records([ids[1]])[ids[1]].tags == ("x",)
    with store.write() as tx:
        second = store.records([ids[1]])[ids[1]]
        assert not store.redact(tx, "records", second, {"text": "redacted", "project": "p"},
                                vec(6), NEW)
    record = store.records([ids[1]])[ids[1]]
    assert record.text == "redacted" and record.project == "p"
    assert [r.id for r in store.every_text("records", batch=1)] == [ids[1]]
    assert list(store.every_text("trash")) == []
    store.scrub()
    assert store.records([ids[1]])[ids[1]].text == "redacted"


def test_passages(store):
    ids = stored(store, NewRecord("a long text " * 50), NewRecord("short"))
    parts = [(Passage(n, n * 10, n * 10 + 30), vec(20 + n)) for n in range(3)]
    with store.write() as tx:
        store.insert_passages(tx, ids[0], parts, layer="interact")
    keys, matrix = store.passage_vectors(ids, DIM)
    assert keys.tolist() == [ids[0], ids[0]] and np.array_equal(matrix[1], vec(22))
    rows, matrix = store.passages(ids, DIM)
    assert [p for _, p in rows] == [p for p, _ in parts] and len(matrix) == 3
    assert store.extra_passages("interact") == 2
    assert store.unsplit(0, ids[-1], 100, 10) == []
    with store.write() as tx:
        store.trash(tx, ids[0], "forgotten", NEW)  # a trashed record keeps its passages
    assert store.passages([ids[0]], DIM)[0]
    with store.write() as tx:
        store.purge_trash(tx, [ids[0]])  # ... until the trash is emptied
    assert store.passages([ids[0]], DIM)[0] == []


def test_sources(store):
    ids = stored(store, NewRecord("from a file"), NewRecord("from another"))
    with store.write() as tx:
        store.put_source(tx, ids[0], Source("/notes/a.md", 1, 5), "f1")
        store.put_source(tx, ids[1], Source("/notes/sub/b.md", 2, 3, 7), "f2")
        store.put_source(tx, ids[1], Source("/other/c.md", 1, 1), "f3")
    assert store.sources(ids) == {ids[0]: Source("/notes/a.md", 1, 5),
                                  ids[1]: Source("/notes/sub/b.md", 2, 3, 7)}
    assert store.file_hashes(["/notes/a.md", "/x"]) == {"/notes/a.md": {"f1"}}
    assert store.records_from("/notes/a.md") == {ids[0]: store.records([ids[0]])[ids[0]]
                                                 .content_hash}
    assert store.source_paths(["/notes/"]) == ["/notes/a.md", "/notes/sub/b.md"]
    assert store.source_paths(["/notes/a.md"]) == ["/notes/a.md"]
    with store.write() as tx:
        store.drop_sources(tx, "/notes/sub/b.md", [ids[1]])
        store.drop_sources(tx, "/notes/a.md")
    assert store.still_sourced(ids) == {ids[1]}
