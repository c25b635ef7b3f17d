"""The server killed (SIGKILL) under a client: what the client was told is stored survives
the restart, the client's error is one line, and a long-lived client reconnects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from magray.errors import MagrayError
from magray.records import NewRecord

pytest.importorskip("psycopg")

CLIENT = Path(__file__).with_name("bulk_client.py")


def test_acknowledged_records_survive_a_server_killed_during_a_bulk_store(
        pg_server, pg_target, pg_store):
    client = subprocess.Popen([sys.executable, str(CLIENT), pg_target.url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acknowledged: list[int] = []
    try:
        for line in client.stdout:  # wait for a few committed batches, then pull the plug
            acknowledged += [int(i) for i in line.split()]
            if len(acknowledged) >= 200:
                pg_server.kill()
                break
        acknowledged += [int(i) for line in client.stdout for i in line.split()]
        code = client.wait(timeout=60)
    finally:
        client.kill()
        pg_server.restart()
    errors = client.stderr.read().strip().splitlines()
    assert code == 1 and len(errors) == 1, errors
    assert errors[0].startswith("error: the PostgreSQL server at ")
    assert "cannot be reached or went away" in errors[0]
    stored = pg_store.records(acknowledged)  # the store reconnects after the restart
    assert sorted(stored) == sorted(acknowledged)
    assert all(stored[i].text.startswith("batch ") for i in acknowledged)


def test_a_lost_connection_is_one_line_and_the_next_call_reconnects(pg_server, pg_store):
    with pg_store.write() as tx:
        rid, _ = pg_store.insert(tx, NewRecord("before the crash"), [1.0, 0.0], "2026-01-01")
    pg_server.kill()
    try:
        with pytest.raises(MagrayError) as caught:
            pg_store.count("interact")
        assert "\n" not in str(caught.value) and pg_store.target.host in str(caught.value)
        assert "cannot be reached or went away" in str(caught.value)
        with pytest.raises(MagrayError):  # while it is down, every call says the same
            with pg_store.write() as tx:
                pg_store.insert(tx, NewRecord("during"), [0.0, 1.0], "2026-01-01")
    finally:
        pg_server.restart()
    assert pg_store.records([rid])[rid].text == "before the crash"
    assert pg_store.count("interact") == 1
