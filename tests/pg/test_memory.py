"""The whole library on PostgreSQL: a ``Memory`` built on a ``PostgresStore`` (not yet chosen
by the ``database`` setting: the wiring is issue 18's next step) stores, searches in every
mode with filters, promotes, forgets and restores, cleans, and exports what imports into the
SQLite engine unchanged."""

from __future__ import annotations

import pytest

from fakes import FakeEmbedder
from magray.records import Filters

pytest.importorskip("psycopg")

NOTES = ["the wifi password is on the fridge", "deploy the web app with make release",
         "buy milk and bread", "the router firmware needs an update"]


@pytest.fixture
def pg_memory(home, pg_store):
    from magray import config, paths
    from magray.memory import Memory

    where = paths.resolve(home)
    where.ensure()
    memory = Memory(where, config.load(where.config_file), pg_store, FakeEmbedder())
    yield memory


def test_store_and_search_in_every_mode(pg_memory):
    stored = pg_memory.store_texts(NOTES, tags=["home"])
    pg_memory.store_texts(["deploy notes for the api"], project="web")
    assert [s.duplicate for s in pg_memory.store_texts(["buy milk and bread"])] == [True]
    ids = [s.id for s in stored]
    for mode in ("vector", "hybrid", "keyword"):
        hits = pg_memory.search("wifi password fridge", mode=mode)
        assert hits and hits[0].record.id == ids[0], mode
    web = pg_memory.search("deploy", mode="hybrid", filters=Filters(project="web"))
    assert [h.record.text for h in web] == ["deploy notes for the api"]
    assert pg_memory.get(ids[2]).access_count >= 1


def test_lifecycle_and_the_trash(pg_memory):
    ids = [s.id for s in pg_memory.store_texts(NOTES)]
    report = pg_memory.promote(ids=[ids[0]], threshold=0.0)
    assert [(d.id, d.outcome) for d in report.decisions] == [(ids[0], "promoted")]
    assert pg_memory.get(ids[0]).layer == "insights"
    pg_memory.forget([ids[1]])
    assert pg_memory.get(ids[1]) is None and [t.record.id for t in pg_memory.trash()] == [ids[1]]
    assert ids[1] not in {h.record.id for h in pg_memory.search("deploy web app")}
    pg_memory.restore_from_trash([ids[1]])
    assert pg_memory.search("deploy web app", mode="vector")[0].record.id == ids[1]
    clean = pg_memory.clean()
    assert clean.removed == ()


@pytest.mark.parametrize("direction", ["postgres->sqlite", "sqlite->postgres"])
def test_an_export_moves_between_the_engines_unchanged(pg_memory, tmp_path, direction):
    """JSON Lines with vectors out of one engine, into the other: same ids, fields and
    vectors (the README's 'moving a local memory to a server and back')."""
    import io

    from magray import Memory
    from magray.transfer import read, write_jsonl

    with Memory.open(tmp_path / "sqlite-home", embedder=FakeEmbedder()) as local:
        source, target = ((pg_memory, local) if direction == "postgres->sqlite"
                          else (local, pg_memory))
        source.store_texts(NOTES, tags=["home"], project="p")
        out = io.StringIO()
        write_jsonl(source.export(vectors=True), out)
        with read(io.BytesIO(out.getvalue().encode()), 1 << 20) as entries:
            report = target.import_records(entries)
        assert report.embedded == 0  # the vectors came along: nothing was embedded again
        mine = {r.text: r for r in source.list_records()}
        theirs = {r.text: r for r in target.list_records()}
        assert set(mine) == set(theirs) == set(NOTES)
        for text in NOTES:
            assert mine[text] == theirs[text]
        hits = target.search("wifi password", mode="vector")
        assert hits[0].record.text == NOTES[0]
