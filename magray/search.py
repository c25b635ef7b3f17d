"""``Searcher``: find records by meaning (the layers' indexes, exact scoring for small
candidate sets), by words (FTS5 BM25), or both fused; and decide which hits count as an
access. Everything one search learns on its way lives in a ``_Call`` made for that search,
never on the long-lived Searcher."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from . import config
from .errors import InputError
from .ingest import check_layer
from .records import LAYERS, Filters, Hit, Passage, Record, SearchRequest
from .db.base import Op

if TYPE_CHECKING:
    from .encoder import Encoder
    from .index import Indexes
    from .db.store import Store

# Filtered candidate sets, and whole layers, of up to this many records are searched
# exactly: deterministic results, at ~1.5 ms a query for 20,000 vectors against ~0.3 ms for
# HNSW (scripts/exact_crossover.py), whose answer also depends on how the graph was built.
EXACT_LIMIT = 20_000
HYBRID_ALPHA = 0.85  # weight of meaning vs words in hybrid mode (scripts/eval_modes.py)
ACCESS_RANKS = 3  # a search hit below this rank is never counted as an access

Ranked = list[tuple[int, float]]


@dataclass
class _Call:
    """What one search gathers on its way: its timing, the records read while scoring
    (shown without a re-read), and each long record's best passage."""

    op: Op | None = None
    read: dict[int, Record] = field(default_factory=dict)
    matched: dict[int, Passage] = field(default_factory=dict)


