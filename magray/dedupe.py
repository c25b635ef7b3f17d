"""Near-duplicates: texts whose embeddings are within near_duplicate_similarity of each
other in the same layer. They are never merged away when stored: a new text that closely
resembles a record is stored as its own record and the resemblance is reported, and
``magray duplicates`` lists the clusters for a person to review (and merge, explicitly).

Stored records are found through the layer's index and re-scored exactly from their stored
vectors; texts of the same batch are compared with each other directly. Texts the model
cannot really read (mostly unknown tokens: emoji, scripts outside its vocabulary, control
characters) all embed to about the same vector, so they are never judged near-duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from . import clock
from .errors import InputError, NotFoundError
from .layers import join
from .index import search_many
from .records import NewRecord, Record, Stored

if TYPE_CHECKING:
    from usearch.index import Index

    from .config import Settings
    from .db.base import Repository
    from .embedding import Embedder
    from .encoder import Encoder
    from .index import Indexes

NEAR_CANDIDATES = 4  # nearest indexed records checked exactly for a near-duplicate
REFRESH_AFTER = 4096  # records a store call adds before it re-opens the layer's index
REFRESH_BYTES = 4 << 20  # ... or sooner, once their vectors take this much memory
UNREADABLE_SHARE = 0.5  # share of unknown tokens at which the model cannot read a text
CLUSTER_CHUNK = 4096  # records whose vectors are read (and searched) at once


@dataclass(frozen=True)
class Near:
    """A new text that closely resembles a stored record (``record``) or a text stored
    earlier in the same batch (``item``, its position in the batch)."""

    similarity: float
    record: int | None = None
    item: int | None = None


@dataclass(frozen=True)
class Cluster:
    """Records of one layer that are near-duplicates of each other (linked pairwise at the
    threshold or closer); ``similarity`` is the closest pair's."""

    layer: str
    similarity: float
    records: tuple[Record, ...]

    def to_dict(self) -> dict:
        return {"layer": self.layer, "similarity": round(self.similarity, 6),
                "ids": [r.id for r in self.records],
                "records": [r.to_dict() for r in self.records]}


@dataclass(frozen=True)
class Merged:
    """What ``Memory.merge_duplicates`` did: ``kept`` holds the joined metadata; the
    ``merged`` records went to the trash (``magray trash restore`` brings them back)."""

    kept: Record
    merged: tuple[Record, ...]

    def to_dict(self) -> dict:
        return {"kept": self.kept.to_dict(), "trashed": [r.id for r in self.merged]}


# -- what the model can read ------------------------------------------------------------------


def unreadable(embedder: "Embedder", texts: Sequence[str]) -> list[bool]:
    """For each text, whether the model sees mostly unknown tokens in it (or none at all),
    measured with the model's own tokenizer. Models without a tokenizer.json beside them
    (or the test suite's fake) read everything."""
    source = getattr(embedder, "source", None)
    tokenizer = _tokenizer(str(source)) if source else None
    if tokenizer is None:
        return [False] * len(texts)
    unknown = tokenizer.token_to_id(tokenizer.model.unk_token) \
        if hasattr(tokenizer.model, "unk_token") else None
    result = []
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        ids = encoding.ids
        result.append(not ids or (unknown is not None
                                  and ids.count(unknown) >= UNREADABLE_SHARE * len(ids)))
    return result


@lru_cache(maxsize=4)
def _tokenizer(source: str) -> Any:
    path = Path(source) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


# -- at store time ----------------------------------------------------------------------------


