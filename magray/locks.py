"""Advisory file locks shared by every magray process (fcntl.flock on a private lock file)."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import BusyError


@contextmanager
def locked(path: Path, *, timeout: float, shared: bool = False) -> Iterator[None]:
    """Hold an exclusive (or shared) lock on ``path`` for the duration of the block.

    Waits up to ``timeout`` seconds, polling, so that a hung peer becomes a clear error
    rather than a hang. The lock file is created 0600 and never followed through a symlink.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise BusyError(f"{path.name} stayed locked by another magray process for "
                                    f"{timeout:g} s; try again, or raise busy_timeout") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        yield
    finally:
        os.close(fd)  # closing releases the lock
