"""What killed backups and restores leave behind: a temporary archive (``.<name>.tmp-<pid>``)
or a staging directory (``.magray-backup-<pid>-...``, ``.restore-<pid>-...``) that may be a
whole copy of the memory. Each name carries its process id, so only a dead process's are
removed."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from .layout import SUFFIX

BACKUP_STAGE = ".magray-backup-"
RESTORE_STAGE = ".restore-"

_LEFTOVER = re.compile(r"^(?:\..+\.tmp-|\.magray-backup-|\.restore-)(\d+)(?:-.*)?$")


def temporary_name(target: Path) -> Path:
    """Where an archive is written before it is linked to ``target``."""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


def stage_prefix(kind: str) -> str:
    """The name a staging directory of this process starts with (``kind``: BACKUP_STAGE or
    RESTORE_STAGE)."""
    return f"{kind}{os.getpid()}-"


def remove_leftovers(directory: Path) -> list[Path]:
    """Remove temporary files and staging directories left by killed magray processes."""
    removed = []
    for path in directory.glob(".*"):
        match = _LEFTOVER.match(path.name)
        if not match or _alive(int(match[1])):
            continue
        if path.name.startswith((BACKUP_STAGE, RESTORE_STAGE)) and path.is_dir():
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
