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
from .records import NewRecord

if TYPE_CHECKING:
    from .memory import Memory

NEAR_CANDIDATES = 4  # nearest stored records checked exactly for a near-duplicate


@dataclass(frozen=True)
class Join:
    """A new text that will merge into a near-identical record: a stored one (``record``)
    or one created earlier in the same batch (``item``, its position in the batch)."""

    similarity: float
    record: int | None = None
    item: int | None = None


def near_duplicates(memory: "Memory", batch: Sequence[NewRecord],
                    vectors: Mapping[str, np.ndarray]) -> dict[int, Join]:
    """Which new texts of a batch merge into a near-identical record of their layer
    (settings near_duplicate_merge and near_duplicate_similarity), by batch position."""
    settings = memory.settings
    if not settings.near_duplicate_merge or not vectors:
        return {}
    threshold = settings.near_duplicate_similarity
    joins: dict[int, Join] = {}
    for layer in sorted({item.layer for item in batch}):
        positions, seen = [], set()
        for n, item in enumerate(batch):
            if item.layer == layer and item.text in vectors and item.text not in seen:
                seen.add(item.text)  # a repeat within the batch is an exact duplicate
                positions.append(n)
        if not positions:
            continue
        matrix = np.stack([vectors[batch[n].text] for n in positions])
        stored = _nearest_stored(memory, layer, matrix, [batch[n].text for n in positions],
                                 threshold)
        fresh: list[int] = []  # positions that will become new records
        for row, n in enumerate(positions):
            if stored[row] is not None:
                joins[n] = Join(stored[row][1], record=stored[row][0])
                continue
            earlier = _nearest_fresh(batch, matrix, positions, fresh, row, threshold)
            if earlier is not None:
                joins[n] = Join(earlier[1], item=earlier[0])
            else:
                fresh.append(row)
    return joins


def _nearest_stored(memory: "Memory", layer: str, matrix: np.ndarray, texts: list[str],
                    threshold: float) -> list[tuple[int, float] | None]:
    """For each vector, the most similar stored record of the layer at ``threshold`` or
    closer that it may merge with (similarities recomputed exactly from stored vectors)."""
    none: list[tuple[int, float] | None] = [None] * len(matrix)
    if memory.db.count(layer) == 0:
        return none
    view = memory.index(layer).open_view()
    if view is None:
        return none
    found = search_many(view, matrix, NEAR_CANDIDATES)
    wanted = sorted({key for row in found for key, sim in row if sim >= threshold - 0.01})
    if not wanted:
        return none
    keys, vectors = memory.db.vectors(wanted, memory.dim)
    stored = dict(zip(keys.tolist(), vectors))
    old_texts = dict(memory.db.conn.execute(
        f"SELECT id, text FROM records WHERE id IN ({', '.join('?' * len(wanted))})",
        wanted).fetchall())
    result = list(none)
    for row, candidates in enumerate(found):
        best = None
        for key, _ in candidates:
            if key not in stored:
                continue
            sim = float(stored[key] @ matrix[row])
            if sim >= threshold and (best is None or sim > best[1]) \
                    and may_merge(texts[row], old_texts[key]):
                best = (key, sim)
        result[row] = best
    return result


def _nearest_fresh(batch: Sequence[NewRecord], matrix: np.ndarray, positions: list[int],
                   fresh: list[int], row: int, threshold: float) -> tuple[int, float] | None:
    """The most similar new record earlier in the batch, if it is a near-duplicate."""
    if not fresh:
        return None
    sims = matrix[fresh] @ matrix[row]
    for best in np.argsort(-sims, kind="stable"):
        if sims[best] < threshold:
            return None
        earlier = positions[fresh[best]]
        if may_merge(batch[positions[row]].text, batch[earlier].text):
            return earlier, float(sims[best])
    return None


