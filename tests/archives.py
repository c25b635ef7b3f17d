"""Test helpers for backup archives: read them as plain tar+zstd, forge and reseal them.

The forging helpers follow the container format the README documents (a zstd frame with
its checksum, then a 48-byte skippable frame holding the SHA-256 of the bytes before it),
so they double as a check that the documented format is the real one.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import struct
import tarfile
from pathlib import Path

import zstandard

TRAILER = struct.Struct("<II8s32s")


def read_members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The members of one of our own archives, read with the standard tools."""
    body = Path(path).read_bytes()[:-TRAILER.size]
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(body)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()]


def manifest_of(path: Path) -> dict:
    return json.loads(dict((m.name, data) for m, data in read_members(path))["manifest.json"])


def seal(tar_bytes: bytes, path: Path) -> Path:
    """Compress a tar stream and append the checksum trailer: a well-formed container."""
    compressed = zstandard.ZstdCompressor(write_checksum=True).compress(tar_bytes)
    digest = hashlib.sha256(compressed).digest()
    path.write_bytes(compressed + TRAILER.pack(0x184D2A5E, 40, b"MGRYSUM1", digest))
    return path


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes]],
              fmt: int = tarfile.USTAR_FORMAT, tail: bytes = b"", last_fmt: int | None = None
              ) -> bytes:
    """A tar stream of ``entries`` in format ``fmt`` (the last one in ``last_fmt``), with
    ``tail`` appended after the end-of-archive marker."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for number, (info, data) in enumerate(entries):
            if last_fmt is not None and number == len(entries) - 1:
                tar.format = last_fmt
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return out.getvalue() + tail


def entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""
          ) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o600
    return info, data


def with_manifest(manifest: dict, entries: list[tuple[tarfile.TarInfo, bytes]]
                  ) -> list[tuple[tarfile.TarInfo, bytes]]:
    """Entries led by ``manifest`` with its member sizes and hashes set to match ``entries``
    (the first regular file of each name wins)."""
    manifest = json.loads(json.dumps(manifest))
    data = {}
    for info, blob in entries:
        if info.isfile():
            data.setdefault(info.name, blob)
    for member in manifest["members"]:
        if member["name"] in data:
            member["size"] = len(data[member["name"]])
            member["sha256"] = hashlib.sha256(data[member["name"]]).hexdigest()
    return [entry("manifest.json", json.dumps(manifest).encode())] + list(entries)


def reseal(source: Path, target: Path, **manifest_changes) -> Path:
    """A copy of an archive with manifest fields changed, checksums made to match."""
    members = read_members(source)
    manifest = json.loads(members[0][1])
    manifest.update(manifest_changes)
    return seal(tar_bytes(with_manifest(manifest, [(i, d) for i, d in members[1:]])), target)


def dump(database: Path) -> dict:
    """Everything a restore must bring back: every record column (embeddings included)
    and the metadata, read from a database file."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return {"records": conn.execute("SELECT * FROM records ORDER BY id").fetchall(),
                "meta": sorted(conn.execute("SELECT * FROM meta").fetchall())}
    finally:
        conn.close()


def tree(root: Path) -> dict[str, int]:
    """Every file and directory under ``root`` with its size. SQLite's files are listed
    without sizes (opening a database may checkpoint it; compare ``dump`` instead)."""
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file()
                                       and not p.name.endswith((".db", "-wal", "-shm")) else -1)
            for p in sorted(root.rglob("*")) if not p.name.endswith(("-wal", "-shm"))}


# -- a memory to archive ------------------------------------------------------------------

NOW = "2025-03-04T05:06:07+00:00"


def fill(memory, n: int = 30) -> None:
    """Records in every layer: ``n`` in interact, 5 in insights, 3 in assets."""
    memory.store_texts([f"note {i} about deploying service {i % 7}" for i in range(n)])
    memory.store_texts([f"decision {i}: use sqlite for local state" for i in range(5)],
                       layer="insights")
    memory.store_texts([f"how-to {i}: rotate the ssh keys yearly" for i in range(3)],
                       layer="assets")
