"""Reading archives back: the manifest alone (``read_info``, ``list_archives``), the seal
alone (``seal_problem``), or every member against the manifest (``verify``; ``unpack``
also writes the members into a staging directory for a restore)."""

from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .. import units
from ..errors import IntegrityError, MagrayError, NotFoundError
from ..paths import Paths
from . import archive, manifest
from .layout import MANIFEST, STAGED, SUFFIX, Progress
from .manifest import BackupInfo


@dataclass(frozen=True)
class Listing:
    """The archives in a directory (oldest first), and the files named like archives that
    cannot be read, with why."""

    directory: Path
    archives: tuple[BackupInfo, ...]
    unreadable: tuple[tuple[Path, str], ...] = ()


def read_info(path: Path) -> BackupInfo:
    """The manifest of an archive, read from its start without verifying the rest."""
    path = Path(path)
    with archive.Reader(path) as reader:
        try:
            return manifest.read(reader, path)[0]
        except IntegrityError as exc:
            raise IntegrityError(f"{path}: {exc}") from None


def verify(path: Path, *, cap: int | None = None, progress: Progress | None = None
           ) -> BackupInfo:
    """Re-read every member against the manifest, and the whole file against its trailer.
    Raises IntegrityError naming the failed check."""
    return unpack(Path(path), cap=cap, stage=None, progress=progress)


def unpack(path: Path, *, cap: int | None, stage: Path | None, progress: Progress | None
           ) -> BackupInfo:
    """Verify an archive front to back, writing its members into ``stage`` when given."""
    with archive.Reader(path, progress) as reader:
        try:
            info, members = manifest.read(reader, path)
            _check_size(info, cap, stage)
            _scan_members(members, info, stage)
            reader.finish()
        except IntegrityError as exc:
            raise IntegrityError(f"{path} failed verification: {exc}") from None
    return info


def _check_size(info: BackupInfo, cap: int | None, stage: Path | None) -> None:
    """Refuse a decompression bomb before unpacking anything."""
    total = sum(m.size for m in info.members)
    if cap is not None and total > cap:
        raise IntegrityError(f"refused: the archive would unpack to {units.size(total)}, over "
                             f"restore_max_bytes ({cap})")
    if stage is not None:
        free = shutil.disk_usage(stage).free
        if total > free:
            raise MagrayError(f"not enough free space to restore: the archive unpacks to "
                              f"{units.size(total)} and {stage.parent} has "
                              f"{units.size(free)} free")


def _scan_members(members: Iterable[tuple[archive.Entry, Iterator[bytes]]],
                  info: BackupInfo, stage: Path | None) -> None:
    declared = {m.name: m for m in info.members}
    seen: set[str] = set()
    for entry, data in members:
        name = entry.name
        if name in seen or name == MANIFEST:
            raise IntegrityError(f"refused member '{name}': it appears twice")
        if name not in STAGED:
            raise IntegrityError(f"refused member '{name}': not a file a magray backup holds")
        member = declared.get(name)
        if member is None:
            raise IntegrityError(f"refused member '{name}': not listed in the manifest")
        if entry.size != member.size:
            raise IntegrityError(f"member '{name}': the tar header says {entry.size} bytes, "
                                 f"the manifest {member.size}")
        seen.add(name)
        digest = hashlib.sha256()
        with _staged_file(stage, name) as sink:
            for chunk in data:
                digest.update(chunk)
                sink(chunk)
        if digest.hexdigest() != member.sha256:
            raise IntegrityError(f"member '{name}': SHA-256 does not match the manifest")
    missing = sorted(set(declared) - seen)
    if missing:
        raise IntegrityError(f"member '{missing[0]}': in the manifest but not in the archive")


@contextmanager
def _staged_file(stage: Path | None, name: str) -> Iterator[Callable[[bytes], object]]:
    if stage is None:
        yield lambda chunk: None
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(stage / STAGED[name], flags, 0o600), "wb") as handle:
        yield handle.write


def list_archives(directory: Path) -> Listing:
    """Every archive in ``directory`` (oldest first) by its manifest, plus the files named
    like archives that cannot be read."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NotFoundError(f"{directory}: no such directory")
    found, unreadable = [], []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            found.append(read_info(path))
        except MagrayError as exc:
            unreadable.append((path, str(exc)))
    found.sort(key=lambda a: (a.created_at, a.path.name))
    return Listing(directory, tuple(found), tuple(unreadable))


def list_backups(where: Paths, directory: Path | None = None) -> Listing:
    """The archives in ``directory`` (default: the backups directory, which a memory that
    was never backed up does not have yet), oldest first."""
    directory = Path(directory) if directory else where.backups
    if directory == where.backups and not directory.exists():
        return Listing(directory, ())
    return list_archives(directory)


def seal_problem(path: Path) -> str | None:
    """Why the archive at ``path`` is not as it was written (its whole file against the
    checksum trailer: read at disk speed, nothing decompressed), or None when it is intact.
    ``backup list`` uses it, so a damaged archive is never listed as a good one."""
    try:
        with archive.Reader(Path(path)) as reader:
            reader.check_intact()
    except MagrayError as exc:
        return str(exc)
    return None
