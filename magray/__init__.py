"""magray: personal knowledge memory in the terminal. Store notes; find them by meaning.

The public API is ``Memory`` plus the record types and errors. Heavy dependencies
(torch, sentence-transformers, usearch) load only when a command needs them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .version import __version__

# ONNX Runtime keeps a telemetry device id under ~/.cache/Microsoft, outside magray's own
# directories, unless telemetry is off; set before anything can load it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .errors import (BusyError, ConfigError, InputError, IntegrityError, MagrayError,
                     ModelError, ModelMismatchError, NotFoundError)
from .records import LAYERS, Filters, Hit, NewRecord, Record, Stored, Trashed

if TYPE_CHECKING:
    from .memory import Memory


def __getattr__(name: str):
    if name == "Memory":  # imported on first use: it pulls in numpy
        from .memory import Memory

        return Memory
    raise AttributeError(name)


__all__ = ["Memory", "Record", "Hit", "Stored", "Trashed", "NewRecord", "Filters", "LAYERS",
           "MagrayError", "InputError", "ConfigError", "ModelError", "ModelMismatchError",
           "BusyError", "IntegrityError", "NotFoundError", "__version__"]
