"""``magray mcp``: serve the memory to AI agents over the Model Context Protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from . import output
from .app import app


@app.command()
def mcp(
    ctx: typer.Context,
    http: Annotated[Optional[str], typer.Option(
        "--http", metavar="HOST:PORT",
        help="Serve streamable HTTP at this address (e.g. 127.0.0.1:8765) instead of stdio. "
             "A non-loopback address needs --token-file.", show_default=False)] = None,
    token_file: Annotated[Optional[Path], typer.Option(
        "--token-file", metavar="PATH", help="With --http: require 'Authorization: Bearer TOKEN', the token "
                             "read from this file (mode 600).", show_default=False)] = None,
    allow_host: Annotated[List[str], typer.Option(
        "--allow-host", metavar="NAME", help="With --http: another host name clients use to reach this "
                             "server, accepted in Host and Origin headers (repeatable).")] = [],
) -> None:
    """Serve the memory as an MCP server for AI agents: tools remember, recall, get, recent,
    forget and status. Speaks stdio (one agent session per process; start as many as you
    like) or, with --http, streamable HTTP for several clients."""
    from .. import mcp_server
    from ..errors import InputError

    home = ctx.find_root().obj.get("home")
    if http is None:
        if token_file is not None or allow_host:
            raise InputError("--token-file and --allow-host go with --http")
        mcp_server.serve_stdio(home, output.warn)
    else:
        mcp_server.serve_http(home, output.warn, http, token_file=token_file,
                              allow_hosts=tuple(allow_host))