class NearDuplicates:
    """Near-duplicate lookups for one ``Memory.store`` call.

    Each layer's index is opened once, at the call's first batch for it; the records the
    call itself adds afterwards are compared exactly, from their vectors in memory. A long
    import so pays for an index sync only every ``REFRESH_AFTER`` new records, not every
    batch. Records other processes store meanwhile are seen at the next refresh.
    """

    def __init__(self, store: "Repository", indexes: "Indexes", encoder: "Encoder",
                 settings: "Settings"):
        self.store, self.indexes, self.encoder = store, indexes, encoder
        self.threshold = float(settings.near_duplicate_similarity)
        self._views: dict[str, "Index | None"] = {}
        self._added: dict[str, _Added] = {}

    def find(self, batch: Sequence[NewRecord], vectors: Mapping[str, np.ndarray]
             ) -> dict[int, Near]:
        """Which new texts of a batch closely resemble a record of their layer (or an
        earlier text of the batch), by batch position."""
        if not vectors:
            return {}
        texts = [t for t in dict.fromkeys(i.text for i in batch) if t in vectors]
        blind = {t for t, bad in zip(texts, unreadable(self.encoder.embedder, texts)) if bad}
        found: dict[int, Near] = {}
        for layer in sorted({item.layer for item in batch}):
            positions, seen = [], set()
            for n, item in enumerate(batch):
                if item.layer == layer and item.text in vectors and item.text not in seen \
                        and item.text not in blind:
                    seen.add(item.text)  # a repeat within the batch is an exact duplicate
                    positions.append(n)
            if positions:
                found.update(self._layer_near(layer, batch, positions, vectors))
        return found

    def added(self, batch: Sequence[NewRecord], vectors: Mapping[str, np.ndarray],
              results: Sequence[Stored]) -> None:
        """Remember the records a batch created, for the batches after it."""
        for item, stored in zip(batch, results):
            if not stored.duplicate and item.text in vectors:
                vector = vectors[item.text]
                added = self._added.setdefault(item.layer, _Added(len(vector)))
                added.append(stored.id, item.text, vector)

    def _layer_near(self, layer: str, batch: Sequence[NewRecord], positions: list[int],
                    vectors: Mapping[str, np.ndarray]) -> dict[int, Near]:
        matrix = np.stack([vectors[batch[n].text] for n in positions])
        stored = self._nearest_stored(layer, matrix)
        found: dict[int, Near] = {}
        sims = matrix @ matrix.T
        for row, n in enumerate(positions):
            earlier = _nearest_earlier(sims, positions, row, self.threshold)
            best = stored[row]
            if earlier is not None and (best is None or earlier[1] > best[1]):
                found[n] = Near(earlier[1], item=earlier[0])
            elif best is not None:
                found[n] = Near(best[1], record=best[0])
        return found

    def _nearest_stored(self, layer: str, matrix: np.ndarray
                        ) -> list[tuple[int, float] | None]:
        """For each vector, the most similar readable stored record of the layer at the
        threshold or closer (similarities computed exactly)."""
        candidates = self._candidates(layer, matrix)
        texts = list({t for found in candidates for t, _ in found.values()})
        blind = {t for t, bad in zip(texts, unreadable(self.encoder.embedder, texts)) if bad}
        result: list[tuple[int, float] | None] = []
        for row, found in enumerate(candidates):
            best = None
            for key, (text, vector) in found.items():
                sim = float(vector @ matrix[row])
                if sim >= self.threshold and text not in blind and (best is None
                                                                    or sim > best[1]):
                    best = (key, sim)
            result.append(best)
        return result

    def _candidates(self, layer: str, matrix: np.ndarray
                    ) -> list[dict[int, tuple[str, np.ndarray]]]:
        """Per vector: id -> (text, vector) of the records that may be near it: the nearest
        in the layer's index, and any this call added since it opened that index."""
        added = self._added.get(layer)
        if added is not None and added.full():
            self._views.pop(layer)
            self._added.pop(layer)
        if layer not in self._views:
            empty = self.store.count(layer) == 0
            self._views[layer] = None if empty else self.indexes.layer(layer).open_view()
        view = self._views[layer]
        found = search_many(view, matrix, NEAR_CANDIDATES) if view is not None \
            else [[] for _ in range(len(matrix))]
        margin = self.threshold - 0.01  # index distances may be approximate (f16)
        stored = _stored(self.store, self.encoder.dim, layer, sorted({k for row in found for k, sim in row
                                                     if sim >= margin}))
        rows = [{k: stored[k] for k, sim in row if k in stored} for row in found]
        added = self._added.get(layer)
        if added is not None and added.count:
            sims = added.vectors @ matrix.T
            best = np.argmax(sims, axis=0)  # the closest is the one that can be reported
            for row, i in enumerate(best.tolist()):
                if sims[i, row] >= margin:
                    rows[row][added.ids[i]] = (added.texts[i], added.vectors[i])
        return rows