class Searcher:
    """Search over one memory's store, indexes and encoder."""

    def __init__(self, store: "Store", encoder: "Encoder", indexes: "Indexes",
                 settings: "config.Settings"):
        self.store = store
        self.encoder = encoder
        self.indexes = indexes
        self.settings = settings

    def search(self, query: str, **options) -> list[Hit]:
        """Search by meaning (``mode='vector'``), by words (``'keyword'``) or both fused
        (``'hybrid'``, the default). Options are the fields of ``SearchRequest``."""
        # One read of the recorded model serves the whole search (a search never changes it).
        with self.encoder.pinned():
            return self._search(query, **options)

    def _search(self, query: str, **options) -> list[Hit]:
        options.setdefault("top_k", self.settings.top_k)
        options.setdefault("mode", self.settings.search_mode)
        request = SearchRequest(query=query, **options)
        _check_request(request)
        call = _Call(Op("search", time.perf_counter()))
        if request.by_doc:  # best passage per document: look wider, then keep the best
            from .documents import sources

            wide = self._find(replace(request, top_k=min(request.top_k * 5, 500)), call)
            hits = sources.best_per_document(wide, request.top_k)
        else:
            hits = self._find(request, call)
        if request.track:  # untracked searches write nothing, so they are not timed either
            call.op.items = len(hits)
            used = self.accessed(hits)
            self.store.touch(sorted(used), op=call.op)
            hits = [replace(h, record=replace(h.record, access_count=h.record.access_count + 1))
                    if h.record.id in used else h for h in hits]
        return hits

    def accessed(self, hits: Sequence[Hit]) -> set[int]:
        """The hits of a search that count as an access: those plausibly wanted, not every
        one shown. A hit counts when it ranks among the first ACCESS_RANKS and its cosine
        similarity to the query is at least the setting access_similarity; in keyword mode
        (no similarity) only the first hit counts. ``show`` always counts."""
        floor = self.settings.access_similarity
        if hits and all(h.similarity is None for h in hits):
            return {hits[0].record.id}
        return {h.record.id for h in hits[:ACCESS_RANKS]
                if h.similarity is not None and h.similarity >= floor}

    def nearest(self, qvec: np.ndarray, layers: Sequence[str], filters: Filters, n: int
                ) -> Ranked:
        """Top-n (id, cosine similarity) for a query vector: the vector half of a search."""
        return self._vector(qvec, layers, filters, n, _Call())

    def _find(self, request: SearchRequest, call: _Call) -> list[Hit]:
        layers = request.layers or LAYERS
        pool = max(request.top_k * 4, 40)
        sims: dict[int, float] | None = None
        if request.mode == "keyword":
            ranked = self._keyword(request.query, layers, request.filters, request.top_k * 2)
        else:
            self.encoder.check_model()
            if self.encoder.recorded_model()[1] is None:
                return []  # nothing was ever stored
            embed, loading = self.encoder.query_vector(request.query, call.op)
            # While a new query's encoder loads (it releases the GIL), do the work that does
            # not need the vector: keyword ranking, opening the indexes.
            keyword = (self._keyword(request.query, layers, request.filters, pool)
                       if request.mode == "hybrid" else [])
            if loading and not request.filters:
                for layer in layers:
                    self.indexes.layer(layer).view()
            qvec = embed()
            # Hybrid fusion needs a wide pool; vector mode ranks by the similarity it returns.
            wanted = pool if request.mode == "hybrid" else request.top_k
            ranked = self._vector(qvec, layers, request.filters, wanted, call)
            sims = dict(ranked)
            if request.mode == "hybrid":
                ranked, sims = self._fuse(qvec, ranked, keyword, call)
        return self._hits(ranked, sims, request, call)

    def _hits(self, ranked: Ranked, sims: dict[int, float] | None, request: SearchRequest,
              call: _Call) -> list[Hit]:
        """The first top_k ranked records that pass min_score (cosine similarity, or the
        keyword score when there is none); records not read yet are read only for those."""
        passing = [(i, score) for i, score in ranked if request.min_score is None
                   or (score if sims is None else sims.get(i, -2.0)) >= request.min_score]
        read = call.read
        hits: list[Hit] = []
        while passing and len(hits) < request.top_k:
            chunk, passing = (passing[:request.top_k - len(hits)],
                              passing[request.top_k - len(hits):])
            read.update(self.store.records([i for i, _ in chunk if i not in read]))
            hits += [Hit(read[i], score, None if sims is None else sims.get(i),
                         call.matched.get(i))
                     for i, score in chunk if i in read]  # deleted meanwhile: skipped
        from .documents import sources

        return sources.attach(self.store, hits)

    def _similarities(self, qvec: np.ndarray, ids: list[int], call: _Call) -> dict[int, float]:
        """Exact cosine similarities from the stored vectors of the ``ids`` that exist; their
        records are kept in the call."""
        records, vectors = self.store.records_and_vectors(ids, self.encoder.dim)
        call.read.update(records)
        return self._by_passage(qvec, dict(zip(records, (vectors @ qvec).astype(float).tolist())),
                                call)

    def _by_passage(self, qvec: np.ndarray, sims: dict[int, float], call: _Call
                    ) -> dict[int, float]:
        """A long record scores as its best passage (magray/passages.py)."""
        from . import passages

        best = passages.best(self.store, qvec, sims, self.encoder.dim)
        for record_id, (score, passage) in best.items():
            if score >= sims[record_id]:
                sims[record_id] = score
                call.matched[record_id] = passage
        return sims

    def _vector(self, qvec: np.ndarray, layers: Sequence[str], filters: Filters, n: int,
                call: _Call) -> Ranked:
        """Top-n (id, cosine similarity) over layers, with filters that never starve results:
        small filtered sets are searched exactly, large ones by widening the ANN search."""
        if filters:
            matching = self.store.filtered_ids(layers, filters, limit=EXACT_LIMIT + 1)
            if len(matching) <= EXACT_LIMIT:
                return self._exact(qvec, matching, n, call)
        found: dict[int, float] = {}
        for layer in layers:
            found.update(self._ann_layer(qvec, layer, filters, n, call))
        return sorted(found.items(), key=_best_first)[:n]

    def _ann_layer(self, qvec: np.ndarray, layer: str, filters: Filters, n: int, call: _Call
                   ) -> dict[int, float]:
        index = self.indexes.layer(layer)
        k = n * 4 if filters else n
        while True:
            # dict.fromkeys: a long record's id comes once per matching passage
            candidates = list(dict.fromkeys(key for key, _ in index.search(
                qvec, k, exact_up_to=EXACT_LIMIT, filters=filters)))
            total = index.size  # of the view just searched
            if filters:
                candidates = self.store.passing(candidates, layer, filters)
            # A record deleted since the view was opened is simply not scored. The next
            # view() sees the moved log head and replays the log: no rebuild (minutes at
            # a million vectors, under the layer lock) for a delete that raced a search.
            scored = self._similarities(qvec, candidates, call)
            if len(scored) >= n or k >= total:
                return scored
            k *= 4

    def _fuse(self, qvec: np.ndarray, vector: Ranked, keyword: Ranked, call: _Call
              ) -> tuple[Ranked, dict[int, float]]:
        """Hybrid ranking: HYBRID_ALPHA x cosine similarity + the rest x BM25 relative to the
        best keyword hit. Candidates from either list; every one scored on both."""
        bm25 = dict(keyword)
        top = max(bm25.values(), default=0.0) or 1.0
        ids = list(dict.fromkeys([i for i, _ in vector] + list(bm25)))
        sims = self._similarities(qvec, ids, call)
        fused = {i: HYBRID_ALPHA * sims[i] + (1 - HYBRID_ALPHA) * bm25.get(i, 0.0) / top
                 for i in ids if i in sims}
        return sorted(fused.items(), key=_best_first), sims

    def _exact(self, qvec: np.ndarray, ids: Sequence[int], n: int, call: _Call) -> Ranked:
        keys, vectors = self.store.vectors(ids, self.encoder.dim)
        if not len(keys):
            return []
        scored = self._by_passage(qvec, dict(zip(keys.tolist(), (vectors @ qvec).tolist())),
                                  call)
        return sorted(scored.items(), key=_best_first)[:n]

    def _keyword(self, query: str, layers: Sequence[str], filters: Filters, n: int) -> Ranked:
        return self.store.keyword_search(query, layers, filters, n)


def _best_first(item: tuple[int, float]) -> tuple[float, int]:
    """Sort key: higher score first, ties broken by the older (smaller) id."""
    return -item[1], item[0]


def _check_request(request: SearchRequest) -> None:
    if not request.query.strip():
        raise InputError("the search query is empty")
    if "\0" in request.query:
        raise InputError("the search query contains a NUL byte")
    if not 1 <= request.top_k <= 100:
        raise InputError(f"top_k must be from 1 to 100, got {request.top_k}", param="top_k")
    if request.mode not in config.MODES:
        raise InputError(f"mode must be one of {', '.join(config.MODES)}, got "
                         f"{request.mode!r}", param="mode")
    for layer in request.layers:
        check_layer(layer, "layers", param=True)
    if request.min_score is not None and not -1.0 <= request.min_score <= 1e9:
        raise InputError(f"min_score must be at least -1, got {request.min_score}",
                         param="min_score")
