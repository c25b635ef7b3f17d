"""The one fake embedder, shared by tests and scripts: deterministic bag-of-words vectors for
logic that is not about meaning (search quality is always tested with the real model)."""

from __future__ import annotations

import hashlib
import re

import numpy as np

from magray.embedding import Embedder


class FakeEmbedder(Embedder):
    """Deterministic bag-of-words vectors: for tests of logic that is not about meaning."""

    def __init__(self, dim: int = 128, name: str = "fake-bow"):
        self._dim = dim
        self.name = name
        self.calls = 0

    @property
    def dim(self) -> int:
        return self._dim

    def embed_documents(self, texts):
        self.calls += 1
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                digest = hashlib.md5(word.encode()).digest()
                out[row, digest[0] % self._dim] += 1.0 if digest[1] % 2 else -1.0
            seed = int.from_bytes(hashlib.md5(text.encode()).digest()[:4], "little")
            noise = np.random.default_rng(seed).standard_normal(self._dim)
            out[row] += 0.3 * noise / np.linalg.norm(noise)  # no two texts tie
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
