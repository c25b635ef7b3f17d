"""``Memory``: the library's front door. It wires the store, the indexes and the embedder.

    from magray import Memory
    with Memory.open() as memory:
        memory.store_texts(["use rg -uu to search ignored files"], tags=["shell"])
        for hit in memory.search("grep through gitignored files"):
            print(hit.score, hit.record.text)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from . import clock, config, paths
from .embedding import ConfiguredEmbedder, Embedder, default_model_roots
from .errors import InputError, ModelMismatchError
from .index import IndexSpec, LayerIndex, SyncReport
from .ingest import check_layer
from .records import (LAYERS, Filters, Hit, NewRecord, Record, SearchRequest, Stored,
                      content_hash)
from .store import Store, VectorNeeded, fts_query

Progress = Callable[[int], None]
MODES = ("hybrid", "vector", "keyword")
EXACT_LIMIT = 20_000  # filtered candidate sets up to this size are searched exactly
HYBRID_ALPHA = 0.85  # weight of meaning vs words in hybrid mode (scripts/eval_modes.py)
STORE_BATCH = 256
STORE_WINDOW = 8192  # texts embedded together, longest first (little padding per batch)


class Memory:
    """An open personal memory: records in three layers, searchable by meaning."""

    def __init__(self, where: paths.Paths, settings: config.Settings, store: Store,
                 embedder: Embedder | None = None, warn: Callable[[str], None] | None = None):
        self.paths = where
        self.settings = settings
        self.db = store
        self.warn = warn or (lambda message: None)
        self._embedder = embedder
        self._indexes: dict[str, LayerIndex] = {}
        self._pinned_model: tuple[str | None, int | None] | None = None

    @classmethod
    def open(cls, home: str | Path | None = None, *, settings: config.Settings | None = None,
             embedder: Embedder | None = None, warn: Callable[[str], None] | None = None
             ) -> "Memory":
        """Open the memory under ``home`` (default: ``MAGRAY_HOME`` or the user directories)."""
        where = paths.resolve(home)
        settings = settings or config.load(where.config_file)
        where.ensure()
        store = Store.open(where.database, busy_timeout=settings.busy_timeout)
        return cls(where, settings, store, embedder, warn)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Memory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the model ------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            s = self.settings
            roots = default_model_roots(self.paths.data) + [Path(r) for r in s.model_roots]
            self._embedder = ConfiguredEmbedder(
                s.model, roots=roots, onnx_root=self.paths.data / "models" / "onnx",
                backend=s.backend, device=s.device, truncate_dim=s.truncate_dim,
                batch_size=s.batch_size, threads=s.threads, allow_download=s.allow_download,
                warn=self.warn)
        return self._embedder

    def recorded_model(self) -> tuple[str | None, int | None]:
        """(model key, dimension) the stored vectors were made with; (None, None) if none."""
        if self._pinned_model is not None:
            return self._pinned_model
        dim = self.db.meta("dim")
        return self.db.meta("model_key"), int(dim) if dim else None

    def check_model(self) -> None:
        """Refuse to mix vector spaces: the configured model must be the recorded one."""
        key, dim = self.recorded_model()
        if key is not None and key != self.embedder.key:
            raise ModelMismatchError(
                f"this memory was embedded with {key} ({dim} dimensions) but the configured "
                f"model is {self.embedder.key}; run `magray optimize --reembed` to re-embed it, "
                "or set the model back")

    @property
    def dim(self) -> int:
        return self.recorded_model()[1] or self.embedder.dim

    def index(self, layer: str) -> LayerIndex:
        """The layer's index, kept for the life of this Memory: it holds its memory-mapped
        view between searches and re-checks freshness cheaply."""
        s = self.settings
        spec = IndexSpec(dim=self.dim, dtype=s.index_dtype, m=s.hnsw_m,
                         ef_construction=s.hnsw_ef_construction)
        index = self._indexes.get(layer)
        if index is None or index.spec != spec:
            index = self._indexes[layer] = LayerIndex(
                self.paths.indexes, layer, spec, self.db, ef_search=s.hnsw_ef_search,
                lock_timeout=s.busy_timeout)
        return index

    def sync(self, layers: Iterable[str] = LAYERS, *, rebuild: bool = False) -> list[SyncReport]:
        """Bring the layers' indexes in step with the database."""
        if self.recorded_model()[1] is None:
            return []
        return [self.index(layer).sync(rebuild=rebuild) for layer in layers]

    def _vectors(self, texts: Sequence[str], role: str) -> np.ndarray:
        """Embeddings for texts, through the persistent cache; misses are embedded once."""
        model = f"{self.embedder.key}|{role}"
        digests = [content_hash(t) for t in texts]
        dim = self.recorded_model()[1]
        cached = self.db.cached_vectors(model, digests, dim) if dim else {}
        missing = sorted({d: t for d, t in zip(digests, texts) if d not in cached}.items())
        if missing:
            embed = (self.embedder.embed_query if role == "query" else None)
            fresh = (np.stack([embed(t) for _, t in missing]) if embed else
                     self.embedder.embed_documents([t for _, t in missing]))
            if dim and fresh.shape[1] != dim:
                raise ModelMismatchError(
                    f"the configured model makes {fresh.shape[1]}-dimensional vectors but this "
                    f"memory holds {dim}-dimensional ones; run `magray optimize --reembed`")
            new = {d: v for (d, _), v in zip(missing, fresh)}
            with self.db.write() as conn:
                self._record_model(conn, fresh.shape[1])
                self.db.cache_vectors(conn, model, new.items(), clock.now_iso())
            cached.update(new)
        return np.stack([cached[d] for d in digests]) if digests else np.zeros((0, dim or 0))

    def _record_model(self, conn, dim: int) -> None:
        if self.db.meta("model_key") is None:
            self.db.set_meta(conn, "model", self.embedder.name)
            self.db.set_meta(conn, "model_key", self.embedder.key)
            self.db.set_meta(conn, "dim", str(dim))

    # -- storing --------------------------------------------------------------------------

    def store(self, items: Sequence[NewRecord], *, progress: Progress | None = None
              ) -> list[Stored]:
        """Store validated records; the same text in the same layer is counted as an access
        of the existing record instead of being stored twice."""
        self.check_model()
        results: list[Stored] = []
        for start in range(0, len(items), STORE_WINDOW):
            results += self._store_window(items[start:start + STORE_WINDOW], progress)
        self.sync(sorted({r.layer for r in results}))
        return results

    def store_texts(self, texts: Sequence[str], **fields) -> list[Stored]:
        """Convenience: store plain texts with shared metadata (layer, tags, project...)."""
        from .ingest import from_args

        fields["tags"] = tuple(fields.get("tags", ()))
        template = NewRecord(text="", **fields)
        check_layer(template.layer)
        return self.store(from_args(texts, template, self.settings.max_text_bytes))

    def _store_window(self, window: Sequence[NewRecord], progress: Progress | None
                      ) -> list[Stored]:
        known = {layer: self.db.existing(layer, [i.content_hash for i in window
                                                 if i.layer == layer])
                 for layer in {i.layer for i in window}}
        need = list(dict.fromkeys(i.text for i in window if i.content_hash not in known[i.layer]))
        vectors = self._embed_longest_first(need, progress)
        results: list[Stored] = []
        for start in range(0, len(window), STORE_BATCH):
            batch = window[start:start + STORE_BATCH]
            while True:
                try:
                    results += self._insert(batch, vectors)
                    break
                except VectorNeeded as missing:  # a duplicate's original was deleted meanwhile
                    text = str(missing)
                    vectors[text] = self._vectors([text], "document")[0]
        if progress and len(window) > len(need):
            progress(len(window) - len(need))
        return results

    def _embed_longest_first(self, texts: Sequence[str], progress: Progress | None
                             ) -> dict[str, np.ndarray]:
        """Vectors for texts, in batches of similar length (as a raw model.encode sorts
        them), with a progress tick per batch."""
        ordered = sorted(texts, key=len, reverse=True)
        vectors: dict[str, np.ndarray] = {}
        for start in range(0, len(ordered), STORE_BATCH):
            chunk = ordered[start:start + STORE_BATCH]
            vectors.update(zip(chunk, self._vectors(chunk, "document")))
            if progress:
                progress(len(chunk))
        return vectors

    def _insert(self, batch: Sequence[NewRecord], vectors: dict[str, np.ndarray]) -> list[Stored]:
        when = clock.now_iso()
        results = []
        with self.db.write() as conn:
            for item in batch:
                record_id, duplicate = self.db.insert(conn, item, vectors.get(item.text), when)
                results.append(Stored(record_id, item.layer, duplicate))
        return results

    # -- searching ------------------------------------------------------------------------

    def search(self, query: str, **options) -> list[Hit]:
        """Search by meaning (``mode='vector'``), by words (``'keyword'``) or both fused
        (``'hybrid'``, the default). Options are the fields of ``SearchRequest``."""
        # One read of the recorded model serves the whole search (a search never changes it).
        self._pinned_model = None
        self._pinned_model = self.recorded_model()
        try:
            return self._search(query, **options)
        finally:
            self._pinned_model = None

    def _search(self, query: str, **options) -> list[Hit]:
        options.setdefault("top_k", self.settings.top_k)
        options.setdefault("mode", self.settings.search_mode)
        request = SearchRequest(query=query, **options)
        _check_request(request)
        layers = request.layers or LAYERS
        pool = max(request.top_k * 4, 40)
        sims: dict[int, float] | None = None
        if request.mode == "keyword":
            ranked = self._keyword(request.query, layers, request.filters, request.top_k * 2)
        else:
            self.check_model()
            if self.recorded_model()[1] is None:
                return []  # nothing was ever stored
            embed, loading = self._query_vector(request.query)
            # While a new query's encoder loads (it releases the GIL), do the work that does
            # not need the vector: keyword ranking, opening the indexes.
            keyword = (self._keyword(request.query, layers, request.filters, pool)
                       if request.mode == "hybrid" else [])
            if loading and not request.filters:
                for layer in layers:
                    self.index(layer).view()
            qvec = embed()
            ranked = self._vector(qvec, layers, request.filters, pool)
            sims = dict(ranked)
            if request.mode == "hybrid":
                ranked, sims = self._fuse(qvec, ranked, keyword)
        hits = self._hits(ranked, sims, request)
        if request.track:
            self.db.touch([h.record.id for h in hits])
            hits = [replace(h, record=replace(h.record, access_count=h.record.access_count + 1))
                    for h in hits]
        return hits

    def _query_vector(self, query: str) -> tuple[Callable[[], np.ndarray], bool]:
        """(a function giving the query's vector, whether an encoder is needed): the vector
        comes at once from the cache, or from the encoder, which starts loading now."""
        dim = self.recorded_model()[1]
        model = f"{self.embedder.key}|query"
        cached = self.db.cached_vectors(model, [content_hash(query)], dim) if dim else {}
        if cached:
            vector = next(iter(cached.values()))
            return (lambda: vector), False
        prepare = getattr(self.embedder, "prepare_query", None)
        if prepare:
            prepare()
        return (lambda: self._vectors([query], "query")[0]), True

    def _hits(self, ranked: list[tuple[int, float]], sims: dict[int, float] | None,
              request: SearchRequest) -> list[Hit]:
        """The first top_k ranked records that pass min_score (cosine similarity, or the
        keyword score when there is none); records are read only for those."""
        passing = [(i, score) for i, score in ranked if request.min_score is None
                   or (score if sims is None else sims.get(i, -2.0)) >= request.min_score]
        hits: list[Hit] = []
        while passing and len(hits) < request.top_k:
            chunk, passing = (passing[:request.top_k - len(hits)],
                              passing[request.top_k - len(hits):])
            records = self.db.records([i for i, _ in chunk])
            hits += [Hit(records[i], score, None if sims is None else sims.get(i))
                     for i, score in chunk if i in records]  # deleted meanwhile: skipped
        return hits

    def _similarities(self, qvec: np.ndarray, ids: list[int]) -> dict[int, float]:
        keys, vectors = self.db.vectors(ids, self.dim)
        return dict(zip(keys.tolist(), (vectors @ qvec).astype(float).tolist()))

    def _vector(self, qvec: np.ndarray, layers: Sequence[str], filters: Filters, n: int
                ) -> list[tuple[int, float]]:
        """Top-n (id, cosine similarity) over layers, with filters that never starve results:
        small filtered sets are searched exactly, large ones by widening the ANN search."""
        if filters:
            matching = self.db.filtered_ids(layers, filters, limit=EXACT_LIMIT + 1)
            if len(matching) <= EXACT_LIMIT:
                return self._exact(qvec, matching, n)
        found: dict[int, float] = {}
        for layer in layers:
            found.update(self._ann_layer(qvec, layer, filters, n))
        return sorted(found.items(), key=lambda kv: -kv[1])[:n]

    def _ann_layer(self, qvec: np.ndarray, layer: str, filters: Filters, n: int
                   ) -> dict[int, float]:
        index = self.index(layer)
        k = n * 4 if filters else n
        while True:
            candidates = [key for key, _ in index.search(qvec, k)]
            total = index.size  # of the view just searched
            if filters:
                candidates = self._passing(candidates, layer, filters)
            scored = self._similarities(qvec, candidates)
            if len(scored) < len(candidates):  # the index named a record the database lacks
                index.sync(rebuild=True)
                continue
            if len(scored) >= n or k >= total:
                return scored
            k *= 4

    def _passing(self, ids: list[int], layer: str, filters: Filters) -> list[int]:
        from .store import filter_sql

        if not ids:
            return []
        where, params = filter_sql([layer], filters)
        marks = ", ".join("?" * len(ids))
        rows = self.db.conn.execute(f"SELECT id FROM records WHERE {where} AND id IN ({marks})",
                                    (*params, *ids))
        return [r[0] for r in rows]

    def _fuse(self, qvec: np.ndarray, vector: list[tuple[int, float]],
              keyword: list[tuple[int, float]]
              ) -> tuple[list[tuple[int, float]], dict[int, float]]:
        """Hybrid ranking: HYBRID_ALPHA x cosine similarity + the rest x BM25 relative to the
        best keyword hit. Candidates from either list; every one scored on both."""
        bm25 = dict(keyword)
        top = max(bm25.values(), default=0.0) or 1.0
        ids = list(dict.fromkeys([i for i, _ in vector] + list(bm25)))
        sims = self._similarities(qvec, ids)
        fused = {i: HYBRID_ALPHA * sims[i] + (1 - HYBRID_ALPHA) * bm25.get(i, 0.0) / top
                 for i in ids if i in sims}
        return sorted(fused.items(), key=lambda kv: -kv[1]), sims

    def _exact(self, qvec: np.ndarray, ids: Sequence[int], n: int) -> list[tuple[int, float]]:
        keys, vectors = self.db.vectors(ids, self.dim)
        if not len(keys):
            return []
        scores = vectors @ qvec
        top = np.argsort(-scores, kind="stable")[:n]
        return [(int(keys[i]), float(scores[i])) for i in top]

    def _keyword(self, query: str, layers: Sequence[str], filters: Filters, n: int
                 ) -> list[tuple[int, float]]:
        match = fts_query(query)
        return self.db.keyword_search(match, layers, filters, n) if match else []

    # -- reading --------------------------------------------------------------------------

    def get(self, record_id: int) -> Record | None:
        return self.db.records([record_id]).get(record_id)


def _check_request(request: SearchRequest) -> None:
    if not request.query.strip():
        raise InputError("the search query is empty")
    if "\0" in request.query:
        raise InputError("the search query contains a NUL byte")
    if not 1 <= request.top_k <= 100:
        raise InputError(f"--top-k must be from 1 to 100, got {request.top_k}")
    if request.mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got {request.mode!r}")
    for layer in request.layers:
        check_layer(layer, "--layer")
    if request.min_score is not None and not -1.0 <= request.min_score <= 1e9:
        raise InputError(f"--min-score must be at least -1, got {request.min_score}")
