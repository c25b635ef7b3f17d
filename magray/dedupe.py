"""Near-duplicates: a new text whose embedding is within near_duplicate_similarity of a
record of its layer merges into that record instead of becoming a near-twin of it.

Stored records are found through the layer's index and re-scored exactly from their stored
vectors; texts of the same batch are compared with each other directly. ``layers.may_merge``
vetoes pairs that differ in a number, an identifier or a negation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from .layers import may_merge
from .lifecycle import search_many
from .records import NewRecord, Stored

if TYPE_CHECKING:
    from usearch.index import Index

    from .memory import Memory

NEAR_CANDIDATES = 4  # nearest indexed records checked exactly for a near-duplicate
REFRESH_AFTER = 4096  # records a store call adds before it re-opens the layer's index


@dataclass(frozen=True)
class Join:
    """A new text that will merge into a near-identical record: a stored one (``record``)
    or one created earlier in the same batch (``item``, its position in the batch)."""

    similarity: float
    record: int | None = None
    item: int | None = None


class NearDuplicates:
    """Near-duplicate lookups for one ``Memory.store`` call.

    Each layer's index is opened once, at the call's first batch for it; the records the
    call itself adds afterwards are compared exactly, from their vectors in memory. A long
    import so pays for an index sync only every ``REFRESH_AFTER`` new records, not every
    batch. Records other processes store meanwhile are seen at the next refresh (their
    exact repeats are caught by the database in any case).
    """

    def __init__(self, memory: "Memory"):
        self.memory = memory
        self.enabled = bool(memory.settings.near_duplicate_merge)
        self.threshold = float(memory.settings.near_duplicate_similarity)
        self._views: dict[str, "Index | None"] = {}
        self._added: dict[str, list[tuple[int, str, np.ndarray]]] = {}

    def find(self, batch: Sequence[NewRecord], vectors: Mapping[str, np.ndarray]
             ) -> dict[int, Join]:
        """Which new texts of a batch merge into a near-identical record of their layer,
        by batch position."""
        if not self.enabled or not vectors:
            return {}
        joins: dict[int, Join] = {}
        for layer in sorted({item.layer for item in batch}):
            positions, seen = [], set()
            for n, item in enumerate(batch):
                if item.layer == layer and item.text in vectors and item.text not in seen:
                    seen.add(item.text)  # a repeat within the batch is an exact duplicate
                    positions.append(n)
            if positions:
                joins.update(self._layer_joins(layer, batch, positions, vectors))
        return joins

    def added(self, batch: Sequence[NewRecord], vectors: Mapping[str, np.ndarray],
              results: Sequence[Stored]) -> None:
        """Remember the records a batch created, for the batches after it."""
        if not self.enabled:
            return
        for item, stored in zip(batch, results):
            if not stored.duplicate and item.text in vectors:
                self._added.setdefault(item.layer, []).append(
                    (stored.id, item.text, vectors[item.text]))

    def _layer_joins(self, layer: str, batch: Sequence[NewRecord], positions: list[int],
                     vectors: Mapping[str, np.ndarray]) -> dict[int, Join]:
        matrix = np.stack([vectors[batch[n].text] for n in positions])
        stored = self._nearest_stored(layer, matrix, [batch[n].text for n in positions])
        joins: dict[int, Join] = {}
        fresh: list[int] = []  # rows that will become new records
        sims = matrix @ matrix.T
        for row, n in enumerate(positions):
            if stored[row] is not None:
                joins[n] = Join(stored[row][1], record=stored[row][0])
                continue
            earlier = _nearest_fresh(batch, sims, positions, fresh, row, self.threshold)
            if earlier is not None:
                joins[n] = Join(earlier[1], item=earlier[0])
            else:
                fresh.append(row)
        return joins

    def _nearest_stored(self, layer: str, matrix: np.ndarray, texts: list[str]
                        ) -> list[tuple[int, float] | None]:
        """For each vector, the most similar stored record of the layer at the threshold or
        closer that it may merge with (similarities computed exactly)."""
        candidates = self._candidates(layer, matrix)
        result: list[tuple[int, float] | None] = []
        for row, found in enumerate(candidates):
            best = None
            for key, (text, vector) in found.items():
                sim = float(vector @ matrix[row])
                if sim >= self.threshold and (best is None or sim > best[1]) \
                        and may_merge(texts[row], text):
                    best = (key, sim)
            result.append(best)
        return result

    def _candidates(self, layer: str, matrix: np.ndarray
                    ) -> list[dict[int, tuple[str, np.ndarray]]]:
        """Per vector: id -> (text, vector) of the records that may be near it: the nearest
        in the layer's index, and any this call added since it opened that index."""
        if len(self._added.get(layer, ())) > REFRESH_AFTER:
            self._views.pop(layer)
            self._added.pop(layer)
        if layer not in self._views:
            empty = self.memory.db.count(layer) == 0
            self._views[layer] = None if empty else self.memory.index(layer).open_view()
        view = self._views[layer]
        found = search_many(view, matrix, NEAR_CANDIDATES) if view is not None \
            else [[] for _ in range(len(matrix))]
        margin = self.threshold - 0.01  # index distances may be approximate (f16)
        stored = self._stored(layer, sorted({k for row in found for k, sim in row
                                             if sim >= margin}))
        rows = [{k: stored[k] for k, sim in row if k in stored} for row in found]
        added = self._added.get(layer)
        if added:
            sims = np.stack([v for _, _, v in added]) @ matrix.T
            for row, column in enumerate(sims.T):
                for i in np.flatnonzero(column >= margin):
                    rows[row][added[i][0]] = (added[i][1], added[i][2])
        return rows

    def _stored(self, layer: str, ids: list[int]) -> dict[int, tuple[str, np.ndarray]]:
        """Text and vector of those ``ids`` still in ``layer``."""
        if not ids:
            return {}
        keys, vectors = self.memory.db.vectors(ids, self.memory.dim)
        texts = dict(self.memory.db.among(ids, "id, text", "layer = ?", (layer,)).fetchall())
        return {k: (texts[k], v) for k, v in zip(keys.tolist(), vectors) if k in texts}


def _nearest_fresh(batch: Sequence[NewRecord], sims: np.ndarray, positions: list[int],
                   fresh: list[int], row: int, threshold: float) -> tuple[int, float] | None:
    """The most similar new record earlier in the batch, if it is a near-duplicate
    (``sims``: the batch's texts' similarities to each other)."""
    if not fresh:
        return None
    rows = np.asarray(fresh)
    close = rows[sims[row, rows] >= threshold]
    for sim, earlier_row in sorted(zip(sims[row, close].tolist(), close.tolist()), reverse=True):
        earlier = positions[earlier_row]
        if may_merge(batch[positions[row]].text, batch[earlier].text):
            return earlier, sim
    return None
