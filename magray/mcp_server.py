"""``magray mcp``: the memory as a Model Context Protocol server, for AI agents.

A thin adapter: each tool validates nothing the library does not, calls one ``Memory``
method and returns its frozen dataclasses as JSON. A ``MagrayError`` becomes a tool error
with the CLI's one-line message. Only ``magray mcp`` imports this module (and the ``mcp``
SDK with it), so no other command pays for it.

Two things make it fit for agents. Start-up: the protocol is served at once while the model
loads in a background thread; a recall that comes before it waits a little, then answers by
keywords and says so. Threads: a ``Memory`` (its SQLite connection) belongs to one thread,
so every call runs on one worker thread; other processes share the memory through magray's
file locks and SQLite's WAL, as CLI commands do.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

from pydantic import Field

from . import __version__, clock, config, health, ingest, paths
from .errors import InputError, MagrayError, NotFoundError
from .memory import Memory
from .records import Filters

MODEL_WAIT = float(os.environ.get("MAGRAY_MCP_MODEL_WAIT", "20"))  # seconds a recall waits
MODEL_DELAY = 2.0  # seconds after start-up that the model loads, if tools/list has not come
PYDANTIC_TAIL = re.compile(r" \[type=.*$")  # the error's type and the rejected input

INSTRUCTIONS = """\
magray is the user's personal memory: notes, decisions, commands and facts kept on this
machine and found again by meaning. Before a task, `recall` what is known about it; after
it, `remember` the decisions, facts and fixes worth keeping (one idea per call, in plain
words). Layers: `assets` keeps (reference material, the default when none is given),
`insights` for 90 days (patterns, lessons, summaries), `interact` for 24 hours (this
session's scratch context)."""

PROTOCOL = f"""\
You have a long-term memory through the magray tools.

1. Before starting a task, call `recall` with a short description of it (and `project`
   if you know it). Read the hits; use what applies and say so.
2. While working, `get` a record by id when a hit is cut short, and `recent` to see what
   was stored lately (for example in this session).
3. After the task, call `remember` once per decision, fact, fix or command worth keeping:
   one self-contained sentence or short paragraph, with `tags`, `project` and `kind`
   (decision, fact, fix, command, note). Never store secrets.
4. Choose the layer by how long it should live:
   - `assets`: kept until removed: reference material, how-tos, lasting decisions;
   - `insights`: kept 90 days: patterns, lessons learnt, summaries of work;
   - `interact`: kept 24 hours: session scratch, turn-by-turn context.
   Without a layer, magray uses the user's default layer.
5. `forget` moves records to the trash (restorable for a while); use it for wrong or
   outdated records, after checking their ids with `get`.

{INSTRUCTIONS}"""


class Backend:
    """The open memory behind the tools: one worker thread, the model loading beside it."""

    def __init__(self, home: str | Path | None, warn: Callable[[str], None]):
        from .embedding import from_settings

        self.home = home
        where = paths.resolve(home)
        self.settings = config.load(where.config_file)
        self._embedder = from_settings(self.settings, where.data, warn=warn)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="magray-memory")
        self._memory: Memory | None = None
        self._warn = warn
        self.model_ready = threading.Event()
        self.model_error: MagrayError | None = None
        self._loader: threading.Thread | None = None
        self._loader_lock = threading.Lock()

    def start(self) -> None:
        """Open the memory now (a bad config fails here, before serving). The model loads
        in the background once the client has listed the tools, or after MODEL_DELAY:
        importing torch holds the GIL much of the time, and would slow the handshake."""
        self._worker.submit(self._open).result()
        timer = threading.Timer(MODEL_DELAY, self.load_model)
        timer.daemon = True
        timer.start()

    def load_model(self) -> None:
        """Start loading the model, if that has not started yet."""
        with self._loader_lock:
            if self._loader is None:
                self._loader = threading.Thread(target=self._load_model, name="magray-model",
                                                daemon=True)
                self._loader.start()

    def _open(self) -> None:
        self._memory = Memory.open(self.home, settings=self.settings, embedder=self._embedder,
                                   warn=self._warn)

    def _load_model(self) -> None:
        try:
            self._embedder.embed_query("magray")  # the query path, and...
            self._embedder.embed_documents(["magray"])  # ...the store path
        except MagrayError as exc:
            self.model_error = exc
        except Exception as exc:  # noqa: BLE001 - reported on use, never a crash
            self.model_error = MagrayError(f"the model could not be loaded: {exc}")
        finally:
            self.model_ready.set()

    async def call(self, work: Callable[[Memory], Any]) -> Any:
        """Run ``work(memory)`` on the worker thread."""
        return await asyncio.wrap_future(self._worker.submit(work, self._memory))

    async def wait_for_model(self, timeout: float | None) -> bool:
        """True when the model is loaded (or failed to: the error shows on use)."""
        self.load_model()
        return await asyncio.to_thread(self.model_ready.wait, timeout)

    def close(self) -> None:
        def close(memory: Memory | None) -> None:
            if memory is not None:
                memory.close()

        self._worker.submit(close, self._memory).result()
        self._worker.shutdown()


