"""`magray status` on a PostgreSQL memory (issue 18): the server, its round trip and
versions, counts, the server's HNSW indexes against the settings, the database's size, and
the alerts that apply there; the SQLite document's keys stay as they are (tests/test_health.py
pins them) and the server's come as one more key."""

from __future__ import annotations

import json
import socket

import pytest

from magray import config, health

SQLITE_KEYS = {"healthy", "version", "checked_at", "paths", "config_exists", "database",
               "layers", "model", "cache", "operations", "backups", "trash", "alerts"}
SERVER_KEYS = {"engine", "server", "database", "user", "latency_seconds", "version",
               "vector_version", "vector_available", "vector_indexes"}
INDEX_KEYS = {"name", "present", "valid", "type", "m", "ef_construction", "bytes", "wanted",
              "matches"}


def use_database(monkeypatch, url: str) -> None:
    """The `database` setting names ``url`` (through its environment variable)."""
    monkeypatch.setenv("MAGRAY_DATABASE", url)


@pytest.fixture
def url(monkeypatch, pg_server, pg_database):
    found = pg_server.url(pg_database)
    use_database(monkeypatch, found)
    return found


@pytest.fixture
def filled(monkeypatch, on_postgres, url, fake_memory):
    """Four records (3 interact, 1 insights) and one in the trash, on the test database."""
    monkeypatch.setenv("MAGRAY_MODEL", "fake-bow")  # the fake model's name: no mismatch
    fake_memory.store_texts(["rotate the api keys every quarter", "ssh -J bastion host",
                             "kubectl rollout undo deployment/web"])
    stored = fake_memory.store_texts(["postgres over mysql for the billing service",
                                      "a note to forget"], layer="insights")
    fake_memory.forget([stored[1].id])
    return fake_memory


def status_json(cli, *args):
    result = cli("status", "--json", *args)
    return result, json.loads(result.out)


def codes(data) -> dict[str, set]:
    found: dict[str, set] = {}
    for alert in data["alerts"]:
        found.setdefault(alert["code"], set()).add(alert["layer"])
    return found


def unbuilt(pg_server, pg_database) -> None:
    """The server's HNSW indexes gone, as in a memory written before they were built."""
    import psycopg

    with psycopg.connect(pg_server.uri(pg_database), autocommit=True) as admin:
        admin.execute("DROP INDEX IF EXISTS records_hnsw_interact, records_hnsw_insights, "
                      "records_hnsw_assets")
        admin.execute("DELETE FROM meta WHERE key = 'vector_index'")


def test_status_reports_the_server_counts_and_missing_indexes(filled, cli, url, pg_server,
                                                              pg_database):
    unbuilt(pg_server, pg_database)
    result, data = status_json(cli)
    assert result.code == 0, result
    assert set(data) == SQLITE_KEYS | {"server"}  # the SQLite keys, and one more
    server = data["server"]
    assert set(server) == SERVER_KEYS
    assert server["engine"] == "postgresql" and server["user"] == "postgres"
    assert server["version"].startswith("18") and server["vector_version"].startswith("0.8")
    assert 0 < server["latency_seconds"] < 60
    assert server["server"].startswith("/")  # the socket directory of the embedded server
    assert data["paths"]["database"] == url and "password" not in result.out
    assert data["database"]["exists"] is True and data["database"]["bytes"] > 1_000_000
    assert data["database"]["store_id"]
    layers = data["layers"]
    assert [layers[n]["records"] for n in ("interact", "insights", "assets")] == [3, 1, 0]
    assert data["trash"] == {"records": 1}
    assert data["model"]["recorded_key"] == "fake-bow" and not data["model"]["mismatch"]
    # no HNSW index on the server: a warning for each layer that holds records (searches
    # are right, only slower; the next one builds them), none for the empty one
    assert codes(data)["index_stale"] == {"interact", "insights"}
    assert layers["interact"]["index"]["problem"] == "not built"
    assert layers["assets"]["index"]["fresh"] is True
    index = server["vector_indexes"]["interact"]
    assert set(index) == INDEX_KEYS and index["present"] is False
    assert index["wanted"] == {"type": "vector(128)", "m": 16, "ef_construction": 200}


