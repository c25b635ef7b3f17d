"""Maintenance: compact the indexes, prune orphans, VACUUM; re-embed after a model change.

Re-embedding is the one lifecycle task that loads the model. New vectors wait in
``records.pending_embedding`` (migration m002) until every record has one, then replace the
old ones in a single transaction together with the recorded model and dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping


from . import files
from .errors import IntegrityError, ModelMismatchError
from .records import LAYERS, content_hash

if TYPE_CHECKING:
    from .config import Settings
    from .db.base import Repository
    from .embedding import Embedder
    from .encoder import Encoder
    from .index import Indexes

Progress = Callable[[int], None]
REEMBED_BATCH = 256  # records re-embedded per committed transaction


# -- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compaction:
    """One layer's index rebuilt from the stored vectors."""

    layer: str
    records: int
    before_bytes: int
    after_bytes: int
    was: str  # the index's state before: "in step", or why it was not

    def to_dict(self) -> dict:
        return {"layer": self.layer, "records": self.records, "before_bytes": self.before_bytes,
                "after_bytes": self.after_bytes, "was": self.was}


@dataclass(frozen=True)
class ReembedReport:
    model_key: str
    dim: int
    previous_key: str | None
    previous_dim: int | None
    embedded: int  # records embedded in this run
    resumed: int  # records an interrupted earlier run had already embedded

    def to_dict(self) -> dict:
        return {"model_key": self.model_key, "dim": self.dim, "previous_key": self.previous_key,
                "previous_dim": self.previous_dim, "embedded": self.embedded,
                "resumed": self.resumed}


@dataclass(frozen=True)
class OptimizeReport:
    indexes: tuple[Compaction, ...]
    database_before: int
    database_after: int
    fts: str  # "optimized", or "rebuilt" when it disagreed with the records
    orphans: Mapping[str, int] = field(default_factory=dict)
    reembed: ReembedReport | None = None

    def to_dict(self) -> dict:
        return {"indexes": [c.to_dict() for c in self.indexes],
                "database": {"before_bytes": self.database_before,
                             "after_bytes": self.database_after},
                "fts": self.fts, "orphans": dict(self.orphans),
                "reembed": self.reembed.to_dict() if self.reembed else None}


# -- optimize -------------------------------------------------------------------------------


def optimize(store: "Repository", indexes: "Indexes", encoder: "Encoder",
             settings: "Settings", *, reembed: bool = False, progress: Progress | None = None
             ) -> OptimizeReport:
    """Re-embed (if asked), rebuild every layer index from the stored vectors, check it
    agrees with the database, prune orphans, optimize FTS, VACUUM and ANALYZE."""
    reembedded = reembed_all(store, encoder, progress=progress) if reembed else None
    from . import passages

    passages.upgrade(store, encoder)  # long records with one vector: every passage gets its own
    before = database_bytes(store)
    temp_files = _remove_temp_files(store, indexes, settings)
    compactions = tuple(_compact(indexes, layer) for layer in LAYERS) \
        if store.model_meta()[1] is not None else ()
    orphans = {"index_log": _prune_index_log(store, indexes),
               "embed_cache": _prune_foreign_cache(store), "temp_files": temp_files}
    fts = store.optimize_keywords()
    store.compact()
    return OptimizeReport(compactions, before, database_bytes(store), fts, orphans, reembedded)


def _compact(indexes: "Indexes", layer: str) -> Compaction:
    index = indexes.layer(layer)
    before = _size(index.path)
    was = index.staleness() or "in step"
    report = index.sync(rebuild=True)
    stale, count = index.staleness(), index.vector_count()
    if stale or report.count != count or not index.verify():
        raise IntegrityError(f"the {layer} index disagrees with the database after a rebuild "
                             f"({stale or f'{report.count} vs {count} records'})")
    return Compaction(layer, report.count, before, _size(index.path), was)


