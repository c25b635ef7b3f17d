"""``magray mcp`` driven by the MCP SDK's own client, over stdio and streamable HTTP, with
the real model: the tools an agent uses, bad arguments, many sessions at once, and the
HTTP transport's guards (loopback, bearer token, Origin)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

TOOLS = {"remember", "recall", "get", "recent", "forget", "status"}
SECRET = "ghp_" + "Zx9Q" * 9  # a fake GitHub token (tests/test_secrets.py)
NOTE = "Deploys to production need a green canary for 30 minutes before the full rollout"
PARAPHRASE = "how long must the canary stay healthy before we ship everywhere"
OTHERS = ["Use rg -uu to search files that .gitignore hides",
          "The office wifi password rotates on the first Monday of each month",
          "Postgres connection pool size for the api service is 40"]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "MAGRAY_HOME": str(home), "HF_HUB_OFFLINE": "1"}


@asynccontextmanager
async def stdio_session(home: Path):
    params = StdioServerParameters(command=sys.executable, args=["-m", "magray", "mcp"],
                                   env=_env(home))
    with open(home.parent / "server-stderr.log", "a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


async def call(session: ClientSession, tool: str, **arguments):
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def error_of(session: ClientSession, tool: str, **arguments) -> str:
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result
    message = result.content[0].text
    assert "\n" not in message and "Traceback" not in message
    return message


async def exercise(session: ClientSession) -> int:
    """What an agent does in a session, checked at every step."""
    listed = {t.name: t for t in (await session.list_tools()).tools}
    assert set(listed) == TOOLS
    assert listed["recall"].annotations.read_only_hint is True
    assert listed["forget"].annotations.destructive_hint is True
    assert listed["remember"].annotations.read_only_hint is False
    assert all(t.description for t in listed.values())
    assert listed["recall"].input_schema["properties"]["top_k"]

    for text in OTHERS:
        await call(session, "remember", text=text, layer="assets")
    stored = await call(session, "remember", text=NOTE, tags=["deploy"], project="web",
                        kind="decision")
    note_id = stored["id"]
    assert stored["duplicate"] is False

    hits = (await call(session, "recall", query=PARAPHRASE, top_k=3))["hits"]
    assert hits[0]["id"] == note_id and hits[0]["text"] == NOTE
    assert (await call(session, "get", id=note_id))["tags"] == ["deploy"]
    recent = (await call(session, "recent", limit=2))["records"]
    assert [r["id"] for r in recent][0] == note_id
    only_web = (await call(session, "recent", project="web"))["records"]
    assert [r["id"] for r in only_web] == [note_id]

    # Bad arguments are tool errors naming the tool's argument; the server keeps serving.
    assert "top_k must be from 1 to 100, got 0" in await error_of(
        session, "recall", query="canary", top_k=0)
    assert "bad arguments: top_k: Input should be a valid integer" in await error_of(
        session, "recall", query="canary", top_k="many")
    assert "query: Field required" in await error_of(session, "recall", top_k=3)
    assert "unknown layer 'nowhere'" in await error_of(
        session, "remember", text="x", layer="nowhere")
    assert "unknown layer 'nowhere'" in await error_of(
        session, "recall", query="x", layers=["nowhere"])
    assert "id" in await error_of(session, "get", id="seven")
    assert "no record with id 999999" in await error_of(session, "get", id=999999)
    assert "no record ids given" in await error_of(session, "forget", ids=[])
    assert "importance" in await error_of(session, "remember", text="x", importance=7)
    assert "the search query is empty" in await error_of(session, "recall", query="  ")

    forgotten = (await call(session, "forget", ids=[note_id]))["forgotten"]
    assert forgotten == [{"id": note_id, "layer": stored["layer"]}]
    hits = (await call(session, "recall", query=PARAPHRASE, top_k=10))["hits"]
    assert note_id not in [h["id"] for h in hits]
    assert f"no record with id {note_id}" in await error_of(session, "get", id=note_id)

    health = await call(session, "status")
    assert health["healthy"] is True
    assert all(layer["index"]["fresh"] for layer in health["layers"].values())
    prompt = await session.get_prompt("memory-protocol")
    assert "recall" in prompt.messages[0].content.text
    resource = await session.read_resource("magray://status")
    assert json.loads(resource.contents[0].text)["healthy"] is True
    kept = await call(session, "remember", text=f"the deploy bot's token is {SECRET}")
    assert kept["redacted"] == ["github-token"]
    got = await call(session, "get", id=kept["id"])
    assert SECRET not in json.dumps(got) and "[redacted: github-token]" in json.dumps(got)
    return note_id


def test_an_agent_session_over_stdio(home, tmp_path):
    async def main():
        async with stdio_session(home) as session:
            return await exercise(session)

    note_id = asyncio.run(main())
    secret = SECRET.encode()  # remembered in exercise(): redacted before anything was written
    assert [p for p in home.rglob("*") if p.is_file() and secret in p.read_bytes()] == []
    from magray import Memory

    with Memory.open(home) as memory:  # forget moved it to the trash, whole and restorable
        assert [t.record.id for t in memory.trash()] == [note_id]
        assert memory.restore_from_trash([note_id])[0].text == NOTE


def test_stdout_carries_only_protocol_messages(home):
    """A raw stdio exchange: every line the server writes parses as JSON-RPC."""
    lines = [{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                 "protocolVersion": "2025-06-18", "capabilities": {},
                 "clientInfo": {"name": "t", "version": "0"}}},
             {"jsonrpc": "2.0", "method": "notifications/initialized"},
             {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                 "name": "remember", "arguments": {"text": "a note to embed"}}}]
    server = subprocess.Popen([sys.executable, "-m", "magray", "mcp"], env=_env(home),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    server.stdin.write("".join(json.dumps(m) + "\n" for m in lines))
    server.stdin.flush()
    answers = []
    while len(answers) < 2:  # the store waits for the model: all of its loading is done
        line = server.stdout.readline()
        assert line, server.communicate()[1]
        answers.append(json.loads(line))
    rest, _ = server.communicate(timeout=60)
    assert server.returncode == 0
    assert [a.get("id") for a in answers] == [1, 2] and rest == ""
    assert answers[1]["result"]["isError"] is False


def test_a_recall_before_the_model_is_loaded_answers_by_keywords(home, monkeypatch):
    stored = _magray(home, "store", "--layer", "assets", NOTE)
    assert stored.returncode == 0, stored.stderr
    monkeypatch.setenv("MAGRAY_MCP_MODEL_WAIT", "0")  # do not wait for the model at all

    async def main():
        async with stdio_session(home) as session:
            early = await call(session, "recall", query="canary rollout")  # the model loads
            assert "keywords only" in early["note"]
            assert [h["text"] for h in early["hits"]] == [NOTE]
            await call(session, "remember", text="a store waits for the model")
            late = await call(session, "recall", query=PARAPHRASE)
            assert "note" not in late and late["hits"][0]["text"] == NOTE

    asyncio.run(main())


def test_the_cli_does_not_import_the_sdk():
    code = "import sys, magray.cli; assert 'mcp' not in sys.modules, 'mcp imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- streamable HTTP ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def token_file(tmp_path) -> tuple[Path, str]:
    token = "t0ken-" + "ab" * 16
    path = tmp_path / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path, token


@pytest.fixture
def http_server(home, token_file):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "magray", "mcp", "--http", f"127.0.0.1:{port}",
         "--token-file", str(token_file[0])], env=_env(home), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:  # wait for it to listen (not a timing assertion: a hang guard)
        assert server.poll() is None, server.communicate()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the server never listened"
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}/mcp", server
    if server.poll() is None:
        server.kill()
        server.communicate()


def _client(token: str | None, **headers: str) -> httpx2.AsyncClient:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60, read=300))


def test_an_agent_session_over_http_then_sigterm(http_server, token_file):
    url, server = http_server

    async def main():
        async with _client(token_file[1]) as client, \
                streamable_http_client(url, http_client=client) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            await exercise(session)

    asyncio.run(main())
    server.send_signal(signal.SIGTERM)
    out, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert out == ""


def test_http_rejects_a_missing_token_and_a_foreign_origin(http_server, token_file):
    url, _ = http_server
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}}
    accept = {"Accept": "application/json, text/event-stream"}

    async def post(client: httpx2.AsyncClient) -> int:
        return (await client.post(url, json=hello, headers=accept)).status_code

    async def main():
        async with _client(None) as client:
            assert await post(client) == 401
        async with _client("wrong-" + token_file[1]) as client:
            assert await post(client) == 401
        async with _client(token_file[1], Origin="http://evil.example") as client:
            assert await post(client) == 403
        async with _client(token_file[1], Host="evil.example") as client:
            assert await post(client) in (403, 421)
        async with _client(token_file[1], Origin=url.rsplit("/", 1)[0]) as client:
            assert await post(client) == 200

    asyncio.run(main())


def test_header_values_reach_the_server_log_escaped(http_server, token_file):
    url, server = http_server
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}}

    async def main():
        # \x9b is a C1 control (CSI) that HTTP allows in a header value, as obs-text
        async with _client(token_file[1], Origin=b"http://evil\x9b2J.example") as client:
            response = await client.post(url, json=hello, headers={
                "Accept": "application/json, text/event-stream"})
            assert response.status_code == 403

    asyncio.run(main())
    server.send_signal(signal.SIGTERM)
    _, err = server.communicate(timeout=60)
    assert "Invalid Origin header" in err and "http://evil\\x9b2J.example" in err, err
    assert "\x9b" not in err


def _magray(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "magray", *args], env=_env(home),
                          capture_output=True, text=True, timeout=120)


def test_a_non_loopback_bind_needs_a_token(home, tmp_path, token_file):
    port = str(_free_port())
    refused = _magray(home, "mcp", "--http", f"0.0.0.0:{port}")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: refusing to serve 0.0.0.0")
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "give --token-file with a secret" in refused.stderr  # the flag, not token_file

    open_token = tmp_path / "open-token"
    open_token.write_text(token_file[1])
    open_token.chmod(0o644)
    lax = _magray(home, "mcp", "--http", f"0.0.0.0:{port}", "--token-file", str(open_token))
    assert lax.returncode == 2 and "chmod 600" in lax.stderr
    bad = _magray(home, "mcp", "--http", "127.0.0.1:http")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --http: expected HOST:PORT")


def test_http_bind_failures_and_bad_inputs_are_one_line(home, tmp_path, token_file):
    def one_line(result, code: int, words: str) -> None:
        assert result.returncode == code, result.stderr
        assert result.stderr.startswith("error: ") and words in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line(_magray(home, "mcp", "--http", f"127.0.0.1:{port}"), 1, "cannot listen on")
    token = str(token_file[0])
    one_line(_magray(home, "mcp", "--http", "no-such-host.invalid:8765", "--token-file", token),
             1, "cannot listen on no-such-host.invalid:8765")
    one_line(_magray(home, "mcp", "--http", "127.0.0.1:\u00b2"), 2, "HOST:PORT")
    latin = tmp_path / "latin-token"
    latin.write_bytes(b"t0ken-\xff" + b"ab" * 16)
    latin.chmod(0o600)
    one_line(_magray(home, "mcp", "--http", "127.0.0.1:8765", "--token-file", str(latin)), 2,
             "not UTF-8")


# -- many sessions at once --------------------------------------------------------------


def test_four_mcp_sessions_and_two_cli_writers_share_one_memory(home, monkeypatch):
    """Six processes store at once into one memory: every record exactly once, and every
    layer's index agrees with the database."""
    # These texts differ by a number only: near-duplicate merging (a policy, issue 12) must
    # not blur what this test is about, which is concurrency.
    monkeypatch.setenv("MAGRAY_NEAR_DUPLICATE_MERGE", "false")
    per_session, per_cli, cli_runs = 10, 4, 2

    async def agent(n: int) -> None:
        async with stdio_session(home) as session:
            for i in range(per_session):
                layer = ("assets", "insights", "interact")[i % 3]
                await call(session, "remember", text=f"agent {n} note {i} about topic {i * n}",
                           layer=layer)
                if i % 4 == 0:  # reads mixed with the writes
                    await call(session, "recall", query=f"agent {n} note", top_k=3)

    async def writer(n: int) -> None:
        for run in range(cli_runs):
            texts = [f"cli {n} run {run} line {i}" for i in range(per_cli)]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "magray", "store", "--layer", "insights", *texts,
                env=_env(home), stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()

    async def main():
        await asyncio.gather(*(agent(n) for n in range(4)), *(writer(n) for n in range(2)))

    asyncio.run(main())
    listed = json.loads(_magray(home, "list", "--limit", "0", "--json").stdout)
    texts = [r["text"] for r in listed]
    expected = {f"agent {n} note {i} about topic {i * n}" for n in range(4)
                for i in range(per_session)}
    expected |= {f"cli {n} run {run} line {i}" for n in range(2) for run in range(cli_runs)
                 for i in range(per_cli)}
    assert sorted(texts) == sorted(expected)  # each exactly once
    status = _magray(home, "status", "--json")
    report = json.loads(status.stdout)
    for name, layer in report["layers"].items():
        assert layer["index"]["fresh"], (name, layer["index"])
        assert layer["index"]["records"] == layer["records"], name
    assert status.returncode == 0, status.stderr
