"""Crash-safe file writes: write a private temporary file, fsync it, rename it into place.

A reader sees the old file or the new one, never half of one. Temporary names share a
prefix (``.<name>.tmp-``) so leftovers from a killed process can be found and removed.
"""

from __future__ import annotations

import os
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


def leftovers(target: Path) -> list[Path]:
    """Temporary files of ``target`` (a writer's in progress, or a crashed writer's)."""
    return list(target.parent.glob(f".{target.name}.tmp-*"))


def remove_leftovers(target: Path) -> int:
    """Delete temporary files a crashed writer of ``target`` left; call under its lock."""
    found = leftovers(target)
    for leftover in found:
        leftover.unlink(missing_ok=True)
    return len(found)


@contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed over ``target``."""
    tmp = temp_name(target)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fchmod(fd, 0o600)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        sync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(target: Path, data: bytes) -> None:
    with replacing(target) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)


def sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def crc32(path: Path, chunk: int = 1 << 22) -> int:
    value = 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            value = zlib.crc32(block, value)
    return value
