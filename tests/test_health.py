"""`magray status`: every alert from a real cause, exit codes, JSON keys, Prometheus text,
read-only behaviour, the operation log, and no torch unless --check-model."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fakes import FakeEmbedder
from magray import Memory, NewRecord, clock, health
from magray.db import store as store_module
from magray.db import migrations

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake_model(monkeypatch):
    """Configure the fake model's name, so the data's recorded model is the configured one."""
    monkeypatch.setenv("MAGRAY_MODEL", "fake-bow")


@pytest.fixture
def filled(fake_model, fake_memory):
    fake_memory.store_texts(["rotate the api keys every quarter", "ssh -J bastion host",
                             "kubectl rollout undo deployment/web"])
    fake_memory.store_texts(["postgres over mysql for the billing service"], layer="insights")
    return fake_memory


def status_json(cli, *args):
    result = cli("status", "--json", *args)
    return result, json.loads(result.out)


def codes(data):
    return {alert["code"] for alert in data["alerts"]}


def only_alert(data, code):
    found = [a for a in data["alerts"] if a["code"] == code]
    assert len(found) == 1, data["alerts"]
    return found[0]


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` with a digest of its bytes (SQLite's -wal/-shm aside)."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*"))
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


# -- a fresh install, a healthy memory, the JSON contract ---------------------------------


def test_fresh_install_is_an_empty_healthy_memory_and_creates_nothing(home, cli):
    result, data = status_json(cli)
    assert result.code == 0, result
    assert data["healthy"] is True and data["alerts"] == []
    assert {name: layer["records"] for name, layer in data["layers"].items()} == {
        "interact": 0, "insights": 0, "assets": 0}
    assert data["database"]["exists"] is False
    human = cli("status")
    assert human.code == 0 and "healthy" in human.out and "UNHEALTHY" not in human.out
    assert cli("status", "--prometheus").code == 0
    assert not home.exists()  # status made no directory, no database


def test_json_keys_are_a_contract(filled, cli):
    result, data = status_json(cli)
    assert result.code == 0, result
    assert set(data) == {"healthy", "version", "checked_at", "paths", "config_exists",
                         "database", "layers", "model", "cache", "operations", "backups",
                         "trash", "alerts"}
    assert data["trash"] == {"records": 0}
    assert set(data["paths"]) == {"data", "database", "indexes", "config", "backups"}
    assert set(data["database"]) == {"exists", "bytes", "store_id"}
    assert list(data["layers"]) == ["interact", "insights", "assets"]
    assert set(data["layers"]["interact"]) == {
        "name", "records", "oldest", "newest", "ttl_seconds", "expired", "capacity",
        "capacity_used", "index"}
    assert set(data["layers"]["interact"]["index"]) == {"path", "bytes", "records", "fresh",
                                                        "problem"}
    assert set(data["model"]) == {"configured", "configured_key", "recorded", "recorded_key",
                                  "dimension", "probe", "mismatch"}
    assert set(data["cache"]) == {"entries", "hits", "misses", "hits_total", "misses_total",
                                  "hit_rate"}
    assert set(data["operations"]) == {"store", "search"}
    assert set(data["operations"]["store"]) == {"name", "recent", "since", "p50_seconds",
                                                "p99_seconds", "total", "total_seconds"}
    assert set(data["backups"]) == {"directory", "archives", "latest", "latest_at",
                                    "age_seconds", "max_age_seconds"}
    assert set(data["alerts"][0]) == {"severity", "code", "message", "remedy", "layer"}


def test_healthy_memory_reports_its_figures(filled, cli):
    result, data = status_json(cli)
    assert result.code == 0 and data["healthy"], result
    layers = data["layers"]
    assert [layers[n]["records"] for n in ("interact", "insights", "assets")] == [3, 1, 0]
    interact = layers["interact"]
    assert interact["index"]["fresh"] and interact["index"]["records"] == 3
    assert interact["index"]["bytes"] > 0 and interact["expired"] == 0
    assert interact["oldest"] <= interact["newest"]
    assert interact["capacity"] == 10_000 and interact["ttl_seconds"] == 86_400
    assert layers["assets"]["ttl_seconds"] is None
    assert data["model"] | {"probe": None} == {
        "configured": "fake-bow", "configured_key": "fake-bow", "recorded": "fake-bow",
        "recorded_key": "fake-bow", "dimension": 128, "probe": None, "mismatch": False}
    assert data["cache"]["entries"] == 4 and data["cache"]["misses"] == 4
    assert data["operations"]["store"]["total"] == 2
    assert data["database"]["bytes"] > 0
    assert codes(data) == {"backup_none"}  # records and no backup: worth knowing, not an error
    human = cli("status")
    assert human.code == 0
    for word in ("interact", "insights", "assets", "fresh", "fake-bow", "magray backup"):
        assert word in human.out, human.out


# -- indexes: stale, damaged, missing, foreign, other settings ----------------------------


def _unindexed_insert(memory: Memory, text: str, layer: str = "interact") -> None:
    """A record written to the database whose index update never ran (a killed process)."""
    vector = memory.embedder.embed_documents([text])[0]
    with memory.db.write() as conn:
        memory.db.insert(conn, NewRecord(text=text, layer=layer), vector, clock.now_iso())


def test_stale_index_is_a_warning_and_is_not_repaired(filled, cli, home):
    _unindexed_insert(filled, "written but never indexed", "insights")
    before = snapshot(home / "data" / "indexes")
    result, data = status_json(cli)
    alert = only_alert(data, "index_stale")
    assert alert["severity"] == "warning" and alert["layer"] == "insights"
    assert "behind the database (1 changes)" in alert["message"]
    assert "magray optimize" in alert["remedy"]
    assert result.code == 0 and data["healthy"]  # the next search catches up by itself
    assert data["layers"]["insights"]["index"]["fresh"] is False
    assert snapshot(home / "data" / "indexes") == before  # reported, not repaired


def test_corrupted_index_file_is_an_error_and_is_left_alone(filled, cli, home):
    path = home / "data" / "indexes" / "interact.usearch"
    path.write_bytes(b"\0garbage" * 64)
    before = snapshot(home / "data")
    result, data = status_json(cli)
    assert result.code == 1 and data["healthy"] is False
    alert = only_alert(data, "index_corrupt")
    assert alert["severity"] == "error" and alert["layer"] == "interact"
    assert "magray optimize" in alert["remedy"]
    assert "unhealthy" in result.err
    assert snapshot(home / "data") == before
    assert path.read_bytes() == b"\0garbage" * 64


def test_index_rewritten_behind_its_sidecar_is_an_error(filled, cli, home):
    """A valid usearch file that is not the one the sidecar describes (size and header agree,
    the modification time does not)."""
    path = home / "data" / "indexes" / "interact.usearch"
    content = path.read_bytes()
    time.sleep(0.01)
    path.write_bytes(content)
    result, data = status_json(cli)
    assert result.code == 1
    assert "file changed on disk" in only_alert(data, "index_corrupt")["message"]


def test_a_writer_between_its_two_renames_is_waited_for(filled, cli, home, monkeypatch):
    """sync renames the index file, then its sidecar, under the layer's lock: status must not
    call that moment damage."""
    import threading

    from magray import files
    from magray.locks import locked

    indexes = home / "data" / "indexes"
    renamed, release = threading.Event(), threading.Event()

    def writer() -> None:
        with locked(indexes / "interact.lock", timeout=10):
            path = indexes / "interact.usearch"
            path.write_bytes(path.read_bytes())  # the new file is in place...
            renamed.set()
            release.wait(10)
            sidecar = json.loads((indexes / "interact.json").read_text())
            info = path.stat()
            sidecar.update(size=info.st_size, mtime_ns=info.st_mtime_ns, crc32=files.crc32(path))
            (indexes / "interact.json").write_text(json.dumps(sidecar))  # ...then its sidecar

    def waiting(*args, **kwargs):  # status saw the mismatch and waits for the lock
        release.set()
        return locked(*args, **kwargs)

    monkeypatch.setattr(health, "locked", waiting)
    thread = threading.Thread(target=writer)
    thread.start()
    renamed.wait(10)
    result, data = status_json(cli)
    thread.join()
    assert release.is_set()
    assert result.code == 0 and data["layers"]["interact"]["index"]["fresh"], data["alerts"]


def test_unreadable_sidecar_and_missing_index_are_errors(filled, cli, home):
    indexes = home / "data" / "indexes"
    (indexes / "interact.json").write_text("{not json")
    (indexes / "insights.usearch").unlink()
    result, data = status_json(cli)
    assert result.code == 1
    assert only_alert(data, "index_corrupt")["layer"] == "interact"
    missing = only_alert(data, "index_missing")
    assert missing["layer"] == "insights" and missing["severity"] == "error"


def test_index_never_built_is_a_warning(filled, cli, home):
    for name in ("interact.usearch", "interact.json"):  # as if the process died before
        (home / "data" / "indexes" / name).unlink()   # its first index was saved
    result, data = status_json(cli)
    assert result.code == 0
    alert = only_alert(data, "index_stale")
    assert alert["layer"] == "interact" and "not built yet (3 records)" in alert["message"]


def test_index_from_another_database_is_an_error(filled, cli, home, tmp_path):
    with Memory.open(tmp_path / "other", embedder=FakeEmbedder()) as other:
        other.store_texts(["rotate the api keys every quarter", "ssh -J bastion host",
                           "kubectl rollout undo deployment/web"])
    for name in ("interact.usearch", "interact.json"):
        (home / "data" / "indexes" / name).write_bytes(
            (tmp_path / "other" / "data" / "indexes" / name).read_bytes())
    result, data = status_json(cli)
    assert result.code == 1
    assert only_alert(data, "index_foreign")["layer"] == "interact"


def test_index_built_with_other_settings_is_a_warning(filled, cli, home):
    (home / "config.toml").write_text("hnsw_m = 32\n")
    result, data = status_json(cli)
    assert result.code == 0
    assert {a["layer"] for a in data["alerts"] if a["code"] == "index_settings"} == {
        "interact", "insights"}  # assets never needed an index


# -- model ------------------------------------------------------------------------------


def test_model_mismatch_is_an_error(fake_memory, cli, monkeypatch):
    fake_memory.store_texts(["a note embedded by the fake model"])
    monkeypatch.delenv("MAGRAY_MODEL", raising=False)  # the default model is configured
    result, data = status_json(cli)
    assert result.code == 1 and data["model"]["mismatch"] is True
    alert = only_alert(data, "model_mismatch")
    assert "fake-bow" in alert["message"] and "all-MiniLM-L6-v2" in alert["message"]
    assert "magray optimize --reembed" in alert["remedy"]
    assert data["model"]["probe"] is None  # no model was loaded to say so


def test_check_model_reports_device_dimension_latency(memory, cli, monkeypatch):
    memory.store_texts(["a note embedded by the real model"])
    monkeypatch.setenv("MAGRAY_DEVICE", "cpu")  # the session's loaded model is reused
    result, data = status_json(cli, "--check-model")
    assert result.code == 0, result
    probe = data["model"]["probe"]
    assert probe["device"] == "cpu" and probe["cuda_unused"] == "device is set to cpu"
    assert probe["dimension"] == 384 == data["model"]["dimension"]
    assert probe["load_seconds"] >= 0 and probe["embed_seconds"] > 0 and probe["error"] is None
    human = cli("status", "--check-model")
    assert "device cpu (device is set to cpu), 384 dimensions" in human.out


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_check_model_says_why_cuda_was_not_used(home, cli, monkeypatch):
    monkeypatch.setenv("MAGRAY_DEVICE", "cuda")
    result, data = status_json(cli, "--check-model")
    probe = data["model"]["probe"]
    assert probe["device"] == "cpu" and probe["cuda_unused"] == "no CUDA device is available"
    assert only_alert(data, "model_cpu_fallback")["severity"] == "warning"
    assert result.code == 0


def test_check_model_against_other_vectors_and_an_unusable_model(fake_memory, cli, monkeypatch,
                                                                 real_embedder):
    fake_memory.store_texts(["64-dimensional fake vectors"])
    monkeypatch.setenv("MAGRAY_DEVICE", "cpu")
    result, data = status_json(cli, "--check-model")
    assert result.code == 1
    assert {"model_mismatch", "model_dimension"} <= codes(data)
    assert "384-dimensional" in only_alert(data, "model_dimension")["message"]
    monkeypatch.setenv("MAGRAY_MODEL", "/nonexistent/model-dir")
    result, data = status_json(cli, "--check-model")
    assert result.code == 1
    assert "outside the allowed model roots" in only_alert(data, "model_unusable")["message"]
    assert data["model"]["probe"]["device"] is None


# -- layers: expiry and capacity --------------------------------------------------------


def test_expired_records_pending_clean_are_a_warning(fake_model, fake_memory, cli):
    old = "2020-01-02T03:04:05+00:00"
    fake_memory.store([NewRecord(text=f"old chat turn {n}", created_at=old) for n in range(4)]
                      + [NewRecord(text="a fresh note")]
                      + [NewRecord(text="old reference", layer="assets", created_at=old)])
    result, data = status_json(cli)
    assert result.code == 0
    alert = only_alert(data, "expired_pending")
    assert alert["layer"] == "interact" and alert["severity"] == "warning"
    assert "4 record(s)" in alert["message"] and "24h" in alert["message"]
    assert "magray clean" in alert["remedy"]
    assert data["layers"]["interact"]["expired"] == 4
    assert data["layers"]["assets"]["expired"] == 0  # assets never expire


def test_ttl_setting_changes_what_counts_as_expired(fake_model, fake_memory, cli, monkeypatch):
    monkeypatch.setenv("MAGRAY_NOW", "2030-01-10T00:00:00+00:00")
    fake_memory.store([NewRecord(text="ten days old", created_at="2029-12-31T00:00:00+00:00")])
    monkeypatch.setenv("MAGRAY_TTL_INTERACT", "30d")
    assert status_json(cli)[1]["layers"]["interact"]["expired"] == 0
    monkeypatch.setenv("MAGRAY_TTL_INTERACT", "1w")
    assert status_json(cli)[1]["layers"]["interact"]["expired"] == 1
    monkeypatch.setenv("MAGRAY_TTL_INTERACT", "soon")
    assert cli("status").code == 2


def test_over_and_near_capacity(filled, cli, monkeypatch):
    monkeypatch.setenv("MAGRAY_CAPACITY_INTERACT", "2")
    monkeypatch.setenv("MAGRAY_CAPACITY_INSIGHTS", "1")
    result, data = status_json(cli)
    assert result.code == 0
    over = only_alert(data, "over_capacity")
    assert over["layer"] == "interact" and over["severity"] == "warning"
    assert "3 records, over its capacity of 2" in over["message"]
    assert "capacity_interact" in over["remedy"]
    near = only_alert(data, "near_capacity")
    assert near["layer"] == "insights" and near["severity"] == "info"
    assert data["layers"]["interact"]["capacity_used"] == 1.5


# -- backups ----------------------------------------------------------------------------


def _archive(home: Path, name: str, age_days: float) -> None:
    backups = home / "backups"
    backups.mkdir(parents=True, exist_ok=True)
    path = backups / name
    path.write_bytes(b"\x28\xb5\x2f\xfd")
    stamp = time.time() - age_days * 86400
    os.utime(path, (stamp, stamp))


def test_old_backup_is_a_warning(filled, cli, home, monkeypatch):
    _archive(home, "magray-20250101T000000Z.tar.zst", age_days=10)
    _archive(home, "magray-20250105T000000Z.tar.zst", age_days=9)
    _archive(home, ".magray-partial.tar.zst", age_days=0)  # a temporary file: not a backup
    result, data = status_json(cli)
    assert result.code == 0
    alert = only_alert(data, "backup_old")
    assert alert["severity"] == "warning" and "magray-20250105T000000Z.tar.zst" in alert["message"]
    assert "magray backup" in alert["remedy"]
    backups = data["backups"]
    assert backups["archives"] == 2 and backups["latest"] == "magray-20250105T000000Z.tar.zst"
    assert 9 * 86400 - 60 < backups["age_seconds"] < 9 * 86400 + 60
    assert backups["max_age_seconds"] == 7 * 86400

    monkeypatch.setenv("MAGRAY_BACKUP_MAX_AGE", "30d")
    assert "backup_old" not in codes(status_json(cli)[1])
    monkeypatch.setenv("MAGRAY_BACKUP_MAX_AGE", "none")
    assert "backup_old" not in codes(status_json(cli)[1])


def test_recent_backup_raises_nothing(filled, cli, home):
    _archive(home, "magray-20250101T000000Z.tar.zst", age_days=1)
    result, data = status_json(cli)
    assert codes(data) == set() and result.code == 0


# -- the database -----------------------------------------------------------------------


def test_unreadable_database_is_an_error(home, cli):
    (home / "data").mkdir(parents=True)
    (home / "data" / "magray.db").write_bytes(b"this is not sqlite " * 300)
    result, data = status_json(cli)
    assert result.code == 1
    assert only_alert(data, "database_unreadable")["severity"] == "error"
    assert (home / "data" / "magray.db").read_bytes() == b"this is not sqlite " * 300


def test_database_from_an_older_magray_is_read_without_upgrading(fake_model, home, cli):
    (home / "data").mkdir(parents=True)
    import sqlite3

    db = sqlite3.connect(home / "data" / "magray.db")
    migrations.apply(db, stop_before="m002_ops")
    db.commit()
    db.close()
    result, data = status_json(cli)
    assert result.code == 0 and data["alerts"] == []
    assert data["operations"]["store"]["total"] == 0
    check = sqlite3.connect(home / "data" / "magray.db")
    tables = {r[0] for r in check.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "ops" not in tables  # status did not migrate it


# -- exit codes and formats -------------------------------------------------------------


def test_json_and_prometheus_together_is_bad_usage(cli):
    result = cli("status", "--json", "--prometheus")
    assert result.code == 2 and "cannot be combined" in result.err


def test_prometheus_text_parses(filled, cli, home):
    from prometheus_client.parser import text_string_to_metric_families

    filled.search("bastion")  # (a search brings every index up to date first)
    _unindexed_insert(filled, "a stale one", "insights")
    result = cli("status", "--prometheus")
    assert result.code == 0, result
    families = {f.name: f for f in text_string_to_metric_families(result.out)}
    assert all(name.startswith("magray_") for name in families)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("magray_healthy", ())] == 1
    for layer, count in (("interact", 3), ("insights", 2), ("assets", 0)):
        assert samples[("magray_records", (("layer", layer),))] == count
        assert ("magray_index_fresh", (("layer", layer),)) in samples
    assert samples[("magray_index_fresh", (("layer", "insights"),))] == 0
    assert samples[("magray_alert", (("code", "index_stale"), ("layer", "insights"),
                                     ("severity", "warning")))] == 1
    assert families["magray_operations"].type == "counter"
    assert samples[("magray_operations_total", (("op", "store"),))] == 2
    assert samples[("magray_operations_total", (("op", "search"),))] == 1
    summary = families["magray_operation_duration_seconds"]
    assert summary.type == "summary"
    assert samples[("magray_operation_duration_seconds_count", (("op", "search"),))] == 1
    assert ("magray_operation_duration_seconds", (("op", "search"), ("quantile", "0.99"))) \
        in samples
    # every line is a comment or a sample; no blank lines (the textfile collector is strict)
    assert all(line and (line.startswith("#") or line.startswith("magray_"))
               for line in result.out.splitlines())


def test_prometheus_when_unhealthy_still_prints_metrics(filled, cli, home):
    (home / "data" / "indexes" / "assets.usearch").write_bytes(b"junk")
    result = cli("status", "--prometheus")
    assert result.code == 1
    assert "magray_healthy 0" in result.out
    assert 'magray_alerts{severity="error"} 1' in result.out


def test_label_values_are_escaped():
    text = health._escape_label('a "quoted"\\path\nnext')
    assert text == 'a \\"quoted\\"\\\\path\\nnext'


# -- the operation log ------------------------------------------------------------------


def test_store_and_search_log_their_figures(fake_model, fake_memory, cli):
    fake_memory.store_texts(["first note", "second note"])
    fake_memory.store_texts(["first note"])  # a duplicate: counted, nothing embedded
    fake_memory.search("a query", top_k=3)
    fake_memory.search("a query", top_k=3)  # the query vector now comes from the cache
    fake_memory.search("a query", mode="keyword")
    fake_memory.search("untracked", track=False)  # writes nothing, so is not logged
    data = status_json(cli)[1]
    store_ops, search_ops = data["operations"]["store"], data["operations"]["search"]
    assert store_ops["total"] == store_ops["recent"] == 2
    assert search_ops["total"] == 3
    assert 0 < search_ops["p50_seconds"] <= search_ops["p99_seconds"]
    # four cached vectors (two notes, two queries); the untracked search's lookup is not logged
    assert data["cache"] == {"entries": 4, "hits": 1, "misses": 3, "hits_total": 1,
                             "misses_total": 3, "hit_rate": 0.25}
    rows = fake_memory.db.conn.execute("SELECT op, items FROM ops ORDER BY id").fetchall()
    assert rows == [("store", 2), ("store", 1), ("search", 2), ("search", 2), ("search", 0)]


def test_operation_log_is_bounded(fake_model, fake_memory, monkeypatch):
    monkeypatch.setattr(store_module, "OPS_KEEP", 3)
    for n in range(6):
        fake_memory.store_texts([f"note number {n}"])
    assert fake_memory.db.conn.execute("SELECT count(*) FROM ops").fetchone()[0] == 3
    result = health.check()
    assert result.operations[0].total == 6 and result.operations[0].recent == 3


def test_a_multi_batch_store_is_logged_once(fake_model, fake_memory, monkeypatch):
    import magray.write

    monkeypatch.setattr(magray.write, "STORE_BATCH", 2)
    fake_memory.store_texts([f"batched note {n}" for n in range(5)])
    rows = fake_memory.db.conn.execute("SELECT op, items, cache_misses FROM ops").fetchall()
    assert rows == [("store", 5, 5)]


# -- small pieces -----------------------------------------------------------------------


def test_percentile_is_nearest_rank():
    values = [float(n) for n in range(1, 101)]
    assert health.percentile(values, 0.5) == 50.0
    assert health.percentile(values, 0.99) == 99.0
    assert health.percentile([3.0], 0.99) == 3.0
    assert health.percentile([], 0.5) is None


def test_index_header_is_read_from_a_real_usearch_file(tmp_path):
    from usearch.index import Index

    for dtype, ndim, count in (("f32", 384, 7), ("f16", 64, 0)):
        index = Index(ndim=ndim, metric="ip", dtype=dtype)
        if count:
            index.add(np.arange(count), np.random.default_rng(1).random((count, ndim),
                                                                        dtype=np.float32))
        path = tmp_path / f"{dtype}.usearch"
        index.save(str(path))
        assert health.read_index_header(path) == (count, ndim)
    (tmp_path / "junk.usearch").write_bytes(b"\xff" * 100)
    assert health.read_index_header(tmp_path / "junk.usearch") is None
    assert health.read_index_header(tmp_path / "absent.usearch") is None


@pytest.mark.parametrize("dtype, ndim, count, multi, removed", [
    ("f32", 384, 300, True, 0), ("f16", 384, 1, True, 0), ("i8", 64, 50, False, 10),
    ("f32", 1, 2, False, 0), ("f16", 1024, 0, True, 0), ("b1", 128, 20, False, 0),
])
def test_index_header_reader_agrees_with_usearch(tmp_path, dtype, ndim, count, multi, removed):
    """The hand reader and usearch's public Index.metadata say the same of the installed
    usearch's files: a usearch release that changes its header fails here, loudly."""
    from usearch.index import Index

    index = Index(ndim=ndim, metric="hamming" if dtype == "b1" else "ip", dtype=dtype,
                  multi=multi)
    if count:
        rows = np.random.default_rng(2).random((count, ndim), dtype=np.float32)
        index.add(np.arange(count), np.packbits(rows > 0.5, axis=1) if dtype == "b1" else rows)
    for key in range(removed):
        index.remove(key)
    path = tmp_path / "layer.usearch"
    index.save(str(path))
    meta = Index.metadata(str(path))
    assert meta["version"].split(".")[0] == str(health._HEADER_MAJOR)
    assert health.read_index_header(path) == (meta["count_present"], meta["dimensions"])


