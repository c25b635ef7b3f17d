"""Backups and restores: one verified archive per backup, retention for cron, safe restores.

An archive (the container is described in ``archive.py``) holds, in this order::

    manifest.json                        format, versions, time, model, counts, member SHA-256s
    data/magray.db                       a consistent snapshot (SQLite backup API), integrity-checked
    data/indexes/<layer>.usearch, .json  each layer's index and sidecar
    config.toml                          the config file, when there is one

Consistency while other processes write: every layer's index lock is held (shared) while
the database is snapshotted and the index files are copied, so no index can be saved
meanwhile and an archived index is never ahead of the archived database. After a restore,
``sync`` replays the index log for whatever an index is behind.

Restore verifies and unpacks the whole archive into a staging directory first; only then,
under every index lock and with the database to itself (SQLite's exclusive locking mode,
granted once no other process has it open), it writes a verified safety archive of the
current data, loads the staged database into the live one through the backup API (one
transaction), and puts the staged index files in place. Nothing can be written between the
safety copy and the load. The safety archive stays in ``<data>/safety/`` until the person
removes it (``discard_safety_copies``): a later restore never deletes one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from . import __version__, archive, clock, files
from .errors import (BusyError, InputError, IntegrityError, MagrayError, ModelMismatchError,
                     NotFoundError)
from .locks import locked
from .paths import Paths, make_private_dir
from .db.connection import SQLITE_BUSY, SQLITE_LOCKED, connect
from .records import LAYERS

FORMAT = "magray-backup"
FORMAT_VERSION = 1
SUFFIX = ".tar.zst"
MANIFEST = "manifest.json"
DB_MEMBER = "data/magray.db"
CONFIG_MEMBER = "config.toml"
MAX_MANIFEST = 1 << 20
MAX_CONFIG = 1 << 20
SAFETY_DIR = "safety"
SAFETY_PREFIX = "before-restore-"

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


def layer_files(where: Paths, layer: str) -> tuple[Path, Path, Path]:
    """(index file, sidecar, lock file) of a layer, as ``index.LayerIndex`` names them."""
    index = where.index_file(layer)
    return index, index.with_suffix(".json"), index.with_suffix(".lock")


def _members_and_staged_paths() -> dict[str, str]:
    staged = {DB_MEMBER: "magray.db", CONFIG_MEMBER: "config.toml"}
    for layer in LAYERS:
        staged[f"data/indexes/{layer}.usearch"] = f"indexes/{layer}.usearch"
        staged[f"data/indexes/{layer}.json"] = f"indexes/{layer}.json"
    return staged


# Archive member name -> path inside a staging directory. Restore writes only these paths:
# member names are looked up here, never joined onto a directory.
STAGED = _members_and_staged_paths()


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
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


@dataclass(frozen=True)
class Retention:
    """Grandfather-father-son retention: keep the newest archive of each of the last N days,
    weeks and months that have archives (None: that rule is not used)."""

    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None

    def __post_init__(self) -> None:
        for name in ("daily", "weekly", "monthly"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InputError(f"--keep-{name} must be a whole number, 0 or more")

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.daily, self.weekly, self.monthly))


@dataclass(frozen=True)
class Pruned:
    kept: tuple[BackupInfo, ...]
    removed: tuple[BackupInfo, ...]
    dry_run: bool = False


@dataclass(frozen=True)
class BackupResult:
    archive: BackupInfo
    verified: bool
    pruned: Pruned | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Listing:
    directory: Path
    archives: tuple[BackupInfo, ...]
    unreadable: tuple[tuple[Path, str], ...] = ()


@dataclass(frozen=True)
class RestoreResult:
    """A restore, done or (``dry_run``) planned. ``replaced`` counts the records the restore
    replaces, ``trashed`` the records in the trash it replaces; ``config`` is 'restored',
    'kept' (the archive's was not used) or 'none'."""

    archive: BackupInfo
    replaced: Mapping[str, int]
    config: str
    dry_run: bool
    safety_copy: Path | None = None
    synced: tuple = field(default=())
    trashed: int = 0

    def to_dict(self) -> dict:
        return {"archive": str(self.archive.path), "created_at": self.archive.created_at,
                "restored": dict(self.archive.counts), "records": self.archive.records,
                "replaced": dict(self.replaced), "config": self.config, "dry_run": self.dry_run,
                "safety_copy": str(self.safety_copy) if self.safety_copy else None,
                "synced": [asdict(s) for s in self.synced], "trashed": self.trashed}


# -- creating -----------------------------------------------------------------------------


def run(where: Paths, store, *, output: Path | None = None, retention: Retention | None = None,
        level: int = 3, timeout: float = 60.0, cap: int | None = None,
        progress: Progress | None = None) -> BackupResult:
    """Create an archive, verify it by reading it back, then apply retention beside it."""
    info, warnings = create(where, store, output=output, level=level, timeout=timeout,
                            progress=progress)
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
    return _write(where, store, directory, names, moment, level=level, timeout=timeout,
                  progress=progress, lock=True)


def _write(where: Paths, store, directory: Path, names: Iterator[Path], moment: datetime, *,
           level: int, timeout: float, progress: Progress | None, lock: bool
           ) -> tuple[BackupInfo, list[str]]:
    remove_leftovers(directory)
    stage = Path(tempfile.mkdtemp(prefix=f".magray-backup-{os.getpid()}-", dir=directory))
    try:
        facts, members, warnings = _snapshot(where, store, stage, timeout=timeout, lock=lock)
        manifest = _manifest(facts, members, clock.iso(moment))
        data = json.dumps(manifest, indent=1).encode()
        path = _seal([(MANIFEST, data)] + members, names, int(moment.timestamp()), level,
                     progress)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return _info(manifest, path, path.stat().st_size), warnings


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
            raise InputError(f"--output {output} already exists; a backup never overwrites a "
                             "file")
        if not output.parent.is_dir():
            raise InputError(f"--output: the directory {output.parent} does not exist")
        return output.parent, iter([output])
    else:
        directory = Path(output).expanduser().absolute()
        if directory.exists() and not directory.is_dir():
            raise InputError(f"--output {directory} is not a directory (an archive file name "
                             f"must end in {SUFFIX})")
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
        facts = snapshot_database(store, stage / STAGED[DB_MEMBER])
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


def snapshot_database(store, target: Path) -> dict:
    """A consistent copy of the live database at ``target`` (SQLite's backup API: one read
    transaction, so concurrent writers neither block it nor tear it), integrity-checked.
    Returns the snapshot's store id, model and per-layer counts."""
    copy = connect(target)  # a full disk while copying is one line naming the cause
    try:
        copy.execute("PRAGMA synchronous=OFF")  # a scratch file: the archive gets the fsync
        try:
            store.conn.backup(copy)
        except sqlite3.DatabaseError as exc:
            raise MagrayError(f"could not snapshot the database {store.path}: {exc}") from None
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        problems = copy.execute("PRAGMA integrity_check").fetchall()
        if problems != [("ok",)]:
            raise IntegrityError(f"the database {store.path} failed integrity_check "
                                 f"({problems[0][0]}); no backup was written")
        return database_facts(copy)
    finally:
        copy.close()


def database_facts(conn: sqlite3.Connection) -> dict:
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    counts = dict.fromkeys(LAYERS, 0)
    for layer, count in conn.execute("SELECT layer, count(*) FROM records GROUP BY layer"):
        if layer in counts:  # the store accepts no other layer
            counts[layer] = count
    dim = meta.get("dim")
    return {"store_id": meta.get("store_id", ""), "model": meta.get("model"),
            "model_key": meta.get("model_key"), "dim": int(dim) if dim else None,
            "counts": counts}


def trash_count(conn: sqlite3.Connection) -> int:
    """Records in the trash (0 where the database predates the trash table)."""
    try:
        return conn.execute("SELECT count(*) FROM trash").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _copy_index(where: Paths, layer: str, stage: Path, store_id: str
                ) -> list[tuple[str, Path]] | str:
    """Copy a layer's index and sidecar if they are whole and belong to this store; else a
    warning (the layer is then rebuilt from the stored vectors after a restore)."""
    index, sidecar, _ = layer_files(where, layer)
    if not index.exists() and not sidecar.exists():
        return []
    names = (f"data/indexes/{layer}.usearch", f"data/indexes/{layer}.json")
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


def _manifest(facts: dict, members: Sequence[tuple[str, Path]], created_at: str) -> dict:
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


def _seal(members: list, names: Iterator[Path], mtime: int, level: int,
          progress: Progress | None) -> Path:
    """Write the archive to a temporary name, fsync it, and link it into place under the
    first free name: never a partial archive under a real name, never an overwrite."""
    first = next(names)
    tmp = first.with_name(f".{first.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "wb") as handle:
            archive.write(handle, members, mtime=mtime, level=level, progress=progress)
            handle.flush()
            os.fsync(handle.fileno())
        target = first
        while True:
            try:
                os.link(tmp, target)
                break
            except FileExistsError:
                target = next(names, None)
                if target is None:
                    raise InputError(f"{first} already exists") from None
            except OSError:  # no hard links here: rename, having checked the name is free
                if target.exists():
                    raise
                os.replace(tmp, target)
                break
        files.sync_dir(target.parent)
        return target
    finally:
        tmp.unlink(missing_ok=True)


_LEFTOVER = re.compile(r"^(?:\..+\.tmp-|\.magray-backup-|\.restore-)(\d+)(?:-.*)?$")


def remove_leftovers(directory: Path) -> list[Path]:
    """Remove temporary files and staging directories left by killed magray processes."""
    removed = []
    for path in directory.glob(".*"):
        match = _LEFTOVER.match(path.name)
        if not match or _alive(int(match[1])):
            continue
        if path.name.startswith((".magray-backup-", ".restore-")) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.endswith(f"{SUFFIX}.tmp-{match[1]}") and path.is_file():
            path.unlink(missing_ok=True)
        else:
            continue
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- reading and verifying ----------------------------------------------------------------


def read_info(path: Path) -> BackupInfo:
    """The manifest of an archive, read from its start without verifying the rest."""
    path = Path(path)
    with archive.Reader(path) as reader:
        try:
            return _read_manifest(reader, path)[0]
        except IntegrityError as exc:
            raise IntegrityError(f"{path}: {exc}") from None


def verify(path: Path, *, cap: int | None = None, progress: Progress | None = None
           ) -> BackupInfo:
    """Re-read every member against the manifest, and the whole file against its trailer.
    Raises IntegrityError naming the failed check."""
    return _scan(Path(path), cap=cap, stage=None, progress=progress)


def _scan(path: Path, *, cap: int | None, stage: Path | None, progress: Progress | None
          ) -> BackupInfo:
    """Verify an archive front to back, writing its members into ``stage`` when given."""
    with archive.Reader(path, progress) as reader:
        try:
            info, members = _read_manifest(reader, path)
            _check_size(info, cap, stage)
            _scan_members(members, info, stage)
            reader.finish()
        except IntegrityError as exc:
            raise IntegrityError(f"{path} failed verification: {exc}") from None
    return info


def _read_manifest(reader: archive.Reader, path: Path
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
    return _info(document, path, path.stat().st_size), entries


def _info(document: dict, path: Path, size: int) -> BackupInfo:
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
    members, seen = [], set()
    for item in get("members", list):
        if not isinstance(item, dict):
            raise IntegrityError("manifest: bad 'members'")
        name, size_, digest = item.get("name"), item.get("size"), item.get("sha256")
        if (name not in STAGED or name in seen or type(size_) is not int or size_ < 0
                or not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise IntegrityError(f"manifest: bad member entry {str(name)[:100]!r}")
        seen.add(name)
        members.append(Member(name, size_, digest))
    for member in members:  # small files stay small: they are read whole later
        if not member.name.endswith((".db", ".usearch")) and member.size > MAX_CONFIG:
            raise IntegrityError(f"manifest: '{member.name}' is {member.size} bytes, over "
                                 f"{MAX_CONFIG}")
    if DB_MEMBER not in seen:
        raise IntegrityError(f"manifest: no {DB_MEMBER}")
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
                      members=tuple(members))


def _check_size(info: BackupInfo, cap: int | None, stage: Path | None) -> None:
    """Refuse a decompression bomb before unpacking anything."""
    total = sum(m.size for m in info.members)
    if cap is not None and total > cap:
        raise IntegrityError(f"refused: the archive would unpack to {total} bytes, over "
                             f"restore_max_bytes ({cap})")
    if stage is not None:
        free = shutil.disk_usage(stage).free
        if total > free:
            raise MagrayError(f"not enough free space to restore: the archive unpacks to "
                              f"{total} bytes and {stage.parent} has {free} free")


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


# -- listing and retention ----------------------------------------------------------------


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


def select_kept(times: Sequence[datetime], retention: Retention, tz: tzinfo | None = None
                ) -> set[int]:
    """Indices of ``times`` that retention keeps, as restic's ``forget`` does: going from
    newest to oldest, each rule keeps the newest archive of each of its last N buckets
    (calendar days, ISO weeks, months in ``tz``, default local time) that hold one."""
    rules = [(retention.daily, lambda t: t.date()),
             (retention.weekly, lambda t: t.isocalendar()[:2]),
             (retention.monthly, lambda t: (t.year, t.month))]
    left = [n or 0 for n, _ in rules]
    last: list[object] = [None] * len(rules)
    kept: set[int] = set()
    for i in sorted(range(len(times)), key=lambda i: times[i], reverse=True):
        moment = times[i].astimezone(tz)
        for r, (_, bucket_of) in enumerate(rules):
            bucket = bucket_of(moment)
            if left[r] > 0 and bucket != last[r]:
                kept.add(i)
                last[r] = bucket
                left[r] -= 1
    return kept


def prune(directory: Path, store_id: str, retention: Retention, *, protect: Path | None = None,
          dry_run: bool = False, cap: int | None = None, tz: tzinfo | None = None) -> Pruned:
    """Delete this store's archives in ``directory`` that retention does not keep. The newest
    archive that verifies (``protect``, or found by verifying newest first) is always kept;
    archives of other stores and unreadable files are never touched."""
    mine = [a for a in list_archives(directory).archives if a.store_id == store_id]
    if not mine:
        return Pruned((), (), dry_run)
    if protect is None:
        protect = _newest_verified(mine, cap)
    kept_at = select_kept([a.created for a in mine], retention, tz)
    kept_at |= {i for i, a in enumerate(mine) if _same(a.path, protect)}
    kept = [a for i, a in enumerate(mine) if i in kept_at]
    removed = [a for i, a in enumerate(mine) if i not in kept_at]
    if not dry_run:
        for item in removed:
            item.path.unlink(missing_ok=True)
        if removed:
            files.sync_dir(Path(directory))
    return Pruned(tuple(kept), tuple(removed), dry_run)


def _newest_verified(archives: Sequence[BackupInfo], cap: int | None) -> Path:
    for item in sorted(archives, key=lambda a: a.created_at, reverse=True):
        try:
            return verify(item.path, cap=cap).path
        except IntegrityError:
            continue
    raise IntegrityError("none of this memory's archives verifies; nothing was deleted")


def _same(a: Path, b: Path | None) -> bool:
    return b is not None and os.path.abspath(a) == os.path.abspath(b)


# -- restoring ----------------------------------------------------------------------------


def restore(where: Paths, store, path: Path, *, expected_key: Callable[[Path | None], str],
            config: bool | None = None, replace_data: bool = False,
            confirm: Callable[[RestoreResult], bool] | None = None, dry_run: bool = False,
            cap: int | None = None, level: int = 3, timeout: float = 60.0,
            progress: Progress | None = None) -> RestoreResult:
    """Verify and stage the whole archive, check it fits this installation, then swap it in.

    ``expected_key(config_file)`` names the model key in effect after the restore (given the
    archive's config file when that is restored too). ``config``: restore the archive's
    config.toml (True), never (False), or only where there is none yet (None). Replacing
    existing records needs ``replace_data`` or a ``confirm(plan)`` that returns True.
    """
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path}: no such archive")
    remove_leftovers(where.data)
    stage = Path(tempfile.mkdtemp(prefix=f".restore-{os.getpid()}-", dir=where.data))
    try:
        (stage / "indexes").mkdir(mode=0o700)
        info = _scan(path, cap=cap, stage=stage, progress=progress)
        _check_staged(stage / STAGED[DB_MEMBER], info, path)
        staged_config = stage / STAGED[CONFIG_MEMBER]
        has_config = staged_config.is_file()
        use_config = has_config and (config or (config is None
                                                and not where.config_file.exists()))
        if use_config:
            _check_config(staged_config, path)
        _check_model(info, expected_key(staged_config if use_config else None), path)
        current = database_facts(store.conn)["counts"]  # the plan; _swap reads them again
        trashed = trash_count(store.conn)
        plan = RestoreResult(info, current, "restored" if use_config else
                             "kept" if has_config else "none", dry_run, trashed=trashed)
        replacing = (sum(current.values()) + trashed > 0
                     or (use_config and where.config_file.exists()))
        if dry_run:
            return plan
        confirmed = replace_data
        if replacing and not replace_data:
            if confirm is None:
                raise InputError(f"restoring {path.name} would replace the "
                                 f"{sum(current.values())} records and {trashed} in the "
                                 f"trash in {where.data}; pass --yes to confirm")
            if not confirm(plan):
                raise MagrayError("restore cancelled; nothing was changed")
            confirmed = True
        _match_page_size(stage / STAGED[DB_MEMBER], store)
        safety, replaced, trashed = _swap(where, store, stage, use_config, confirmed,
                                          level=level, timeout=timeout)
        # Earlier safety copies are kept: each may be the only copy of what an earlier
        # restore replaced. Only the person removes them (discard_safety_copies).
        return replace(plan, replaced=replaced, trashed=trashed, safety_copy=safety)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _check_staged(db: Path, info: BackupInfo, path: Path) -> None:
    """The staged database must be sound, of a schema this magray knows, and be what the
    manifest describes."""
    from .db import migrations

    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.DatabaseError as exc:
        raise IntegrityError(f"{path}: the archived database cannot be opened: {exc}") from None
    try:
        problems = conn.execute("PRAGMA integrity_check").fetchall()
        if problems != [("ok",)]:
            raise IntegrityError(f"{path}: the archived database failed integrity_check "
                                 f"({problems[0][0]})")
        known = set(migrations.names())
        applied = migrations.applied(conn)
        if applied - known:
            raise InputError(f"{path} holds a database from a newer magray (schema "
                             f"{sorted(applied - known)[-1]}); upgrade magray to restore it")
        facts = database_facts(conn)
    except sqlite3.DatabaseError as exc:
        raise IntegrityError(f"{path}: the archived database is not a magray database: {exc}"
                             ) from None
    finally:
        conn.close()
    described = {"store_id": info.store_id, "model": info.model, "model_key": info.model_key,
                 "dim": info.dim, "counts": dict(info.counts)}
    if facts != described:
        raise IntegrityError(f"{path}: the manifest does not describe the archived database")


def _check_config(staged: Path, path: Path) -> None:
    from . import config

    try:
        config.read_file(staged)
    except InputError as exc:
        raise InputError(f"{path}: the archived config.toml is not usable ({exc}); restore "
                         "with --no-config") from None


def _check_model(info: BackupInfo, expected: str, path: Path) -> None:
    if info.model_key is not None and info.model_key != expected:
        # The key is the model and its truncation (name@dim): both settings must match it.
        name, _, truncate = info.model_key.partition("@")
        raise ModelMismatchError(
            f"{path} was embedded with {info.model_key} ({info.dim} dimensions) but the "
            f"model in effect is {expected}; run `magray config set model {name}` and "
            f"`magray config set truncate_dim {truncate or 0}` and restore again, or restore "
            "with --config to take the archive's config")


def _swap(where: Paths, store, stage: Path, use_config: bool, confirmed: bool, *,
          level: int, timeout: float) -> tuple[Path | None, dict[str, int], int]:
    """Under every index lock and with the database to ourselves: write a verified safety
    archive of the current data, load the staged database into the live one, and put the
    staged index files in place. Returns the safety archive (None when nothing needed
    one), the records replaced and the trashed records replaced.
    What is replaced is read here, under the lock: a store just before it is in the safety
    archive, or (when replacing records was not confirmed) stops the restore."""
    safety = None
    with ExitStack() as held:
        for layer in LAYERS:
            held.enter_context(locked(layer_files(where, layer)[2], timeout=timeout))
        held.enter_context(_exclusive(store))
        replaced = database_facts(store.conn)["counts"]
        trashed = trash_count(store.conn)  # the trash is the person's data too
        if (sum(replaced.values()) or trashed) and not confirmed:
            raise InputError(f"{sum(replaced.values()) + trashed} records were stored or "
                             f"trashed in {where.data} while the archive was being checked; "
                             "nothing was changed: restore again with --yes to replace them")
        if sum(replaced.values()) or trashed or (use_config and where.config_file.exists()):
            safety = _safety_archive(where, store, level=level, timeout=timeout)
        for layer in LAYERS:  # no index file is ever paired with the wrong database
            for live in layer_files(where, layer)[:2]:
                live.unlink(missing_ok=True)
        _load(stage / STAGED[DB_MEMBER], store, timeout)
        for layer in LAYERS:
            _place_index(where, layer, stage)
        if use_config:
            where.config_file.parent.mkdir(parents=True, exist_ok=True)
            files.write_atomic(where.config_file,
                               (stage / STAGED[CONFIG_MEMBER]).read_bytes())
    return safety, replaced, trashed


@contextmanager
def _exclusive(store) -> Iterator[None]:
    """Have the database to this connection alone (SQLite's EXCLUSIVE locking mode) from the
    safety copy to the end of the load, so that no other process can write a record in
    between (it would be in neither) or read a half-restored memory. SQLite grants this only
    when no other connection has the database open; it waits up to the busy timeout."""
    conn = store.conn
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    try:
        try:
            conn.execute("BEGIN IMMEDIATE")  # takes the exclusive lock, kept after COMMIT
            conn.execute("COMMIT")
        except (sqlite3.OperationalError, BusyError):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise BusyError(f"another magray process has {store.path} open; stop it (a cron "
                            "job, an agent) and restore again. Nothing was changed") from None
        yield
    finally:
        conn.execute("PRAGMA locking_mode=NORMAL")
        conn.execute("SELECT count(*) FROM meta").fetchone()  # the next access unlocks


def _safety_archive(where: Paths, store, *, level: int, timeout: float) -> Path:
    """Archive the current data into ``<data>/safety/``, verified, before it is replaced."""
    directory = where.data / SAFETY_DIR
    make_private_dir(directory)
    moment = clock.now()
    stamp = moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")

    def names() -> Iterator[Path]:
        yield directory / f"{SAFETY_PREFIX}{stamp}{SUFFIX}"
        for number in range(2, 1000):
            yield directory / f"{SAFETY_PREFIX}{stamp}-{number}{SUFFIX}"

    info, _ = _write(where, store, directory, names(), moment, level=level, timeout=timeout,
                     progress=None, lock=False)
    try:
        verify(info.path)
    except IntegrityError as exc:
        info.path.unlink(missing_ok=True)
        raise IntegrityError(f"the safety copy of the current data failed verification "
                             f"({exc}); nothing was changed") from None
    return info.path


def _match_page_size(staged: Path, store) -> None:
    """The backup API cannot change a WAL database's page size: give the staged copy the
    live one's (an archive from another machine's SQLite build may differ)."""
    wanted = store.conn.execute("PRAGMA page_size").fetchone()[0]
    conn = connect(staged)
    try:
        if conn.execute("PRAGMA page_size").fetchone()[0] != wanted:
            conn.execute(f"PRAGMA page_size={int(wanted)}")
            conn.execute("VACUUM")
    finally:
        conn.close()


def _load(staged: Path, store, timeout: float) -> None:
    """Copy the staged database into the live one: the backup API writes it in one
    transaction, through SQLite's own locking, so the WAL stays sound."""
    source = sqlite3.connect(f"file:{staged}?mode=ro", uri=True)
    deadline = time.monotonic() + timeout

    def patience(status: int, remaining: int, total: int) -> None:
        # Called after every step, the last one too: only a step that found the database
        # busy (and copied nothing) may give up; a finished copy is a finished restore.
        if status in (SQLITE_BUSY, SQLITE_LOCKED) and time.monotonic() > deadline:
            raise BusyError(f"the database {store.path} stayed locked; nothing was restored")

    try:
        source.backup(store.conn, progress=patience)
    except sqlite3.DatabaseError as exc:
        raise MagrayError(f"could not load the archived database: {exc}") from None
    finally:
        source.close()
    store.reloaded()  # the database was replaced under the connection
    store.conn.execute("PRAGMA journal_mode=WAL")


def _place_index(where: Paths, layer: str, stage: Path) -> None:
    """Move a staged index and sidecar into place (index first, as ``LayerIndex`` saves),
    giving the file the mtime its sidecar records so it is known fresh without a re-save."""
    staged = [stage / STAGED[f"data/indexes/{layer}.{ext}"] for ext in ("usearch", "json")]
    if not all(p.is_file() for p in staged):
        return
    try:
        state = json.loads(staged[1].read_bytes())
        if files.crc32(staged[0]) == state["crc32"]:
            os.utime(staged[0], ns=(state["mtime_ns"], state["mtime_ns"]))
    except (OSError, ValueError, TypeError, KeyError):
        pass  # sync will notice and repair
    index, sidecar, _ = layer_files(where, layer)
    os.replace(staged[0], index)
    os.replace(staged[1], sidecar)


def safety_copies(where: Paths) -> list[Path]:
    """The safety archives restores left, oldest first."""
    directory = where.data / SAFETY_DIR
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"{SAFETY_PREFIX}*{SUFFIX}"), key=_safety_order)


def _safety_order(path: Path) -> tuple[str, int]:
    # <stamp>.tar.zst, then <stamp>-2.tar.zst ... (a plain sort puts "-2" first)
    stamp, _, number = path.name[len(SAFETY_PREFIX):-len(SUFFIX)].partition("-")
    return stamp, int(number) if number.isascii() and number.isdigit() else 1


def discard_safety_copies(where: Paths, keep: Path | None = None) -> list[Path]:
    """Delete the safety archives (all but ``keep``); returns what was deleted."""
    removed = [p for p in safety_copies(where) if not _same(p, keep)]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
