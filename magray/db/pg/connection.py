"""Connecting to PostgreSQL, and the one place where psycopg's failures enter magray's error
tree: a server that cannot be reached, or that went away in the middle of a command, becomes
one MagrayError (exit 1) naming the server; a statement that is wrong (a bug) passes through.

Vectors travel in pgvector's binary format (2-byte dimension, 2 unused bytes, big-endian
float32s) so that a store or a search never formats or parses text numbers; numpy arrays
go in as ``Vector`` and come out of a binary cursor as float32 arrays.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import psycopg
from psycopg import errors as pgerrors
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format

from ...errors import BusyError, IntegrityError, MagrayError
from .target import Postgres

# SQLSTATE classes that are the server's or the network's doing, not a statement's
OPERATIONAL_CLASSES = ("08", "53", "57", "58", "25P03")  # connection, resources, shutdown, ...


class Vector:
    """A float32 vector to send as pgvector's ``vector`` (binary)."""

    __slots__ = ("array",)

    def __init__(self, array: Any):
        self.array = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)


class VectorDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Vector) -> bytes:
        head = struct.pack(">HH", obj.array.shape[0], 0)
        return head + obj.array.astype(">f4").tobytes()


class VectorLoader(Loader):
    format = Format.BINARY

    def load(self, data: Any) -> np.ndarray:
        raw = bytes(data)
        dim = struct.unpack_from(">H", raw)[0]
        return np.frombuffer(raw, dtype=">f4", count=dim, offset=4).astype(np.float32)


class VectorTextLoader(Loader):
    """The same vector in text form ('[1,2,3]'), for a query run without binary results."""

    def load(self, data: Any) -> np.ndarray:
        return np.array(bytes(data).decode()[1:-1].split(","), dtype=np.float32)


def register_vector(conn: psycopg.Connection) -> None:
    """Teach a connection pgvector's ``vector`` type (the extension must exist)."""
    from psycopg.types import TypeInfo

    info = TypeInfo.fetch(conn, "vector")
    if info is None:
        raise IntegrityError("the database has no pgvector extension (vector type)")
    info.register(conn)  # COPY's set_types finds it by name
    # The type's oid is the database's own (each CREATE EXTENSION makes a new one): a class
    # per connection, or a process using two databases sends one the other's oid.
    dumper = type("VectorDumper", (VectorDumper,), {"oid": info.oid})
    conn.adapters.register_dumper(Vector, dumper)
    conn.adapters.register_loader(info.oid, VectorLoader)
    conn.adapters.register_loader(info.oid, VectorTextLoader)


def connect(target: Postgres, *, autocommit: bool = True) -> psycopg.Connection:
    """A connection to the server (its failures already magray's, see ``translate``)."""
    try:
        conn = psycopg.connect(target.conninfo(), autocommit=autocommit)
    except psycopg.Error as exc:
        raise translate(exc, target) from None
    return conn


def is_operational(exc: BaseException) -> bool:
    """Whether ``exc`` is the server's or the network's failure rather than a statement's."""
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return any(state.startswith(prefix) for prefix in OPERATIONAL_CLASSES)


def translate(exc: psycopg.Error, target: Postgres) -> MagrayError | psycopg.Error:
    """``exc`` as one line naming the server, when it is an operational failure; a wrong
    statement (a bug) is returned unchanged. A lock wait that timed out is BusyError."""
    if isinstance(exc, (pgerrors.LockNotAvailable, pgerrors.DeadlockDetected)):
        return BusyError(f"the PostgreSQL database at {target.host} stayed locked by another "
                         "magray client; try again, or raise busy_timeout")
    if isinstance(exc, pgerrors.DiskFull):
        return MagrayError(f"the PostgreSQL server at {target.host} is out of disk space; "
                           "nothing more was written")
    if not is_operational(exc):
        return exc
    first = (str(exc).strip().splitlines() or ["no reason given"])[0]
    first = first.removeprefix("connection is bad: ")
    return MagrayError(f"the PostgreSQL server at {target.host} cannot be reached or went "
                       f"away: {first}")