# -- the tools --------------------------------------------------------------------------

Text = Annotated[str, Field(description="What to remember: one self-contained note.")]
Layer = Annotated[Optional[str], Field(
    description="assets (kept; the default), insights (90 days) or interact (24 hours).")]
Layers = Annotated[Optional[list[str]], Field(
    description="Only these layers (interact, insights, assets); default all.")]
Tags = Annotated[Optional[list[str]], Field(description="Tags (all must match when filtering).")]
Project = Annotated[Optional[str], Field(description="Project name.")]
Session = Annotated[Optional[str], Field(description="Session name.")]
Kind = Annotated[Optional[str], Field(description="Kind: note, decision, fact, fix, command...")]
Since = Annotated[Optional[str], Field(
    description="Only records created at or after: ISO 8601, or an age like 7d, 24h.")]
Until = Annotated[Optional[str], Field(
    description="Only records created at or before: ISO 8601, or an age like 7d, 24h.")]


def _guarded(tool: Callable[..., Any]) -> Callable[..., Any]:
    """A library error raised by ``tool`` reaches the agent as a tool error with the CLI's
    one-line message; anything else is the SDK's (a generic error, logged on stderr)."""
    from mcp.server.mcpserver.exceptions import ToolError

    @functools.wraps(tool)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return await tool(*args, **kwargs)
        except MagrayError as exc:
            raise ToolError(str(exc)) from None
        except OSError as exc:  # disk full, permission denied...
            where = f": {exc.filename}" if exc.filename else ""
            raise ToolError(f"{exc.strerror or exc}{where}") from None

    return guarded