def test_indexes_built_as_the_settings_ask_are_fresh_and_others_are_named(
        filled, cli, monkeypatch):
    filled.db.ensure_vector_index(128, "f32", 16, 200)
    result, data = status_json(cli)
    assert result.code == 0 and "index_stale" not in codes(data), result
    for layer in ("interact", "insights", "assets"):
        index = data["server"]["vector_indexes"][layer]
        assert index["present"] and index["valid"] and index["matches"], index
        assert (index["type"], index["m"], index["ef_construction"]) == ("vector(128)", 16, 200)
        assert index["bytes"] > 0 and index["name"] == f"records_hnsw_{layer}"
        assert data["layers"][layer]["index"]["fresh"] is True
    assert data["layers"]["interact"]["index"]["records"] == 3
    monkeypatch.setenv("MAGRAY_HNSW_M", "8")
    monkeypatch.setenv("MAGRAY_INDEX_DTYPE", "f16")
    result, data = status_json(cli)
    assert result.code == 0
    assert codes(data)["index_settings"] == {"interact", "insights", "assets"}
    index = data["server"]["vector_indexes"]["insights"]
    assert index["matches"] is False
    assert index["wanted"] == {"type": "halfvec(128)", "m": 8, "ef_construction": 200}
    assert "m=16" in data["layers"]["insights"]["index"]["problem"]


def test_human_text_and_prometheus_name_the_server(filled, cli, pg_server, pg_database):
    from prometheus_client.parser import text_string_to_metric_families

    unbuilt(pg_server, pg_database)
    human = cli("status")
    assert human.code == 0, human
    for words in ("server", "PostgreSQL 18", "pgvector 0.8", "round trip", "HNSW on the server",
                  "not built", "interact"):
        assert words in human.out, human.out
    result = cli("status", "--prometheus")
    assert result.code == 0, result
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(result.out)
               for s in family.samples}
    assert samples[("magray_server_latency_seconds", ())] > 0
    info = next(labels for name, labels in samples if name == "magray_server_info")
    assert dict(info)["engine"] == "postgresql" and dict(info)["pgvector"].startswith("0.8")
    assert samples[("magray_records", (("layer", "interact"),))] == 3
    assert samples[("magray_vector_index_present", (("layer", "interact"),))] == 0
    assert samples[("magray_database_bytes", ())] > 0


def test_model_mismatch_is_an_error_as_on_sqlite(filled, cli, monkeypatch):
    monkeypatch.setenv("MAGRAY_MODEL", "another-model")
    result, data = status_json(cli)
    assert result.code == 1
    assert "model_mismatch" in codes(data)
    assert "unhealthy: the stored vectors were made with fake-bow" in result.err


def test_a_new_database_is_an_empty_memory_and_status_creates_nothing(url, cli, pg_server,
                                                                       pg_database):
    import psycopg

    result, data = status_json(cli)
    assert result.code == 0, result
    assert data["database"]["exists"] is False
    assert {n: layer["records"] for n, layer in data["layers"].items()} == {
        "interact": 0, "insights": 0, "assets": 0}
    # the database has no vector extension yet (the server offers it): said, not an error
    assert data["server"]["vector_version"] is None and data["server"]["vector_available"]
    alert = next(a for a in data["alerts"] if a["code"] == "pgvector_missing")
    assert alert["severity"] == "warning" and "no vector extension" in alert["message"]
    with psycopg.connect(pg_server.uri(pg_database)) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                            ).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'"
                            ).fetchone()[0] == 0


def test_a_server_without_pgvector_is_an_error_that_says_so(home):
    """The one case the embedded server (which ships pgvector) cannot be: judged from the
    facts a server without it reports."""
    from magray import paths
    from magray.db.base import ServerFacts

    checker = health._Checker(paths.resolve(home), config.defaults())
    checker._server_alerts(ServerFacts("postgresql", "db.example:5432", "memory", "magray",
                                       0.001, "16.4", None, None, 8_000_000, False))
    [alert] = checker.alerts
    assert (alert.severity, alert.code) == ("error", "pgvector_missing")
    assert "db.example:5432 has no pgvector extension" in alert.message


def test_an_unreachable_server_is_one_line_and_exit_1(cli, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    use_database(monkeypatch, f"postgresql://me@127.0.0.1:{port}/memory?connect_timeout=5")
    for args in ((), ("--json",), ("--prometheus",)):
        result = cli("status", *args)
        assert result.code == 1, result
        assert result.out == ""
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], result.err
        assert "cannot be reached" in lines[0] and "Traceback" not in result.err


def test_a_database_setting_naming_a_file_is_the_file_status_reads(cli, monkeypatch, tmp_path,
                                                                   home):
    from fakes import FakeEmbedder
    from magray import Memory

    elsewhere = tmp_path / "elsewhere" / "shared.db"
    elsewhere.parent.mkdir()
    use_database(monkeypatch, str(elsewhere))
    monkeypatch.setenv("MAGRAY_MODEL", "fake-bow")
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        memory.store_texts(["kept in another file"])
    result, data = status_json(cli)
    assert result.code == 0, result
    assert "server" not in data  # a file: the SQLite document, unchanged
    assert data["paths"]["database"] == str(elsewhere) and data["database"]["exists"]
    assert data["database"]["bytes"] == sum(
        p.stat().st_size for p in elsewhere.parent.iterdir() if p.name in (
            "shared.db", "shared.db-wal"))
    assert data["layers"]["interact"]["records"] == 1