def test_an_index_of_another_format_version_is_read_by_usearch(tmp_path, monkeypatch):
    from usearch.index import Index

    index = Index(ndim=8, metric="ip")
    index.add(np.arange(3), np.ones((3, 8), dtype=np.float32))
    path = tmp_path / "next.usearch"
    index.save(str(path))
    raw = bytearray(path.read_bytes())
    at = raw.index(b"usearch") + len(b"usearch")
    raw[at:at + 2] = (health._HEADER_MAJOR + 1).to_bytes(2, "little")
    path.write_bytes(bytes(raw))
    asked = []
    monkeypatch.setattr(Index, "metadata", staticmethod(
        lambda where: asked.append(where) or {"count_present": 3, "dimensions": 8}))
    assert health.read_index_header(path) == (3, 8) and asked == [str(path)]


# -- start-up: no torch, no model -------------------------------------------------------


def test_status_never_imports_torch_in_a_fresh_process(filled, home):
    code = (
        "import sys\n"
        "from magray.cli import main\n"
        "try:\n"
        "    main(['status', '--json'])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'transformers', 'usearch',\n"
        "                     'numpy', 'sqlite_utils') if m in sys.modules]\n"
        "print('HEAVY', heavy, 'EXIT', code, file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "MAGRAY_HOME": str(home)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120)
    assert "HEAVY [] EXIT 0" in result.stderr, result.stderr
    assert json.loads(result.stdout)["layers"]["interact"]["records"] == 3


def test_python_m_magray_status_exit_codes(filled, home):
    env = {**os.environ, "PYTHONPATH": str(REPO), "MAGRAY_HOME": str(home)}
    run = [sys.executable, "-m", "magray", "status", "--json"]
    healthy = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert healthy.returncode == 0 and json.loads(healthy.stdout)["healthy"] is True
    (home / "data" / "indexes" / "interact.usearch").write_bytes(b"junk")
    broken = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert broken.returncode == 1 and json.loads(broken.stdout)["healthy"] is False
    assert broken.stderr.startswith("error: unhealthy: the index file for interact is damaged")


def test_check_model_on_a_cuda_host_reports_cuda(home, real_embedder):
    """Queries run on ONNX Runtime (CPU) by design; the check reports the device documents
    are embedded on, and warns of no fallback when CUDA works (a fake GPU here)."""
    from fake_gpu import FakeRuntime

    from magray import config, health
    from magray.embedding import from_settings

    settings = config.load(home / "config.toml").replace(device="cuda")
    from_settings(settings, home / "data").embed_query("x")  # the ONNX copy exists, as usual
    runtime = FakeRuntime(real_embedder.model)
    embedder = from_settings(settings, home / "data", runtime=runtime)
    report = health.check(home, settings=settings, check_model=True, embedder=embedder)
    probe = report.model.probe
    assert (probe.device, probe.cuda_unused, probe.error) == ("cuda", None, None)
    assert runtime.loads == ["cuda"]
    assert "model_cpu_fallback" not in {alert.code for alert in report.alerts}
