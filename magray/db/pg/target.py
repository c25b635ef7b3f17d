"""Where the memory lives: the ``database`` setting (or ``MAGRAY_DATABASE``) read as a path
(the SQLite store, the default) or a ``postgresql://`` URL (the PostgreSQL engine).

No database library is imported here: parsing a setting must stay cheap for every command.
The password is never taken from magray's configuration: libpq finds it itself (its passfile,
``~/.pgpass`` or ``PGPASSFILE``, or ``PGPASSWORD``), or ``password_file`` names a file only its
owner can read. A URL that carries a password is refused, so none is ever written to
config.toml or shown by ``magray config``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from ...errors import ConfigError, MagrayError

SCHEMES = ("postgresql", "postgres")
# libpq's sslmode values (https://www.postgresql.org/docs/current/libpq-ssl.html)
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Connection parameters a URL may carry: what libpq understands and magray has a reason to
# pass on. ``password`` is deliberately absent.
ALLOWED_PARAMS = frozenset({
    "host", "hostaddr", "port", "dbname", "user", "passfile", "connect_timeout", "sslmode",
    "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslnegotiation", "application_name",
    "target_session_attrs", "options", "password_file", "keepalives", "keepalives_idle",
    "keepalives_interval", "keepalives_count", "tcp_user_timeout", "channel_binding",
})
CONNECT_TIMEOUT = 10  # seconds: an unreachable server is an error, not a hang


@dataclass(frozen=True)
class Postgres:
    """A PostgreSQL memory: the URL as given (no password in it) and the parts magray needs."""

    url: str
    params: tuple[tuple[str, str], ...]  # extra libpq parameters from the query string

    @property
    def host(self) -> str:
        """The server as a person names it: host[:port] or the socket directory."""
        parts = urlsplit(self.url)
        query = dict(self.params)
        host = query.get("host") or parts.hostname or "localhost"
        port = query.get("port") or (str(parts.port) if parts.port else "")
        return f"{host}:{port}" if port and not host.startswith("/") else host

    def conninfo(self) -> str:
        """The libpq connection string (a URL without magray's own parameters) with a
        connect timeout, and the password read from ``password_file`` when one is named."""
        from psycopg.conninfo import make_conninfo

        parts = urlsplit(self.url)
        base = parts._replace(query="").geturl()
        extra = {k: v for k, v in self.params if k != "password_file"}
        extra.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
        extra.setdefault("application_name", "magray")
        file = dict(self.params).get("password_file")
        if file:
            extra["password"] = read_password_file(Path(file).expanduser())
        return make_conninfo(base, **extra)


def parse_database(value: str | os.PathLike | None, home: Path | None = None
                   ) -> Path | Postgres | None:
    """The ``database`` setting: None (the default store under the data directory), a path
    (another SQLite file) or a PostgreSQL URL. Bad URLs are a ConfigError (exit 2)."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    scheme = text.split(":", 1)[0].lower() if "://" in text else ""
    if not scheme:
        path = Path(text).expanduser()
        return path if path.is_absolute() or home is None else home / path
    if scheme not in SCHEMES:
        raise ConfigError(f"database: {scheme}:// is not supported; give a file path or a "
                          "postgresql:// URL")
    parts = urlsplit(text)
    if parts.password:  # 'user:@host' (an empty one) is no password
        raise ConfigError("database: the URL holds a password; magray never keeps one in its "
                          "configuration: put it in ~/.pgpass (libpq's passfile), PGPASSWORD, "
                          "or a file only you can read named by ?password_file=PATH")
    params = tuple(parse_qsl(parts.query, keep_blank_values=True))
    for key, val in params:
        if key == "password" or key not in ALLOWED_PARAMS:
            raise ConfigError(f"database: the URL parameter {key!r} is not accepted"
                              + (" (never a password: see password_file)" if key == "password"
                                 else ""))
        if key == "sslmode" and val not in SSLMODES:
            raise ConfigError(f"database: sslmode must be one of {', '.join(SSLMODES)}, "
                              f"not {val!r}")
    if not (parts.path.strip("/") or dict(params).get("dbname")):
        raise ConfigError("database: the URL names no database (postgresql://host/NAME)")
    return Postgres(url=text, params=params)


def read_password_file(path: Path) -> str:
    """The password in ``path`` (first line), which must be a regular file readable by its
    owner only: the same rule libpq applies to ~/.pgpass."""
    try:
        info = path.lstat()
    except OSError as exc:
        raise MagrayError(f"cannot read the password file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise MagrayError(f"the password file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise MagrayError(f"the password file {path} can be read by others "
                          f"(mode {info.st_mode & 0o777:04o}); chmod 600 it first")
    text = path.read_text(encoding="utf-8")
    return text.splitlines()[0] if text else ""
