"""Restoring an archive: verify and unpack all of it into a staging directory, check that it
fits this installation, then swap it in.

The swap happens under every index lock and with the database to itself (the repository's
``exclusive()``: SQLite's exclusive locking mode, granted once no other process has it open;
on PostgreSQL the lock every writer takes): it writes a verified safety copy of the current
data (``safety.py``), loads the staged database into the live one in one transaction
(``load_snapshot``), and puts the staged index files in place where they fit what was
loaded. Nothing can be written between the safety copy and the load. Every engine reads
and writes the archive's SQLite database through the repository, so any archive restores
into either engine.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from .. import files
from ..config import load as load_settings, read_file as read_settings
from ..db.snapshot import staged_facts
from ..errors import InputError, IntegrityError, MagrayError, ModelMismatchError, NotFoundError
from ..locks import locked
from ..paths import Paths
from ..records import LAYERS
from .layout import CONFIG_MEMBER, DB_MEMBER, STAGED, Progress, index_members, layer_files
from .leftovers import RESTORE_STAGE, remove_leftovers, stage_prefix
from .manifest import BackupInfo
from .safety import write_safety_copy
from .verify import unpack

if TYPE_CHECKING:
    from ..config import Settings
    from ..embedding import Embedder
    from ..encoder import Encoder
    from ..index import Indexes


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


def restore(where: Paths, store, settings: "Settings", path: Path, *, encoder: "Encoder",
            indexes: "Indexes", embedder_for: Callable[["Settings", Path], "Embedder"],
            warn: Callable[[str], None], config: bool | None = None,
            replace_data: bool = False, confirm: Callable[[RestoreResult], bool] | None = None,
            dry_run: bool = False, progress: Progress | None = None) -> RestoreResult:
    """Verify and stage the whole archive, check it fits this installation, then swap it in
    and bring ``indexes`` in step with it (an index that cannot be updated is a ``warn``).

    The archive's model must be the one in effect after the restore: the encoder's, if it
    has one already (it stays in use), else the one the settings name, made by
    ``embedder_for(settings, data_dir)`` (``embedding.from_settings``). ``config``: restore
    the archive's config.toml (True), never (False), or only where there is none yet (None).
    Replacing existing records needs ``replace_data`` or a ``confirm(plan)`` that returns
    True.
    """
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path}: no such archive")
    remove_leftovers(where.data)
    stage = Path(tempfile.mkdtemp(prefix=stage_prefix(RESTORE_STAGE), dir=where.data))
    try:
        plan, use_config = _plan(where, store, path, stage, config=config, dry_run=dry_run,
                                 key=partial(_model_key_after, where=where, settings=settings,
                                             embedder=encoder.loaded,
                                             embedder_for=embedder_for),
                                 cap=settings.restore_max_bytes, progress=progress)
        if dry_run:
            return plan
        confirmed = _confirmed(plan, where, path, use_config, replace_data, confirm)
        store.prepare_load(stage / STAGED[DB_MEMBER])  # before the locks: may rewrite it
        safety, replaced, trashed = _swap(where, store, stage, use_config, confirmed,
                                          level=settings.backup_level,
                                          timeout=settings.busy_timeout)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    store.migrate()  # an archive from an older magray gets this schema (the trash...)
    indexes.clear()  # they described the replaced data
    synced = indexes.after_write(LAYERS, warn) if encoder.recorded_model()[1] else []
    # Earlier safety copies are kept: each may be the only copy of what an earlier
    # restore replaced. Only the person removes them (discard_safety_copies).
    return replace(plan, replaced=replaced, trashed=trashed, safety_copy=safety,
                   synced=tuple(synced))


def _plan(where: Paths, store, path: Path, stage: Path, *, config: bool | None,
          dry_run: bool, key: Callable[[Path | None], str], cap: int | None,
          progress: Progress | None) -> tuple[RestoreResult, bool]:
    """Unpack and check the archive; returns what restoring it would do, and whether its
    config file is to be restored too."""
    (stage / "indexes").mkdir(mode=0o700)
    info = unpack(path, cap=cap, stage=stage, progress=progress)
    if staged_facts(stage / STAGED[DB_MEMBER], path) != info.facts():
        raise IntegrityError(f"{path}: the manifest does not describe the archived database")
    staged_config = stage / STAGED[CONFIG_MEMBER]
    has_config = staged_config.is_file()
    use_config = has_config and (config or (config is None and not where.config_file.exists()))
    if use_config:
        _check_config(staged_config, path)
    _check_model(info, key(staged_config if use_config else None), path)
    current, trashed = store.contents()  # the plan; _swap reads them again
    plan = RestoreResult(info, current, "restored" if use_config else
                         "kept" if has_config else "none", dry_run, trashed=trashed)
    return plan, use_config


def _confirmed(plan: RestoreResult, where: Paths, path: Path, use_config: bool,
               replace_data: bool, confirm: Callable[[RestoreResult], bool] | None) -> bool:
    """Whether replacing data is confirmed; raises where it would replace data unasked."""
    records = sum(plan.replaced.values())
    replacing = records + plan.trashed > 0 or (use_config and where.config_file.exists())
    if not replacing or replace_data:
        return replace_data
    if confirm is None:
        raise InputError(f"restoring {path.name} would replace the {records} records and "
                         f"{plan.trashed} in the trash in {where.data}; pass replace=True to "
                         "confirm", param="replace=True")
    if not confirm(plan):
        raise MagrayError("restore cancelled; nothing was changed")
    return True


def _model_key_after(config_file: Path | None, where: Paths, settings: "Settings",
                     embedder: "Embedder | None",
                     embedder_for: Callable[["Settings", Path], "Embedder"]) -> str:
    """The model key in effect once ``config_file`` (None: the current one) is in place.
    A model already in use (given, or loaded) stays in use."""
    if embedder is not None:
        return embedder.key
    return embedder_for(load_settings(config_file) if config_file else settings,
                        where.data).key


def _check_config(staged: Path, path: Path) -> None:
    try:
        read_settings(staged)
    except InputError as exc:
        raise InputError(f"{path}: the archived config.toml is not usable ({exc}); restore "
                         "with config=False", param="config=False") from None


def _check_model(info: BackupInfo, expected: str, path: Path) -> None:
    if info.model_key is not None and info.model_key != expected:
        # The key is the model and its truncation (name@dim): both settings must match it.
        name, _, truncate = info.model_key.partition("@")
        raise ModelMismatchError(
            f"{path} was embedded with {info.model_key} ({info.dim} dimensions) but the "
            f"model in effect is {expected}; run `magray config set model {name}` and "
            f"`magray config set truncate_dim {truncate or 0}` and restore again, or restore "
            "with config=True to take the archive's config", param="config=True")


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
        held.enter_context(store.exclusive())
        replaced, trashed = store.contents()
        if (sum(replaced.values()) or trashed) and not confirmed:
            raise InputError(f"{sum(replaced.values()) + trashed} records were stored or "
                             f"trashed in {where.data} while the archive was being checked; "
                             "nothing was changed: restore again with replace=True to replace "
                             "them", param="replace=True")
        if sum(replaced.values()) or trashed or (use_config and where.config_file.exists()):
            safety = write_safety_copy(where, store, level=level, timeout=timeout)
        for layer in LAYERS:  # no index file is ever paired with the wrong database
            for live in layer_files(where, layer)[:2]:
                live.unlink(missing_ok=True)
        if store.load_snapshot(stage / STAGED[DB_MEMBER], timeout):
            for layer in LAYERS:  # else they are rebuilt from the loaded vectors
                _place_index(where, layer, stage)
        if use_config:
            where.config_file.parent.mkdir(parents=True, exist_ok=True)
            files.write_atomic(where.config_file,
                               (stage / STAGED[CONFIG_MEMBER]).read_bytes())
    return safety, replaced, trashed


def _place_index(where: Paths, layer: str, stage: Path) -> None:
    """Move a staged index and sidecar into place (index first, as ``LayerIndex`` saves),
    giving the file the mtime its sidecar records so it is known fresh without a re-save."""
    staged = [stage / STAGED[member] for member in index_members(layer)]
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
