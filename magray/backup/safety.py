"""Safety copies: before a restore replaces data, it archives it (verified) into
``<data>/safety/``. A later restore never deletes one (each may be the only copy of what an
earlier restore replaced); only the person does, with ``discard_safety_copies``."""

from __future__ import annotations

from datetime import timezone
from pathlib import Path
from typing import Iterator

from .. import clock
from ..errors import IntegrityError
from ..paths import Paths, make_private_dir
from .create import write
from .layout import SUFFIX, same_path
from .verify import verify

SAFETY_DIR = "safety"
SAFETY_PREFIX = "before-restore-"


def write_safety_copy(where: Paths, store, *, level: int, timeout: float) -> Path:
    """Archive the current data into ``<data>/safety/``, verified, before it is replaced.
    The caller holds every index lock already."""
    directory = where.data / SAFETY_DIR
    make_private_dir(directory)
    moment = clock.now()
    stamp = moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")

    def names() -> Iterator[Path]:
        yield directory / f"{SAFETY_PREFIX}{stamp}{SUFFIX}"
        for number in range(2, 1000):
            yield directory / f"{SAFETY_PREFIX}{stamp}-{number}{SUFFIX}"

    info, _ = write(where, store, directory, names(), moment, level=level, timeout=timeout,
                    progress=None, lock=False)
    try:
        verify(info.path)
    except IntegrityError as exc:
        info.path.unlink(missing_ok=True)
        raise IntegrityError(f"the safety copy of the current data failed verification "
                             f"({exc}); nothing was changed") from None
    return info.path


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
    removed = [p for p in safety_copies(where) if not same_path(p, keep)]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
