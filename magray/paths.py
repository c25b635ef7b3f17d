"""Where magray keeps its files: one resolver, with a single-directory override.

``MAGRAY_HOME`` (or ``--home``) puts everything under one directory::

    $MAGRAY_HOME/config.toml   $MAGRAY_HOME/data/   $MAGRAY_HOME/backups/

Otherwise the platform's user directories are used (platformdirs).

What any home can share and magray can remake (the ONNX copy of a model) lives in the user
cache directory, ``MAGRAY_CACHE`` when that is set.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import MagrayError

APP = "magray"


@dataclass(frozen=True)
class Paths:
    data: Path
    config_file: Path
    backups: Path

    @property
    def database(self) -> Path:
        return self.data / "magray.db"

    @property
    def indexes(self) -> Path:
        return self.data / "indexes"

    def index_file(self, layer: str) -> Path:
        return self.indexes / f"{layer}.usearch"

    def ensure(self) -> None:
        """Create the private data directories (0700) and refuse ones others can write to."""
        for directory in (self.data, self.indexes):
            make_private_dir(directory)


def resolve(home: str | os.PathLike | None = None) -> Paths:
    """Resolve paths: the ``home`` argument, else ``MAGRAY_HOME``, else platformdirs."""
    home = home or os.environ.get("MAGRAY_HOME")
    if home:
        root = Path(home).expanduser().absolute()
        return Paths(data=root / "data", config_file=root / "config.toml", backups=root / "backups")
    import platformdirs

    data = platformdirs.user_data_path(APP, appauthor=False)
    config = platformdirs.user_config_path(APP, appauthor=False)
    return Paths(data=data, config_file=config / "config.toml", backups=data / "backups")


def refuse_if_shared(path: Path) -> None:
    """Refuse a config file, or the directory holding it (the home), that other users can
    write to, as ssh refuses such an authorized_keys: whoever can write it can point magray
    at their own model or data. A missing one is fine (it will be created private)."""
    try:
        info = path.stat()
    except OSError:
        return
    if others_can_write(info):
        raise MagrayError(f"{path} is writable by other users; refusing to use it "
                          f"(chmod go-w {path})")


def others_can_write(info: os.stat_result) -> bool:
    """World-writable, or writable by a group someone else may be in. A user private group
    (the group named after its one user, where umask 002 is the default, as on Debian and
    Ubuntu) holds only its user, so a file it may write is still the user's alone."""
    if info.st_mode & stat.S_IWOTH:
        return True
    return bool(info.st_mode & stat.S_IWGRP) and not _private_group(info.st_gid)


def _private_group(gid: int) -> bool:
    import grp
    import pwd

    try:
        group, user = grp.getgrgid(gid), pwd.getpwuid(os.getuid())
    except KeyError:  # ids with no name: assume shared
        return False
    return (group.gr_name == user.pw_name and user.pw_gid == gid
            and not set(group.gr_mem) - {user.pw_name})


def cache_dir() -> Path:
    """magray's cache: ``MAGRAY_CACHE``, else the platform's user cache directory. It is
    shared by every home, MAGRAY_HOME ones included: what is kept there is derived from
    installed models, never from a person's data."""
    override = os.environ.get("MAGRAY_CACHE")
    if override:
        return Path(override).expanduser().absolute()
    import platformdirs

    return platformdirs.user_cache_path(APP, appauthor=False)


def make_private_dir(directory: Path) -> None:
    """mkdir -p with mode 0700 for what we create; refuse a directory others may write to."""
    if not directory.exists():
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
    info = directory.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise MagrayError(f"{directory} is not a directory")
    if others_can_write(info):
        raise MagrayError(
            f"{directory} is writable by other users; refusing to use it (chmod 700 {directory})"
        )
