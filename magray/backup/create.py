"""Creating an archive: snapshot the database and copy the index files (under every layer's
index lock), write the manifest, and seal the archive under a name that never overwrites."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .. import clock, files
from ..errors import InputError, IntegrityError
from ..locks import locked
from ..paths import Paths, make_private_dir
from ..records import LAYERS
from . import archive, manifest
from .layout import CONFIG_MEMBER, DB_MEMBER, MANIFEST, STAGED, SUFFIX, Progress
from .layout import index_members, layer_files
from .leftovers import BACKUP_STAGE, remove_leftovers, stage_prefix, temporary_name
from .manifest import MAX_CONFIG, BackupInfo
from .retention import Pruned, Retention, prune
from .verify import verify

if TYPE_CHECKING:
    from ..config import Settings


@dataclass(frozen=True)
class BackupResult:
    """A new archive, verified by reading it back, and what retention did beside it."""

    archive: BackupInfo
    verified: bool
    pruned: Pruned | None = None
    warnings: tuple[str, ...] = ()


def run(where: Paths, store, settings: "Settings", *, output: Path | None = None,
        retention: Retention | None = None, progress: Progress | None = None
        ) -> BackupResult:
    """Create an archive, verify it by reading it back, then apply retention beside it."""
    cap = settings.restore_max_bytes
    info, warnings = create(where, store, output=output, level=settings.backup_level,
                            timeout=settings.busy_timeout, progress=progress)
    try:
        verify(info.path, cap=cap)
    except IntegrityError as exc:
        info.path.unlink(missing_ok=True)
        raise IntegrityError(f"the new archive failed verification and was removed: {exc}"
                             ) from None
    pruned = None
    if retention:
        pruned = prune(info.path.parent, info.store_id, retention, protect=info.path, cap=cap)
    return BackupResult(info, True, pruned, tuple(warnings))


def create(where: Paths, store, *, output: Path | None = None, level: int = 3,
           timeout: float = 60.0, progress: Progress | None = None
           ) -> tuple[BackupInfo, list[str]]:
    """Write one archive of the memory; returns it (not yet verified) and any warnings."""
    moment = clock.now()
    directory, names = _targets(where, output, moment)
    return write(where, store, directory, names, moment, level=level, timeout=timeout,
                 progress=progress, lock=True)


def write(where: Paths, store, directory: Path, names: Iterator[Path], moment: datetime, *,
          level: int, timeout: float, progress: Progress | None, lock: bool
          ) -> tuple[BackupInfo, list[str]]:
    """Write an archive into ``directory`` under the first free name of ``names``. ``lock``:
    take every layer's index lock (shared) for the snapshot; a caller that holds them
    already (a restore, for its safety copy) passes False."""
    remove_leftovers(directory)
    stage = Path(tempfile.mkdtemp(prefix=stage_prefix(BACKUP_STAGE), dir=directory))
    try:
        facts, members, warnings = _snapshot(where, store, stage, timeout=timeout, lock=lock)
        document = manifest.build(facts, members, clock.iso(moment))
        data = json.dumps(document, indent=1).encode()
        path = _seal([(MANIFEST, data)] + members, names, int(moment.timestamp()), level,
                     progress)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return manifest.parse(document, path, path.stat().st_size), warnings


def _targets(where: Paths, output: Path | None, moment: datetime
             ) -> tuple[Path, Iterator[Path]]:
    """The directory an archive goes to, and the names to try there, in order. ``output``
    ending in .tar.zst names a new archive file; anything else is a directory."""
    stamp = moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if output is None:
        directory = where.backups
        make_private_dir(directory)
    elif Path(output).name.endswith(SUFFIX):
        output = Path(output).expanduser().absolute()
        if output.exists() or output.is_symlink():
            raise InputError(f"output {output} already exists; a backup never overwrites a "
                             "file", param="output")
        if not output.parent.is_dir():
            raise InputError(f"output: the directory {output.parent} does not exist",
                             param="output")
        return output.parent, iter([output])
    else:
        directory = Path(output).expanduser().absolute()
        if directory.exists() and not directory.is_dir():
            raise InputError(f"output {directory} is not a directory (an archive file name "
                             f"must end in {SUFFIX})", param="output")
        directory.mkdir(parents=True, exist_ok=True)

    def names() -> Iterator[Path]:
        yield directory / f"magray-{stamp}{SUFFIX}"
        number = 2
        while True:
            yield directory / f"magray-{stamp}-{number}{SUFFIX}"
            number += 1

    return directory, names()


def _snapshot(where: Paths, store, stage: Path, *, timeout: float, lock: bool
              ) -> tuple[dict, list[tuple[str, Path]], list[str]]:
    """Snapshot the database and copy the index files (under every layer's lock) and the
    config into ``stage``. Returns facts about the snapshot, the members and warnings."""
    warnings: list[str] = []
    members: list[tuple[str, Path]] = []
    (stage / "indexes").mkdir(mode=0o700)
    with ExitStack() as held:
        if lock:
            for layer in LAYERS:
                held.enter_context(locked(layer_files(where, layer)[2], timeout=timeout,
                                          shared=True))
        facts = store.snapshot_to(stage / STAGED[DB_MEMBER])  # whatever the engine: SQLite
        members.append((DB_MEMBER, stage / STAGED[DB_MEMBER]))
        for layer in LAYERS:
            copied = _copy_index(where, layer, stage, facts["store_id"])
            if isinstance(copied, str):
                warnings.append(copied)
            else:
                members += copied
    config = where.config_file
    if config.is_file():
        if config.stat().st_size > MAX_CONFIG:
            warnings.append(f"{config} is over {MAX_CONFIG} bytes; it is left out")
        else:
            shutil.copyfile(config, stage / STAGED[CONFIG_MEMBER])
            members.append((CONFIG_MEMBER, stage / STAGED[CONFIG_MEMBER]))
    return facts, members, warnings


def _copy_index(where: Paths, layer: str, stage: Path, store_id: str
                ) -> list[tuple[str, Path]] | str:
    """Copy a layer's index and sidecar if they are whole and belong to this store; else a
    warning (the layer is then rebuilt from the stored vectors after a restore)."""
    index, sidecar, _ = layer_files(where, layer)
    if not index.exists() and not sidecar.exists():
        return []
    names = index_members(layer)
    copies = [stage / STAGED[n] for n in names]
    try:
        shutil.copyfile(index, copies[0])
        shutil.copyfile(sidecar, copies[1])
        state = json.loads(copies[1].read_bytes())
        whole = (state["store_id"] == store_id and state["size"] == copies[0].stat().st_size
                 and state["crc32"] == files.crc32(copies[0]))
    except (OSError, ValueError, TypeError, KeyError):
        whole = False
    if not whole:
        for copy in copies:
            copy.unlink(missing_ok=True)
        return (f"the {layer} index does not match its sidecar; it is left out of the "
                "archive and will be rebuilt from the stored vectors after a restore")
    return list(zip(names, copies))


def _seal(members: list, names: Iterator[Path], mtime: int, level: int,
          progress: Progress | None) -> Path:
    """Write the archive to a temporary name, fsync it, and link it into place under the
    first free name: never a partial archive under a real name, never an overwrite."""
    first = next(names)
    tmp = temporary_name(first)
    tmp.unlink(missing_ok=True)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "wb") as handle:
            archive.write(handle, members, mtime=mtime, level=level, progress=progress)
            handle.flush()
            os.fsync(handle.fileno())
        target = _link(tmp, first, names)
        files.sync_dir(target.parent)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def _link(tmp: Path, first: Path, names: Iterator[Path]) -> Path:
    """Give the written archive ``tmp`` the first free name (``first``, then ``names``)."""
    target = first
    while True:
        try:
            os.link(tmp, target)
            return target
        except FileExistsError:
            target = next(names, None)
            if target is None:
                raise InputError(f"{first} already exists") from None
        except OSError:  # no hard links here: rename, having checked the name is free
            if target.exists():
                raise
            os.replace(tmp, target)
            return target