def build(backend: Backend) -> Any:
    """The MCP server: six tools, one prompt, one resource."""
    from mcp.server.mcpserver import MCPServer
    from mcp.types import ToolAnnotations

    server = MCPServer("magray", title="magray memory", version=__version__,
                       instructions=INSTRUCTIONS, log_level="WARNING",
                       middleware=[_one_line_errors, _after_tools_list(backend)])
    reads = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)

    @server.tool(annotations=ToolAnnotations(
        title="Remember a note", read_only_hint=False, destructive_hint=False,
        idempotent_hint=True, open_world_hint=False))
    @_guarded
    async def remember(text: Text, layer: Layer = None, tags: Tags = None,
                       project: Project = None, session: Session = None, kind: Kind = None,
                       importance: Annotated[float, Field(
                           description="Your importance for it, 0 to 1.")] = 0.0,
                       ) -> dict[str, Any]:
        """Store a note, decision, fact, fix or command in the user's memory, to be found
        later by meaning. Use after a task for what is worth keeping; one idea per call.
        The same text stored again in the same layer is not duplicated (`duplicate: true`).
        Returns the record id and layer, and any near-duplicate already stored."""
        fields: dict[str, Any] = {
            "tags": tuple(sorted({ingest.check_name(t, "tags") for t in tags or ()})),
            "project": ingest.check_name(project, "project"),
            "session": ingest.check_name(session, "session"),
            "kind": ingest.check_name(kind, "kind"),
            "importance": ingest.check_importance(importance, "importance")}
        if layer is not None:  # else the library's default: the setting default_layer
            fields["layer"] = ingest.check_layer(layer, "layer")
        await _model(backend, needed=True)
        stored = await backend.call(lambda memory: memory.store_texts([text], **fields))
        return stored[0].to_dict()

    @server.tool(annotations=reads.model_copy(update={"title": "Recall by meaning"}))
    @_guarded
    async def recall(query: Annotated[str, Field(description="What to look for, in words.")],
                     top_k: Annotated[Optional[int], Field(
                         description="How many hits, 1-100 (default 10).")] = None,
                     mode: Annotated[Optional[str], Field(
                         description="hybrid (meaning and words; default), vector or "
                                     "keyword.")] = None,
                     layers: Layers = None, tags: Tags = None, project: Project = None,
                     session: Session = None, kind: Kind = None, since: Since = None,
                     until: Until = None,
                     min_score: Annotated[Optional[float], Field(
                         description="Drop hits below this cosine similarity.")] = None,
                     ) -> dict[str, Any]:
        """Search the user's memory by meaning (and words). Use before a task to learn
        what is already known: decisions, conventions, fixes, commands. Returns hits,
        best first, each with id, score, similarity, text, layer, tags and times."""
        options: dict[str, Any] = {
            "layers": tuple(layers or ()), "min_score": min_score,
            "filters": _filters(tags, project, session, kind, since, until)}
        if top_k is not None:
            options["top_k"] = top_k
        if mode is not None:
            options["mode"] = mode
        note = None
        if options.get("mode", backend.settings.search_mode) != "keyword":
            if not await _model(backend, needed=False):
                options["mode"] = "keyword"
                note = ("the embedding model is still loading: these hits are by keywords "
                        "only; ask again shortly for meaning" if backend.model_error is None
                        else f"these hits are by keywords only: {backend.model_error}")
        hits = await backend.call(lambda memory: memory.search(query, **options))
        answer: dict[str, Any] = {"hits": [h.to_dict() for h in hits]}
        if note:
            answer["note"] = note
        return answer

    @server.tool(annotations=reads.model_copy(update={"title": "Get a record"}))
    @_guarded
    async def get(id: Annotated[int, Field(description="The record's id.")]) -> dict[str, Any]:
        """One record by id, with its full text and metadata (recall's hits may be cut
        short by the client; this is the whole record)."""
        record = await backend.call(lambda memory: memory.get(id))
        if record is None:
            raise NotFoundError(f"no record with id {id}")
        return record.to_dict()

    @server.tool(annotations=reads.model_copy(update={"title": "Recent records"}))
    @_guarded
    async def recent(limit: Annotated[int, Field(description="How many, newest first.")] = 20,
                     layers: Layers = None, tags: Tags = None, project: Project = None,
                     session: Session = None, kind: Kind = None, since: Since = None,
                     until: Until = None) -> dict[str, Any]:
        """The newest records, optionally filtered: what was stored lately, for example in
        this session or project."""
        chosen = _filters(tags, project, session, kind, since, until)
        records = await backend.call(lambda memory: memory.list_records(
            layers=tuple(layers or ()), filters=chosen, limit=limit))
        return {"records": [r.to_dict() for r in records]}

    @server.tool(annotations=ToolAnnotations(
        title="Forget records", read_only_hint=False, destructive_hint=True,
        idempotent_hint=False, open_world_hint=False))
    @_guarded
    async def forget(ids: Annotated[list[int], Field(
            description="Ids of the records to remove.")]) -> dict[str, Any]:
        """Move records to the trash: they are no longer recalled, listed or gettable.
        All or nothing: if one id does not exist, nothing is removed. Use for records that
        are wrong or outdated; check them with `get` first."""
        for i in ids:
            if i < 1:
                raise InputError(f"{i!r} is not a record id")
        gone = await backend.call(lambda memory: memory.forget(ids))
        return {"forgotten": [{"id": r.id, "layer": r.layer} for r in gone]}

    @server.tool(annotations=reads.model_copy(update={"title": "Memory health"}))
    @_guarded
    async def status() -> dict[str, Any]:
        """The memory's health, as `magray status --json`: record counts per layer, whether
        each index agrees with the database, the model, backups and alerts."""
        return await backend.call(lambda memory: _health(backend))

    @server.prompt(name="memory-protocol", title="How to use magray's memory")
    def memory_protocol() -> str:
        """When to recall and remember, and which layer keeps what for how long."""
        return PROTOCOL

    @server.resource("magray://status", name="status", mime_type="application/json",
                     description="The memory's health, as `magray status --json`.")
    async def status_resource() -> str:
        return json.dumps(await backend.call(lambda memory: _health(backend)), indent=2)

    return server


