"""Which file and lines each ingested record holds (the repository's ``sources``): search
results joined with them."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

from ..records import Hit

if TYPE_CHECKING:
    from ..db.base import Repository


def attach(store: "Repository", hits: Sequence[Hit]) -> list[Hit]:
    """The hits, each with its record's source where it has one."""
    if not hits:
        return list(hits)
    known = store.sources([h.record.id for h in hits])
    return [replace(h, source=known[h.record.id]) if h.record.id in known else h for h in hits]


def best_per_document(hits: Sequence[Hit], top_k: int) -> list[Hit]:
    """The best of ``hits`` (best first) for each file; records not made from a file are
    their own document."""
    kept: list[Hit] = []
    seen: set[str] = set()
    for hit in hits:
        key = hit.source.path if hit.source is not None else f"record:{hit.record.id}"
        if key not in seen:
            seen.add(key)
            kept.append(hit)
            if len(kept) == top_k:
                break
    return kept