def _prune_index_log(store: "Repository", indexes: "Indexes") -> int:
    """Log rows every index has applied: needed by nobody."""
    pruned = 0
    for layer in LAYERS:
        state = indexes.layer(layer).state() if store.model_meta()[1] else None
        if state is None:
            continue
        pruned += store.prune_log(layer, state.seq)
    return pruned


def _prune_foreign_cache(store: "Repository") -> int:
    """Cached vectors of models this memory no longer uses can never be read again."""
    key = store.model_meta()[0]
    if key is None:
        return 0
    return store.keep_cache_of((f"{key}|document", f"{key}|query"))


def _remove_temp_files(store: "Repository", indexes: "Indexes", settings: "Settings") -> int:
    """Temporary files of writers that were killed before they could rename them."""
    from .locks import locked

    removed = 0
    for layer in LAYERS:
        index = indexes.layer(layer) if store.model_meta()[1] else None
        if index is None:
            continue
        with locked(index.lock_path, timeout=settings.busy_timeout):
            removed += files.remove_leftovers(index.path) + files.remove_leftovers(index.sidecar)
    return removed


def database_bytes(store: "Repository") -> int:
    return store.database_bytes()


def _size(path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# -- re-embedding ---------------------------------------------------------------------------


def reembed_all(store: "Repository", encoder: "Encoder", *, progress: Progress | None = None
                ) -> ReembedReport:
    """Re-embed every record with the configured model, in committed batches, then switch
    the memory to it in one transaction (new vectors, model and dimension together).

    New vectors wait in ``records.pending_embedding`` until the switch, so readers keep one
    consistent vector space throughout, a kill loses nothing, and a rerun for the same model
    (meta ``reembed_target``) continues where the last one stopped.
    """
    embedder = encoder.embedder
    target, (previous, previous_dim) = embedder.key, store.model_meta()
    pending_for = store.meta("reembed_target")
    if previous is None or previous == target:  # nothing stored, or nothing changed
        if pending_for is not None:  # an interrupted run for a model set back since
            store.restart_reembed(None)
        return ReembedReport(target, previous_dim or 0, previous, previous_dim, 0, 0)
    if pending_for != target:  # another model's leftovers, or a first run: start over
        store.restart_reembed(target)
    resumed = store.reembed_counts()[0]
    dim, embedded = embedder.dim, 0
    while True:
        while rows := store.unembedded(REEMBED_BATCH):
            _embed_batch(store, embedder, rows, target, dim)
            embedded += len(rows)
            if progress:
                progress(len(rows))
        if store.switch_vectors(embedder.name, target, dim):
            return ReembedReport(target, dim, previous, previous_dim, embedded, resumed)


def pending_reembed(store: "Repository", encoder: "Encoder") -> int:
    """Records a re-embedding still has to embed (for a progress bar's total); the model
    is not loaded to find out."""
    recorded, target = store.model_meta()[0], encoder.embedder.key
    pending_for = store.meta("reembed_target")
    if recorded is None or recorded == target:
        return 0
    done, left = store.reembed_counts()
    return left if pending_for == target else done + left


def _embed_batch(store: "Repository", embedder: "Embedder", rows: list[tuple[int, str]],
                 target: str, dim: int) -> None:
    texts = [text for _, text in rows]
    digests = [content_hash(t) for t in texts]
    cached, _ = store.cached_vectors(f"{target}|document", digests, dim)
    missing = [t for t, d in zip(texts, digests) if d not in cached]
    fresh = dict(zip(missing, embedder.embed_documents(missing))) if missing else {}
    vectors = [cached[d] if d in cached else fresh[t] for t, d in zip(texts, digests)]
    if any(v.shape != (dim,) for v in vectors):
        raise ModelMismatchError(f"the model {target} made vectors of another size than its "
                                 f"{dim} dimensions")
    store.stage_vectors([(record_id, text, v) for (record_id, text), v in zip(rows, vectors)])
