"""The manifest, an archive's first member: format, versions, time, model, counts, and the
size and SHA-256 of every member after it. ``BackupInfo`` is what it says."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from .. import clock
from ..errors import InputError, IntegrityError
from ..records import LAYERS
from ..version import __version__
from . import archive
from .layout import DB_MEMBER, MANIFEST, STAGED

FORMAT = "magray-backup"
FORMAT_VERSION = 1
MAX_MANIFEST = 1 << 20
MAX_CONFIG = 1 << 20  # the config file, and any member but the database and the indexes


@dataclass(frozen=True)
class Member:
    """One file in an archive, as the manifest lists it."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class BackupInfo:
    """What an archive's manifest says, plus where the archive is and its size on disk."""

    path: Path
    size: int
    created_at: str
    format_version: int
    magray_version: str
    store_id: str
    model: str | None
    model_key: str | None
    dim: int | None
    counts: Mapping[str, int]
    members: tuple[Member, ...]

    @property
    def records(self) -> int:
        return sum(self.counts.values())

    @property
    def created(self) -> datetime:
        return clock.parse_time(self.created_at)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(path=str(self.path), counts=dict(self.counts), records=self.records,
                    members=[asdict(m) for m in self.members])
        return data

    def facts(self) -> dict:
        """What the manifest says of the database, as ``db.snapshot.database_facts``."""
        return {"store_id": self.store_id, "model": self.model, "model_key": self.model_key,
                "dim": self.dim, "counts": dict(self.counts)}


# -- writing ------------------------------------------------------------------------------


def build(facts: dict, members: Sequence[tuple[str, Path]], created_at: str) -> dict:
    """The manifest of an archive of a database with ``facts`` and the staged ``members``."""
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "magray_version": __version__,
        "created_at": created_at, "store_id": facts["store_id"], "model": facts["model"],
        "model_key": facts["model_key"], "dim": facts["dim"], "counts": facts["counts"],
        "members": [{"name": name, "size": path.stat().st_size, "sha256": _sha256(path)}
                    for name, path in members],
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(archive.CHUNK):
            digest.update(block)
    return digest.hexdigest()


# -- reading ------------------------------------------------------------------------------


def read(reader: archive.Reader, path: Path
         ) -> tuple[BackupInfo, Iterator[tuple[archive.Entry, Iterator[bytes]]]]:
    """The manifest (the first member), and an iterator over the members after it."""
    entries = reader.entries()
    first = next(entries, None)
    if first is None:
        raise IntegrityError("manifest: the archive is empty")
    entry, data = first
    if entry.name != MANIFEST:
        raise IntegrityError(f"manifest: the first member is '{entry.name}', not {MANIFEST}")
    if entry.size > MAX_MANIFEST:
        raise IntegrityError(f"manifest: {entry.size} bytes is too large")
    raw = b"".join(data)
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise IntegrityError("manifest: not valid JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise IntegrityError("manifest: not a magray backup manifest")
    version = document.get("format_version")
    if type(version) is not int or version < 1:
        raise IntegrityError("manifest: bad format_version")
    if version > FORMAT_VERSION:
        reader.check_intact()  # a damaged archive is an integrity failure, not a new format
        raise InputError(
            f"{path} is in backup format {version} (written by magray "
            f"{document.get('magray_version', '?')}); this magray ({__version__}) reads "
            f"format {FORMAT_VERSION} at most: upgrade magray to restore it")
    return parse(document, path, path.stat().st_size), entries


def parse(document: dict, path: Path, size: int) -> BackupInfo:
    """A BackupInfo from a manifest, checking every field's type."""
    def get(key, kind, optional=False):
        value = document.get(key)
        if value is None and optional:
            return None
        if type(value) is not kind:
            raise IntegrityError(f"manifest: bad or missing '{key}'")
        return value

    counts = get("counts", dict)
    if set(counts) != set(LAYERS) or any(type(v) is not int or v < 0 for v in counts.values()):
        raise IntegrityError("manifest: bad 'counts'")
    members = _members(get("members", list))
    created_at = get("created_at", str)
    try:
        clock.parse_time(created_at)
    except InputError:
        raise IntegrityError("manifest: bad 'created_at'") from None
    return BackupInfo(path=path, size=size, created_at=created_at,
                      format_version=get("format_version", int),
                      magray_version=get("magray_version", str), store_id=get("store_id", str),
                      model=get("model", str, True), model_key=get("model_key", str, True),
                      dim=get("dim", int, True), counts={k: counts[k] for k in LAYERS},
                      members=members)


def _members(items: list) -> tuple[Member, ...]:
    """The manifest's member list: each a file a magray backup holds, listed once, the
    database among them."""
    members, seen = [], set()
    for item in items:
        if not isinstance(item, dict):
            raise IntegrityError("manifest: bad 'members'")
        name, size, digest = item.get("name"), item.get("size"), item.get("sha256")
        if (name not in STAGED or name in seen or type(size) is not int or size < 0
                or not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise IntegrityError(f"manifest: bad member entry {str(name)[:100]!r}")
        seen.add(name)
        members.append(Member(name, size, digest))
    for member in members:  # small files stay small: they are read whole later
        if not member.name.endswith((".db", ".usearch")) and member.size > MAX_CONFIG:
            raise IntegrityError(f"manifest: '{member.name}' is {member.size} bytes, over "
                                 f"{MAX_CONFIG}")
    if DB_MEMBER not in seen:
        raise IntegrityError(f"manifest: no {DB_MEMBER}")
    return tuple(members)