class _Added:
    """The records one store call added to a layer since it opened the layer's index, with
    their vectors copied into one growing matrix (a row kept from the window's matrix would
    keep that whole window alive)."""

    def __init__(self, dim: int):
        self.ids: list[int] = []
        self.texts: list[str] = []
        self.limit = max(1, min(REFRESH_AFTER, REFRESH_BYTES // (4 * dim)))
        self._matrix = np.zeros((min(64, self.limit + 1), dim), dtype=np.float32)

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def vectors(self) -> np.ndarray:
        return self._matrix[:self.count]

    def full(self) -> bool:
        return self.count > self.limit

    def append(self, record_id: int, text: str, vector: np.ndarray) -> None:
        if self.count == len(self._matrix):
            size = len(self._matrix)  # doubling up to the limit; past it, by a batch
            rows = min(2 * size, self.limit + 1) if size <= self.limit else size + 256
            grown = np.zeros((rows, self._matrix.shape[1]), dtype=np.float32)
            grown[:self.count] = self._matrix
            self._matrix = grown
        self._matrix[self.count] = vector
        self.ids.append(record_id)
        self.texts.append(text)


def _stored(store: "Repository", dim: int, layer: str, ids: list[int]
            ) -> dict[int, tuple[str, np.ndarray]]:
    """Text and vector of those ``ids`` still in ``layer``."""
    if not ids:
        return {}
    keys, vectors = store.vectors(ids, dim)
    texts = store.texts(ids, layer)
    return {k: (texts[k], v) for k, v in zip(keys.tolist(), vectors) if k in texts}


def _nearest_earlier(sims: np.ndarray, positions: list[int], row: int, threshold: float
                     ) -> tuple[int, float] | None:
    """The most similar text earlier in the batch, if it is a near-duplicate (``sims``: the
    batch's texts' similarities to each other)."""
    if not row:
        return None
    column = sims[row, :row]
    best = int(np.argmax(column))
    return (positions[best], float(column[best])) if column[best] >= threshold else None


# -- review: ``magray duplicates`` -------------------------------------------------------------


def clusters(store: "Repository", indexes: "Indexes", encoder: "Encoder", layers: Sequence[str],
             threshold: float) -> list[Cluster]:
    """Clusters of near-duplicate records in each layer, closest first. Each record's
    nearest neighbours come from the layer's index and are re-scored exactly."""
    if store.model_meta()[1] is None:
        return []
    result: list[Cluster] = []
    for layer in layers:
        pairs = _layer_pairs(store, indexes, encoder, layer, threshold)
        result += _join(store, layer, pairs)
    result.sort(key=lambda c: (-c.similarity, c.records[0].id))
    return result


def _layer_pairs(store: "Repository", indexes: "Indexes", encoder: "Encoder", layer: str,
                 threshold: float
                 ) -> dict[tuple[int, int], float]:
    view = indexes.layer(layer).open_view()
    if view is None:
        return {}
    pairs: dict[tuple[int, int], float] = {}
    ids = store.layer_ids(layer)
    margin = threshold - 0.01  # index distances may be approximate (f16)
    for start in range(0, len(ids), CLUSTER_CHUNK):
        keys, vectors = store.vectors(ids[start:start + CLUSTER_CHUNK], encoder.dim)
        found = search_many(view, vectors, NEAR_CANDIDATES + 1)
        close = sorted({k for row in found for k, sim in row if sim >= margin})
        near = _stored(store, encoder.dim, layer, close)
        for key, vector, row in zip(keys.tolist(), vectors, found):
            for other, sim in row:
                if other != key and other in near and (exact := float(
                        near[other][1] @ vector)) >= threshold:
                    pairs[min(key, other), max(key, other)] = exact
    if not pairs:
        return {}
    texts = store.texts({i for p in pairs for i in p})
    order = list(texts)
    blind = {i for i, bad in zip(order, unreadable(encoder.embedder, [texts[i] for i in order])) if bad}
    return {p: s for p, s in pairs.items() if not blind & set(p)}


def _join(store: "Repository", layer: str, pairs: Mapping[tuple[int, int], float]
          ) -> list[Cluster]:
    """Union the pairs into clusters (a record is in at most one)."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.setdefault(i, i) != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[root(b)] = root(a)
    groups: dict[int, list[int]] = {}
    for i in sorted(parent):
        groups.setdefault(root(i), []).append(i)
    best: dict[int, float] = {}
    for (a, _), sim in pairs.items():
        best[root(a)] = max(best.get(root(a), 0.0), sim)
    records = store.records(list(parent))
    return [Cluster(layer, best[r], tuple(records[i] for i in members if i in records))
            for r, members in groups.items()]


def merge(store: "Repository", ids: Sequence[int]) -> Merged:
    """Join records of one layer into the first (``layers.join``: tags united, the highest
    importance, the accesses summed, the earliest creation and latest access; kind, project
    and session kept where the first has none). The others go to the trash, as merged into
    the first."""
    wanted = list(dict.fromkeys(ids))
    if len(wanted) < 2:
        raise InputError("ids: give at least two record ids (the first is kept)", param="ids")
    with store.write() as tx:
        found = store.records(wanted)
        NotFoundError.unless_all(wanted, found, "merged")
        group = [found[i] for i in wanted]
        if len({r.layer for r in group}) > 1:
            raise InputError("records of different layers cannot be merged; nothing was merged")
        kept = join(group, clock.now_iso())
        store.update_metadata(tx, kept)
        for record in group[1:]:
            store.trash(tx, record.id, "merged", kept.updated_at, merged_into=kept.id)
    return Merged(kept, tuple(group[1:]))
