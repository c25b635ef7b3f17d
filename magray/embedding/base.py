"""What magray needs of an embedding model, and what every backend shares.

A leaf: it imports nothing from magray, so any module may name ``Embedder`` without
pulling in a backend.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

Warn = Callable[[str], None]


class Embedder(ABC):
    """What magray needs of a model: documents and queries in, normalised float32 out.

    ``name`` is recorded with the data; ``key`` names the vector space (it changes with
    truncation) and keys the embedding cache. A model implements ``dim`` and
    ``embed_documents``; the rest has defaults.
    """

    name: str = ""

    @property
    def key(self) -> str:
        return self.name

    @property
    @abstractmethod
    def dim(self) -> int:
        """The length of the vectors."""

    @abstractmethod
    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """One normalised float32 row per text."""

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """What this model's batching sorts texts by (longest first, to pad little):
        characters, as sentence-transformers does."""
        return [len(t) for t in texts]


def normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def usable_cores() -> int:
    """CPU cores this process may really use: affinity mask and cgroup quota, not the host."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def short(exc: BaseException) -> str:
    """An exception as one short line, for a warning."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
