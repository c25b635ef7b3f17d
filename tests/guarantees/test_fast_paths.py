"""The cheap paths a cold or warm command takes: cached index views, length-sorted bulk
embedding, plain option parsing, migrations checked without sqlite-utils."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import magray.encoder as encoder_module
import magray.write as write_module
from magray import NewRecord
from magray.db import migrations
from magray.db.store import Store


def test_index_view_is_kept_while_fresh_and_reopened_after_a_change(fake_memory):
    fake_memory.store_texts(["alpha note", "beta note", "gamma note"])
    index = fake_memory.index("interact")
    assert fake_memory.index("interact") is index
    first = index.view()
    assert index.view() is first and len(first) == 3
    fake_memory.store_texts(["delta note"])
    second = index.view()
    assert second is not first and len(second) == 4
    assert [k for k, _ in index.search(fake_memory.embedder.embed_query("delta note"), 1)] == [4]


def test_index_view_notices_a_change_by_another_process(fake_memory, home):
    fake_memory.store_texts(["alpha note", "beta note"])
    first = fake_memory.index("interact").view()
    from magray import Memory

    with Memory.open(home, embedder=fake_memory.embedder) as other:
        other.store_texts(["written elsewhere"])
    assert len(fake_memory.index("interact").view()) == 3 and first is not None


def test_bulk_store_sorts_by_length_but_keeps_input_order(fake_memory, monkeypatch):
    monkeypatch.setattr(write_module, "STORE_BATCH", 2)
    fake_memory.store_texts(["already here"])
    # windows of 5 texts: WINDOW_BYTES holds 5 vectors of this dimension
    monkeypatch.setattr(write_module, "WINDOW_BYTES", 5 * 4 * fake_memory.dim)
    texts = ["a much longer text than the others", "short", "already here", "mid sized text",
             "short", "x", "another fairly long text here", "tiny", "y", "x", "the end"]
    ticks: list[int] = []
    results = fake_memory.store([NewRecord(text=t) for t in texts], progress=ticks.append)
    assert sum(ticks) == len(texts)
    assert [r.duplicate for r in results] == [False, False, True, False, True, False, False,
                                              False, False, True, False]
    assert results[2].id == 1 and results[4].id == results[1].id
    records = fake_memory.db.records([r.id for r in results])
    keys, vectors = fake_memory.db.vectors([r.id for r in results], fake_memory.dim)
    stored = dict(zip(keys.tolist(), vectors))
    for result, text in zip(results, texts):
        assert records[result.id].text == text
        expected = fake_memory.embedder.embed_documents([text])[0]
        assert np.allclose(stored[result.id], expected)  # each text got its own vector


def test_plain_option_parsing_keeps_typer_messages(cli):
    bad = cli("search", "x", "--top-k", "lots")
    assert bad.code == 2 and "valid integer" in bad.err
    bad = cli("search", "x", "--min-score", "high")
    assert bad.code == 2 and "valid number" in bad.err
    ok = cli("search", "x", "--mode", "keyword", "-t", "a", "--tag", "b", "-k", "3", "--json")
    assert ok.code == 0 and ok.out.strip() == "[]"


def test_a_command_run_does_not_import_pydantic(home):
    """cli/coercion.py relies on typer's private RuntimeParam and _runtime_param (typer is
    capped below 0.30 for it): when the installed typer moves them, this says so."""
    import subprocess
    import sys

    import typer

    from magray.cli import coercion

    major, minor = (int(part) for part in typer.__version__.split(".")[:2])
    if (major, minor) >= (0, 29):  # typer coerces through pydantic from 0.29 on
        assert coercion.RuntimeParam is not None, (
            f"typer {typer.__version__} has no typer._coercion.RuntimeParam: update "
            "magray/cli/coercion.py before lifting the cap on typer")
    code = ("import sys\n"
            "from magray.cli import main\n"
            "try:\n"
            "    main(['search', 'anything', '--top-k', '3', '--json'])\n"
            "except SystemExit as exc:\n"
            "    assert exc.code in (0, None), exc.code\n"
            "assert 'pydantic' not in sys.modules, 'pydantic imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "MAGRAY_HOME": str(home)})
    assert done.returncode == 0, (
        f"typer {typer.__version__}: {done.stderr[-600:]}; cli/coercion.py's hook into "
        "typer's private coercion no longer takes effect")


def test_migrations_are_checked_with_plain_sql(tmp_path):
    store = Store.open(tmp_path / "m.db")
    assert migrations.pending(store.conn) == []
    assert store.conn.execute("SELECT count(*) FROM records").fetchone() == (0,)
    store.close()
    fresh = Store.open(tmp_path / "m.db")  # reopening applies nothing
    assert migrations.pending(fresh.conn) == [] and fresh.store_id
    fresh.close()


def test_lookups_by_id_use_the_primary_key_not_a_layer_walk(fake_memory):
    from magray.records import Filters
    from magray.db.store import filter_sql

    fake_memory.store_texts([f"note {i}" for i in range(30)], layer="assets",
                            tags=["t"], project="p")
    where, params = filter_sql(["assets"], Filters(tags=("t",), project="p"))
    for columns, clause, values in [("id", "layer = ?", ("assets",)), ("id", where, params)]:
        sql, args = fake_memory.db.among_sql([3, 5, 99], columns, clause, values)
        plan = " ".join(row[3] for row in fake_memory.db.conn.execute(
            "EXPLAIN QUERY PLAN " + sql, args))
        assert "INTEGER PRIMARY KEY" in plan and "records_layer_created" not in plan, plan
    assert sorted(r[0] for r in fake_memory.db.among([3, 5, 99], "id", where, params)) == [3, 5]
    assert fake_memory.db.ids_in_layer([1, 2, 99], "assets") == [1, 2]
    assert fake_memory.db.ids_in_layer([1, 2], "interact") == []


def test_a_deferred_module_loads_on_first_use():
    import subprocess
    import sys

    code = ("import sys; from magray.index import usearch_index; usearch_index()\n"
            "assert 'http.client' not in sys.modules\n"
            "import urllib.request\n"
            "from urllib.request import Request\n"
            "assert urllib.request.urlopen and 'http.client' in sys.modules\n"
            "assert type(sys.modules['urllib.request']).__name__ == 'module'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_deferred_module_leaves_the_import_system_as_it_was(home):
    """A library user's find_spec and import work after magray has searched: the stand-in
    for urllib.request lives only while usearch imports."""
    import subprocess
    import sys

    code = ("import importlib.util, sys, urllib\n"
            "from magray import Memory\n"
            "from fakes import FakeEmbedder\n"
            "with Memory.open(sys.argv[1], embedder=FakeEmbedder()) as memory:\n"
            "    memory.store_texts(['a note about the import system'])\n"
            "    assert memory.search('import system', mode='vector')\n"
            "assert 'usearch.index' in sys.modules and 'urllib.request' not in sys.modules\n"
            "spec = importlib.util.find_spec('urllib.request')\n"
            "assert spec is not None and spec.name == 'urllib.request', spec\n"
            "assert urllib.request.urlopen  # the stand-in, as usearch reaches it\n"
            "assert type(sys.modules['urllib.request']).__name__ == 'module'\n"
            "assert importlib.util.find_spec('urllib.request').origin.endswith('request.py')\n")
    tests = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", code, str(home)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": tests})
    assert done.returncode == 0, done.stderr


def test_a_command_is_built_alone_but_help_and_typos_see_them_all(cli):
    from typer.main import get_command

    from magray.cli import _app_for, _command_name, app

    assert _command_name(["--home", "search", "list", "-x"]) == "list"
    assert _command_name(["--home=/x", "-h"]) is None
    assert set(get_command(_app_for(["search", "q"])).commands) == {"search"}
    assert set(get_command(_app_for(["backup", "list"])).commands) == {"backup"}
    assert _app_for(["serch"]) is app and _app_for([]) is app
    everything = get_command(app)
    for name, command in everything.commands.items():  # each one alone, as in the whole app
        alone = get_command(_app_for([name]))
        assert list(alone.commands) == [name], name
        assert alone.commands[name].get_help(_context(alone)) == command.get_help(
            _context(everything)), name
    typo = cli("serch", "x")
    assert typo.code == 2 and "Did you mean 'search'" in typo.err
    assert cli("backup", "list", "--help").code == 0


def _context(group):
    return group.context_class(group, info_name="magray")


def test_a_repeated_query_skips_even_the_cache_lookup(fake_memory, monkeypatch):
    fake_memory.store_texts(["a note about sailing", "a note about baking"])
    first = fake_memory.search("boats on the sea", mode="vector", track=False)
    lookups: list = []
    real = fake_memory.db.cached_vectors
    monkeypatch.setattr(fake_memory.db, "cached_vectors",
                        lambda *a, **k: lookups.append(a) or real(*a, **k))
    again = fake_memory.search("boats on the sea", mode="vector", track=False)
    assert again == first and lookups == []
    fake_memory.search("bread in the oven", mode="vector", track=False)
    assert lookups  # a new query goes to the database cache
    monkeypatch.setattr(encoder_module, "RECENT_QUERIES", 2)
    for query in ("one", "two", "three"):
        fake_memory.search(query, mode="vector", track=False)
    assert fake_memory.encoder.recent_queries() == ["two", "three"]
