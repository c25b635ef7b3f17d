"""Where things are: the members of an archive, the paths they are staged at, and the live
files of a layer's index."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..paths import Paths
from ..records import LAYERS

SUFFIX = ".tar.zst"
MANIFEST = "manifest.json"
DB_MEMBER = "data/magray.db"
CONFIG_MEMBER = "config.toml"

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


def index_members(layer: str) -> tuple[str, str]:
    """The archive members of a layer's index and its sidecar."""
    return f"data/indexes/{layer}.usearch", f"data/indexes/{layer}.json"


def layer_files(where: Paths, layer: str) -> tuple[Path, Path, Path]:
    """(index file, sidecar, lock file) of a layer, as ``index.LayerIndex`` names them."""
    index = where.index_file(layer)
    return index, index.with_suffix(".json"), index.with_suffix(".lock")


def same_path(a: Path, b: Path | None) -> bool:
    """Whether ``a`` and ``b`` name the same file (``b`` None: no)."""
    return b is not None and os.path.abspath(a) == os.path.abspath(b)


def _members_and_staged_paths() -> dict[str, str]:
    staged = {DB_MEMBER: "magray.db", CONFIG_MEMBER: "config.toml"}
    for layer in LAYERS:
        index, sidecar = index_members(layer)
        staged[index] = f"indexes/{layer}.usearch"
        staged[sidecar] = f"indexes/{layer}.json"
    return staged


# Archive member name -> path inside a staging directory. Restore writes only these paths:
# member names are looked up here, never joined onto a directory.
STAGED = _members_and_staged_paths()
