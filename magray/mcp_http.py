"""The streamable-HTTP side of ``magray mcp``: the guards the MCP specification asks of
a server reachable over a network (loopback by default, a bearer token, Host and Origin
checks against DNS rebinding) and a clean stop on SIGTERM."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import signal
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, MagrayError, NotFoundError

if TYPE_CHECKING:
    import socket

LOOPBACK_NAMES = ("localhost",)


async def serve(server: Any, host: str, port: int, token: str | None,
                allow_hosts: tuple[str, ...]) -> None:
    """Serve ``server`` (an ``MCPServer``) at http://HOST:PORT/mcp until SIGTERM/SIGINT."""
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    # DNS rebinding: a browser page may only reach us under a name we serve, from an
    # origin of ours; requests without an Origin (agents, scripts) are not from a page.
    names = [_url_host(host), *allow_hosts] + (
        ["localhost", "127.0.0.1", "[::1]"] if is_loopback(host) else [])
    names = list(dict.fromkeys(names))
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:{port}" for name in names],
        allowed_origins=[f"{scheme}://{name}:{port}" for name in names
                         for scheme in ("http", "https")])
    app = server.streamable_http_app(transport_security=security, host=host)
    if token is not None:
        app = BearerToken(app, token)
    listening = listen(host, port)  # a bind failure is our one line, not uvicorn's log
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=3, server_header=False)
    web = _uvicorn_server()(config)
    _escape_logs()  # after uvicorn.Config, which sets up its loggers
    with listening:
        await web.serve(sockets=[listening])
    if signal.SIGINT in web.stopped_by:
        raise KeyboardInterrupt  # the CLI's exit 130


class VisibleLogs:
    """A logging filter that escapes every message: the SDK and uvicorn log values that
    clients send (``Invalid Host header: ...``), which must not control the terminal."""

    def filter(self, record: Any) -> bool:
        from .controls import visible

        record.msg, record.args = visible(record.getMessage()), ()
        return True


def _escape_logs() -> None:
    """Every handler that writes the server's logs escapes them; the SDK's loggers, which
    have none, get one (instead of logging's bare last resort)."""
    import logging
    import sys

    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
    for name in (None, "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, VisibleLogs) for f in handler.filters):
                handler.addFilter(VisibleLogs())


def listen(host: str, port: int) -> "socket.socket":
    """A socket bound to HOST:PORT, for uvicorn to serve on; MagrayError (exit 1) when the
    name does not resolve or the address is taken or not this machine's."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise MagrayError(f"address: cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc}", param="address") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise MagrayError(f"address: cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc}", param="address") from None
    return sock


def _uvicorn_server() -> type:
    import uvicorn

    class Uvicorn(uvicorn.Server):
        """uvicorn, except that after its graceful shutdown on SIGTERM or SIGINT it returns
        (so the memory is closed and the exit status is ours) instead of re-raising the
        signal to die by it."""

        stopped_by: list[int] = []

        @contextlib.contextmanager
        def capture_signals(self):
            self.stopped_by = []
            previous = {sig: signal.signal(sig, self._stop)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def _stop(self, sig: int, frame: Any) -> None:
            self.stopped_by.append(sig)
            self.handle_exit(sig, frame)

    return Uvicorn


class BearerToken:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str):
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                from starlette.responses import JSONResponse

                answer = JSONResponse({"error": "a valid bearer token is required"},
                                      status_code=401,
                                      headers={"WWW-Authenticate": "Bearer"})
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` or just ``PORT`` (on 127.0.0.1)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise InputError(f"address: expected HOST:PORT (e.g. 127.0.0.1:8765), got {address!r}",
                         param="address")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def read_token(path: Path) -> str:
    """The bearer token, from a file that only its owner can read."""
    try:
        mode = path.stat().st_mode
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise NotFoundError(f"token_file: no such file: {path}", param="token_file") from None
    except UnicodeDecodeError:
        raise InputError(f"token_file: {path} is not UTF-8 text",
                         param="token_file") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"token_file: {path} is readable by others; "
                         f"run `chmod 600 {path}`", param="token_file")
    if len(token) < 16 or any(c.isspace() for c in token):
        raise InputError(f"token_file: {path} must hold one token of at least 16 "
                         "characters (e.g. from `openssl rand -hex 32`)", param="token_file")
    return token


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
