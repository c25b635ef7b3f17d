"""Trust: private files, kill -9 during bulk store, hostile inputs found by hypothesis."""

import json
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from magray import Memory, config, ingest
from magray.errors import ConfigError, InputError, MagrayError
from magray.records import NewRecord

from fakes import FakeEmbedder

ROOT = Path(__file__).resolve().parents[2]


def test_files_are_private_whatever_the_umask(cli, home):
    old = os.umask(0o000)
    try:
        assert cli("store", "a private note").code == 0
    finally:
        os.umask(old)
    data = home / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in data.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_library_creates_private_database_under_a_loose_umask(home):
    old = os.umask(0o022)
    try:
        with Memory.open(home, embedder=FakeEmbedder()) as memory:
            memory.store_texts(["x"])
    finally:
        os.umask(old)
    for name in ("magray.db", "magray.db-wal", "indexes/interact.usearch", "indexes/interact.json",
                 "indexes/interact.lock"):
        path = home / "data" / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


def test_refuses_a_data_directory_others_can_write(home):
    (home / "data").mkdir(parents=True)
    os.chmod(home / "data", 0o777)
    with pytest.raises(MagrayError, match="writable by other users"):
        Memory.open(home, embedder=FakeEmbedder())


def test_refuses_symlink_planted_at_the_database(home, tmp_path):
    (home / "data").mkdir(parents=True, mode=0o700)
    target = tmp_path / "elsewhere.db"
    (home / "data" / "magray.db").symlink_to(target)
    with pytest.raises(MagrayError, match="symbolic link"):
        Memory.open(home, embedder=FakeEmbedder())
    assert not target.exists()


def test_lock_file_symlink_not_followed(fake_memory, tmp_path):
    fake_memory.store_texts(["x"])
    lock = fake_memory.paths.indexes / "interact.lock"
    lock.unlink()
    target = tmp_path / "victim"
    lock.symlink_to(target)
    with pytest.raises(OSError):
        fake_memory.index("interact").sync(rebuild=True)
    assert not target.exists()


# -- kill -9 during bulk store ------------------------------------------------------------

def _check_after_crash(home: Path, acknowledged: list[int]) -> None:
    db = sqlite3.connect(home / "data" / "magray.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    Memory.open(home, embedder=FakeEmbedder()).close()  # killed before the schema? made now
    present = {r[0] for r in db.execute("SELECT id FROM records")}
    assert set(acknowledged) <= present
    texts = [r[0] for r in db.execute("SELECT text FROM records")]
    assert len(texts) == len(set(texts))  # nothing stored twice
    db.close()
    with Memory.open(home, embedder=FakeEmbedder()) as memory:  # the next command repairs
        query = memory.embedder.embed_query("crash note 5 about item 5")
        for layer in ("interact",):
            memory.index(layer).open_view()
            assert memory.index(layer).staleness() == ""
        if present:
            keys, vectors = memory.db.vectors(sorted(present), memory.dim)
            exact = keys[np.argsort(-(vectors @ query))[:5]].tolist()
            nearest = memory.searcher.nearest(query, ("interact",), memory_filters(), 40)
            approx = [i for i, _ in nearest[:5]]
            assert approx == exact
    leftovers = [p for p in (home / "data").rglob("*tmp-*")]
    assert leftovers == []


def memory_filters():
    from magray import Filters

    return Filters()


def test_kill_9_during_bulk_store(tmp_path):
    rng = random.Random(20261121)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for run in range(20):
        home = tmp_path / f"run{run}"
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "driver.py"), "store",
                                 str(home), "crash", "4000", "50"], stdout=subprocess.PIPE,
                                env=env)
        time.sleep(rng.uniform(0.3, 1.5))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        acknowledged = [int(x) for x in out.split()]
        if not (home / "data" / "magray.db").exists():
            continue
        _check_after_crash(home, acknowledged)


# -- hostile input, generated ---------------------------------------------------------------

TEMPLATE = NewRecord(text="")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_jsonl_reader_never_crashes_on_bytes(data):
    import io

    try:
        items = ingest.from_jsonl(io.BytesIO(data), TEMPLATE, 1000)
    except InputError as exc:
        assert "\n" not in str(exc)
    else:
        assert items and all(i.text and i.text == i.text.strip() for i in items)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8),
                                                                       children, max_size=3),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(ingest.JSONL_FIELDS) + ["extra"]), _json_values,
                       max_size=6))