def _after_tools_list(backend: Backend) -> Callable[..., Any]:
    async def load_model_after_tools_list(ctx: Any, call_next: Callable[[Any], Any]) -> Any:
        result = await call_next(ctx)
        if ctx.method == "tools/list":  # the handshake is done: the model may load now
            backend.load_model()
        return result

    return load_model_after_tools_list


async def _one_line_errors(ctx: Any, call_next: Callable[[Any], Any]) -> Any:
    """Arguments the SDK rejects come back as pydantic's several lines; make them one line,
    like every other error an agent gets from magray."""
    result = await call_next(ctx)  # the result as it goes on the wire: a dict
    if ctx.method == "tools/call" and isinstance(result, dict) and result.get("isError"):
        result = {**result, "content": [
            {**block, "text": one_line(block["text"])} if block.get("type") == "text" else block
            for block in result.get("content", [])]}
    return result


def one_line(message: str) -> str:
    """``Error executing tool t: 1 validation error for tArguments / top_k / (indented)
    Input should be... [type=...] / (more indented) For further information...`` ->
    ``Error executing tool t: bad arguments: top_k: Input should be...``."""
    head, *rest = message.splitlines()
    if not rest:
        return message
    if "validation error" not in head:
        return " ".join(line.strip() for line in [head, *rest] if line.strip())
    field, problems = "", []
    for line in rest:
        if line.startswith("    "):  # pydantic's link to its documentation
            continue
        if line.startswith("  "):
            problems.append(f"{field}: {PYDANTIC_TAIL.sub('', line.strip())}")
        else:
            field = line.strip()
    return f"{head.rsplit(': ', 1)[0]}: bad arguments: {'; '.join(problems)}"


async def _model(backend: Backend, *, needed: bool) -> bool:
    """Wait for the model: for good when ``needed`` (a store), else a while (a recall).
    A model that failed to load raises its error when it is needed."""
    ready = await backend.wait_for_model(None if needed else MODEL_WAIT)
    if ready and needed and backend.model_error is not None:
        raise backend.model_error
    return ready and backend.model_error is None


def _health(backend: Backend) -> dict[str, Any]:
    return health.check(backend.home, settings=backend.settings).to_dict()


def _filters(tags, project, session, kind, since, until) -> Filters:
    return Filters(tags=tuple(tags or ()), project=project, session=session, kind=kind,
                   since=clock.parse_since(since, what="since") if since else None,
                   until=clock.parse_since(until, what="until") if until else None)


# -- serving ------------------------------------------------------------------------------


def serve_stdio(home: str | Path | None, warn: Callable[[str], None]) -> None:
    """Serve one agent session on stdin/stdout until the client closes stdin. The SDK
    points fd 1 at stderr while serving, so a stray print cannot corrupt the protocol."""
    import anyio

    backend = Backend(home, warn)
    server = build(backend)  # the SDK's import first: the model's import would slow it
    backend.start()
    try:
        anyio.run(server.run_stdio_async)
    finally:
        backend.close()


def serve_http(home: str | Path | None, warn: Callable[[str], None], address: str, *,
               token_file: Path | None = None, allow_hosts: tuple[str, ...] = ()) -> None:
    """Serve streamable HTTP at ``address`` (HOST:PORT) until SIGTERM or Ctrl-C."""
    from . import mcp_http
    from .mcp_http import is_loopback, parse_address, read_token

    host, port = parse_address(address)
    token = read_token(token_file) if token_file is not None else None
    if token is None and not is_loopback(host):
        raise InputError(f"refusing to serve {host} (not a loopback address) without a "
                         "token: give token_file with a secret that clients send as "
                         "'Authorization: Bearer ...'", param="token_file")
    backend = Backend(home, warn)
    server = build(backend)
    backend.start()
    try:
        import anyio

        anyio.run(mcp_http.serve, server, host, port, token, allow_hosts)
    finally:
        backend.close()