def test_jsonl_objects_are_validated_field_by_field(obj):
    line = json.dumps(obj)
    try:
        item = ingest.parse_object(line, 1, TEMPLATE, 1000)
    except InputError as exc:
        assert str(exc).startswith("line 1:")
    else:
        assert isinstance(item.text, str) and item.text.strip()
        assert item.layer in ("interact", "insights", "assets")
        assert 0 <= item.importance <= 1


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(sorted(config.SPEC) + ["unknown_key"]), _json_values,
                       max_size=5))
def test_config_loader_accepts_only_valid_settings(tmp_path, table):
    import tomlkit

    path = tmp_path / "config.toml"
    table = {k: v for k, v in table.items() if v is not None}  # TOML has no null
    try:
        path.write_text(tomlkit.dumps(table))
    except (TypeError, ValueError):
        return  # not representable in TOML
    try:
        settings_ = config.load(path, environ={})
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        for name in table:
            assert name in config.SPEC
            assert isinstance(getattr(settings_, name), type(config.SPEC[name].default))


# -- many processes at once -----------------------------------------------------------------

def test_concurrent_stores_searches_and_a_backup(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = [sys.executable, str(ROOT / "tests" / "driver.py")]
    stores = [subprocess.Popen(driver + ["store", str(home), f"w{w}", "200", "25"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
              for w in range(8)]
    searches = [subprocess.Popen(driver + ["search", str(home), "15"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=env) for _ in range(2)]
    time.sleep(1.0)  # the backup runs while the writers are busy
    backups = [subprocess.Popen(driver + ["backup", str(home)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)]
    acknowledged = []
    for proc in stores + searches + backups:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert b"locked" not in err
        if proc in stores:
            acknowledged += [int(x) for x in out.split()]
    assert len(acknowledged) == len(set(acknowledged)) == 1600
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        rows = memory.db.conn.execute("SELECT count(*), count(DISTINCT text) FROM records")
        assert rows.fetchone() == (1600, 1600)
        index = memory.index("interact")
        assert index.staleness() == ""
        assert index.state().count == 1600 == len(index.open_view())
        archive, = memory.backups().archives
        memory.verify_backup(archive.path)  # a consistent snapshot taken mid-crowd


@pytest.mark.parametrize("fault", ["before the database load", "between index placements"])
def test_fault_during_restore_swap(home, monkeypatch, fault):
    """A restore that dies inside its swap leaves either the old or the archived records
    (never a mixture), and the next command brings every index in step by itself."""
    import magray.backup.restore as backup

    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        memory.store_texts([f"archived note {i}" for i in range(40)])
        memory.store_texts(["an archived insight"], layer="insights")
        archive = memory.backup().archive.path
        memory.store_texts([f"later note {i}" for i in range(10)])
        archived = {f"archived note {i}" for i in range(40)} | {"an archived insight"}
        current = archived | {f"later note {i}" for i in range(10)}
        if fault == "before the database load":
            from magray.db.store import Store  # the repository's load (db/snapshot.py)

            monkeypatch.setattr(Store, "load_snapshot", lambda *a: (_ for _ in ()).throw(
                OSError("simulated crash before the load")))
        else:
            real = backup._place_index
            monkeypatch.setattr(backup, "_place_index", lambda where, layer, stage: (
                real(where, layer, stage) if layer == "interact" else
                (_ for _ in ()).throw(OSError("simulated crash between placements"))))
        with pytest.raises(OSError, match="simulated crash"):
            memory.restore(archive, replace=True)
        monkeypatch.undo()
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        db = memory.db.conn
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        texts = {r[0] for r in db.execute("SELECT text FROM records")}
        assert texts == (current if fault == "before the database load" else archived)
        query = memory.embedder.embed_query("archived note 7")
        for layer in ("interact", "insights"):
            hits = memory.searcher.nearest(query, (layer,), memory_filters(), 5)
            keys, vectors = memory.db.vectors(memory.db.filtered_ids((layer,), memory_filters()),
                                              memory.dim)
            exact = keys[np.argsort(-(vectors @ query))[:5]].tolist()
            assert [i for i, _ in hits] == exact
            assert memory.index(layer).staleness() == ""
