"""``Memory``: the library's front door. It wires the store, the indexes and the embedder.

    from magray import Memory
    with Memory.open() as memory:
        memory.store_texts(["use rg -uu to search ignored files"], tags=["shell"])
        for hit in memory.search("grep through gitignored files"):
            print(hit.score, hit.record.text)
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from itertools import islice
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from . import clock, config, paths
from .embedding import Embedder, from_settings
from .errors import InputError, NotFoundError, StoreInterrupted
from .encoder import Encoder
from .index import Indexes, LayerIndex, SyncReport
from .ingest import check_layer
from .records import (LAYERS, Filters, Hit, NewRecord, Record, SearchRequest, Stored,
                      Trashed, content_hash)
from .db.store import Op, Store, VectorNeeded

if TYPE_CHECKING:
    from . import dedupe, lifecycle, maintenance, scan
    from .backup import BackupInfo, BackupResult, Listing, Pruned, RestoreResult, Retention
    from .documents.sync import IngestReport
    from .transfer import Entry, ImportReport

Progress = Callable[[int], None]
T = TypeVar("T")
MODES = ("hybrid", "vector", "keyword")
# Filtered candidate sets, and whole layers, of up to this many records are searched
# exactly: deterministic results, at ~1.5 ms a query for 20,000 vectors against ~0.3 ms for
# HNSW (scripts/exact_crossover.py), whose answer also depends on how the graph was built.
EXACT_LIMIT = 20_000
HYBRID_ALPHA = 0.85  # weight of meaning vs words in hybrid mode (scripts/eval_modes.py)
STORE_BATCH = 256
FIRST_WINDOW = STORE_BATCH  # a bulk store commits this many before its first whole window
WINDOW_BYTES = 4 << 20  # vectors embedded together (longest first: little padding)
ACCESS_RANKS = 3  # a search hit below this rank is never counted as an access


class Memory:
    """An open personal memory: records in three layers, searchable by meaning."""

    def __init__(self, where: paths.Paths, settings: config.Settings, store: Store,
                 embedder: Embedder | None = None, warn: Callable[[str], None] | None = None,
                 note: Callable[[str], None] | None = None):
        self.paths = where
        self.settings = settings
        self.db = store
        self.warn = warn or (lambda message: None)
        self.note = note  # what is happening during a long wait (making the ONNX copy)
        # Through self: a caller (a test) may replace warn or note on the Memory later.
        self.encoder = Encoder(store, settings, where, embedder,
                               warn=lambda message: self.warn(message),
                               note=lambda message: self.note and self.note(message))
        self.indexes = Indexes(store, settings, where, dim=lambda: self.encoder.dim)
        self._op: Op | None = None  # the store/search call being timed, for `magray status`
        self._matched: dict = {}  # during a search: record id -> its best passage

    @classmethod
    def open(cls, home: str | Path | None = None, *, settings: config.Settings | None = None,
             embedder: Embedder | None = None, warn: Callable[[str], None] | None = None,
             note: Callable[[str], None] | None = None) -> "Memory":
        """Open the memory under ``home`` (default: ``MAGRAY_HOME`` or the user directories)."""
        where = paths.resolve(home)
        settings = settings or config.load(where.config_file)
        where.ensure()
        # A restore or backup killed mid-way leaves its staging directory (a full copy of a
        # database) in the data directory; only those whose process is dead are removed.
        # Nothing there starts with a dot otherwise, so the usual open pays one listing.
        if any(name.startswith(".") for name in os.listdir(where.data)):
            from .backup import remove_leftovers

            try:
                remove_leftovers(where.data)
            except OSError:  # a read-only home: they wait for a command that can write
                pass
        store = Store.open(where.database, busy_timeout=settings.busy_timeout)
        return cls(where, settings, store, embedder, warn, note)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Memory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the model and the indexes (magray/encoder.py, magray/index.py) ---------------

    @property
    def embedder(self) -> Embedder:
        return self.encoder.embedder

    @property
    def _embedder(self) -> Embedder | None:
        """The embedder if loaded already (None: asking for it would load it)."""
        return self.encoder.loaded

    def recorded_model(self) -> tuple[str | None, int | None]:
        """(model key, dimension) the stored vectors were made with; (None, None) if none."""
        return self.encoder.recorded_model()

    def check_model(self) -> None:
        """Refuse to mix vector spaces: the configured model must be the recorded one."""
        self.encoder.check_model()

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def index(self, layer: str) -> LayerIndex:
        """The layer's index, kept for the life of this Memory."""
        return self.indexes.layer(layer)

    @property
    def _indexes(self) -> Indexes:
        return self.indexes

    def sync(self, layers: Iterable[str] = LAYERS, *, rebuild: bool = False) -> list[SyncReport]:
        """Bring the layers' indexes in step with the database."""
        return self.indexes.sync(layers, rebuild=rebuild)

    def _vectors(self, texts: Sequence[str], role: str) -> np.ndarray:
        """Embeddings through the persistent cache (counted in the call being timed)."""
        return self.encoder.vectors(texts, role, self._op)

    def _record_model(self, conn, dim: int, key: str | None) -> None:
        self.encoder.record_model(conn, dim, key)

    # -- storing --------------------------------------------------------------------------

    def store(self, items: Iterable[NewRecord], *, progress: Progress | None = None
              ) -> list[Stored]:
        """Store validated records; the same text in the same layer is counted as an access
        of the existing record instead of being stored twice. A new text that closely
        resembles a record of its layer is stored all the same; ``Stored.near`` names the
        record it resembles (``magray duplicates`` reviews them). ``items`` may be a lazy
        iterable (``ingest.Validated``): at most one window of texts is held, and one
        window of vectors (``WINDOW_BYTES``). Records are committed STORE_BATCH at a time,
        the first batch before the first window is embedded; Ctrl-C raises
        ``StoreInterrupted``, which holds what was committed."""
        self.check_model()
        redacted: dict[int, tuple[str, ...]] = {}
        items = self._screened(items, "text", redacted)
        results: list[Stored] = []
        self._op = Op("store", time.perf_counter())
        from . import dedupe

        near = dedupe.NearDuplicates(self.db, self.indexes, self.encoder, self.settings)
        pending = iter(items)
        size = max(STORE_BATCH, WINDOW_BYTES // (4 * (self.recorded_model()[1] or 384)))
        window = list(islice(pending, FIRST_WINDOW))  # a first commit soon, then windows
        try:
            while window:
                following = list(islice(pending, 1))  # is this window the last?
                self._op.items += len(window)
                self._store_window(window, near, progress, results, last=not following)
                window = following + list(islice(pending, size - 1)) if following else []
        except KeyboardInterrupt as stop:
            raise StoreInterrupted(results) from stop
        finally:
            self._op = None
        self._sync_after_write(sorted({r.layer for r in results}))
        return [replace(r, redacted=redacted[n]) if n in redacted else r
                for n, r in enumerate(results)]

    def _screened(self, items: Iterable[T], noun: str, redacted: dict[int, tuple[str, ...]]
                  ) -> Iterable[T]:
        """``items`` as the ``secrets`` setting lets them be written: with each credential
        redacted (``redacted`` collects each changed item's kinds, by position), or, for
        ``refuse``, all of them checked before the first is (an InputError otherwise)."""
        from . import secrets

        guard = secrets.Guard(self.settings.secrets, self.warn)
        if not guard.active:
            return self._counted(items)
        if guard.mode == "refuse":
            if not isinstance(items, Sequence) and not hasattr(items, "numbered"):
                items = list(items)  # a one-shot iterator: held, to be read twice
            guard.check_all(secrets.located(items, noun))

        def screen() -> Iterator[T]:
            for n, (where, item) in enumerate(secrets.located(items, noun)):
                item, kinds = guard.screen(where, item)
                if kinds:
                    redacted[n] = kinds
                yield item

        return screen()

    def _counted(self, items: Iterable[T]) -> Iterator[T]:
        """secrets=allow: store as given, but count the records holding credentials, so
        that `magray status` warns (the count `magray scan` keeps, see magray/scan.py)."""
        from . import scan, secrets

        found = 0
        for item in items:
            found += bool(secrets.inspect(secrets.record_fields(item)))
            yield item
        if found:
            scan.count_found(self.db, found)

    def _sync_after_write(self, layers: Iterable[str]) -> list[SyncReport]:
        """Update indexes after a committed write; a failure is a warning (magray/index.py)."""
        return self.indexes.after_write(layers, self.warn)

    def store_texts(self, texts: Sequence[str], **fields) -> list[Stored]:
        """Convenience: store plain texts with shared metadata (layer, tags, project...);
        without a layer, they go to the setting default_layer (assets: kept until removed)."""
        from .ingest import from_args

        fields["tags"] = tuple(fields.get("tags", ()))
        fields["layer"] = fields.get("layer") or self.settings.default_layer
        template = NewRecord(text="", **fields)
        check_layer(template.layer)
        return self.store(from_args(texts, template, self.settings.max_text_bytes))

    def _store_window(self, window: Sequence[NewRecord], near: "dedupe.NearDuplicates",
                      progress: Progress | None, results: list[Stored], *, last: bool
                      ) -> None:
        """Embed a window (longest first) and commit it batch by batch, appending each
        committed batch to ``results`` at once (an interrupt keeps the count true)."""
        known = {layer: self.db.existing(layer, [i.content_hash for i in window
                                                 if i.layer == layer])
                 for layer in {i.layer for i in window}}
        need = list(dict.fromkeys(i.text for i in window if i.content_hash not in known[i.layer]))
        vectors = self._embed_longest_first(need, progress)
        parts = self._passages(need, vectors)
        for start in range(0, len(window), STORE_BATCH):
            batch = window[start:start + STORE_BATCH]
            final = last and start + STORE_BATCH >= len(window)  # the call's figures ride here
            while True:
                found = near.find(batch, vectors)
                try:
                    stored = self._insert(batch, vectors, found, last=final, parts=parts)
                except VectorNeeded as missing:  # a duplicate's original was deleted meanwhile
                    text = str(missing)
                    vectors[text] = self._vectors([text], "document")[0]
                    continue
                results += stored  # committed: counted before anything else can stop us
                near.added(batch, vectors, stored)
                break
        if progress and len(window) > len(need):
            progress(len(window) - len(need))

    def _embed_longest_first(self, texts: Sequence[str], progress: Progress | None
                             ) -> dict[str, np.ndarray]:
        """Vectors for texts, in batches of similar length (as a raw model.encode sorts
        them, by the model's own measure), with a progress tick per batch."""
        if not texts:
            return {}
        lengths = self.embedder.lengths(texts)
        ordered = [texts[i] for i in sorted(range(len(texts)), key=lambda i: -lengths[i])]
        vectors: dict[str, np.ndarray] = {}
        for start in range(0, len(ordered), STORE_BATCH):
            chunk = ordered[start:start + STORE_BATCH]
            vectors.update(zip(chunk, self._vectors(chunk, "document")))
            if progress:
                progress(len(chunk))
        return vectors

    def _passages(self, texts: Sequence[str], whole: dict[str, np.ndarray]) -> dict:
        """The passages (with vectors) of the texts longer than the model's window."""
        from . import passages

        return passages.embed_long(self.embedder, texts, whole,
                                   lambda chunk: self._vectors(chunk, "document"))

    def _insert(self, batch: Sequence[NewRecord], vectors: dict[str, np.ndarray],
                found: "dict[int, dedupe.Near]", *, last: bool = False,
                parts: "Mapping[str, object]" = MappingProxyType({})) -> list[Stored]:
        when = clock.now_iso()
        results: list[Stored] = []
        with self.db.write() as conn:
            if vectors:  # any vector: its model must (still) be the recorded one
                dim = len(next(iter(vectors.values())))
                self._record_model(conn, dim, self.embedder.key)
            for n, item in enumerate(batch):
                record_id, duplicate = self.db.insert(conn, item, vectors.get(item.text), when)
                near = found.get(n)
                if not duplicate and item.text in parts:  # a long text: all its passages
                    self.db.insert_passages(conn, record_id, parts[item.text])
                if duplicate:
                    results.append(Stored(record_id, item.layer, True, 1.0))
                elif near is None:
                    results.append(Stored(record_id, item.layer, False))
                else:
                    other = near.record if near.record is not None else results[near.item].id
                    results.append(Stored(record_id, item.layer, False, near.similarity,
                                          other if other != record_id else None))
            if last and self._op is not None:  # the call's figures ride on its last commit
                self.db.record_op(conn, self._op)
        return results

    # -- searching ------------------------------------------------------------------------

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
        self._op = op = Op("search", time.perf_counter())
        try:
            if request.by_doc:  # best passage per document: look wider, then keep the best
                from .documents import sources

                wide = self._find(replace(request, top_k=min(request.top_k * 5, 500)))
                hits = sources.best_per_document(wide, request.top_k)
            else:
                hits = self._find(request)
        finally:
            self._op = None
        if request.track:  # untracked searches write nothing, so they are not timed either
            op.items = len(hits)
            used = self.accessed(hits)
            self.db.touch(sorted(used), op=op)
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

    def _find(self, request: SearchRequest) -> list[Hit]:
        self._matched = {}
        layers = request.layers or LAYERS
        pool = max(request.top_k * 4, 40)
        sims: dict[int, float] | None = None
        read: dict[int, Record] = {}  # records fetched while scoring, shown without a re-read
        if request.mode == "keyword":
            ranked = self._keyword(request.query, layers, request.filters, request.top_k * 2)
        else:
            self.check_model()
            if self.recorded_model()[1] is None:
                return []  # nothing was ever stored
            embed, loading = self.encoder.query_vector(request.query, self._op)
            # While a new query's encoder loads (it releases the GIL), do the work that does
            # not need the vector: keyword ranking, opening the indexes.
            keyword = (self._keyword(request.query, layers, request.filters, pool)
                       if request.mode == "hybrid" else [])
            if loading and not request.filters:
                for layer in layers:
                    self.index(layer).view()
            qvec = embed()
            # Hybrid fusion needs a wide pool; vector mode ranks by the similarity it returns.
            wanted = pool if request.mode == "hybrid" else request.top_k
            ranked = self._vector(qvec, layers, request.filters, wanted, read)
            sims = dict(ranked)
            if request.mode == "hybrid":
                ranked, sims = self._fuse(qvec, ranked, keyword, read)
        return self._hits(ranked, sims, request, read)

    def _hits(self, ranked: list[tuple[int, float]], sims: dict[int, float] | None,
              request: SearchRequest, read: dict[int, Record]) -> list[Hit]:
        """The first top_k ranked records that pass min_score (cosine similarity, or the
        keyword score when there is none); records not ``read`` yet are read only for those."""
        passing = [(i, score) for i, score in ranked if request.min_score is None
                   or (score if sims is None else sims.get(i, -2.0)) >= request.min_score]
        hits: list[Hit] = []
        while passing and len(hits) < request.top_k:
            chunk, passing = (passing[:request.top_k - len(hits)],
                              passing[request.top_k - len(hits):])
            read.update(self.db.records([i for i, _ in chunk if i not in read]))
            hits += [Hit(read[i], score, None if sims is None else sims.get(i),
                         self._matched.get(i))
                     for i, score in chunk if i in read]  # deleted meanwhile: skipped
        from .documents import sources

        return sources.attach(self.db, hits)

    def _similarities(self, qvec: np.ndarray, ids: list[int], read: dict[int, Record]
                      ) -> dict[int, float]:
        """Exact cosine similarities from the stored vectors of the ``ids`` that exist; their
        records are added to ``read``."""
        records, vectors = self.db.records_and_vectors(ids, self.dim)
        read.update(records)
        return self._by_passage(qvec, dict(zip(records, (vectors @ qvec).astype(float).tolist())))

    def _by_passage(self, qvec: np.ndarray, sims: dict[int, float]) -> dict[int, float]:
        """A long record scores as its best passage (magray/passages.py)."""
        from . import passages

        for record_id, (score, passage) in passages.best(self.db, qvec, sims, self.dim).items():
            if score >= sims[record_id]:
                sims[record_id] = score
                self._matched[record_id] = passage
        return sims

    def _vector(self, qvec: np.ndarray, layers: Sequence[str], filters: Filters, n: int,
                read: dict[int, Record]) -> list[tuple[int, float]]:
        """Top-n (id, cosine similarity) over layers, with filters that never starve results:
        small filtered sets are searched exactly, large ones by widening the ANN search."""
        if filters:
            matching = self.db.filtered_ids(layers, filters, limit=EXACT_LIMIT + 1)
            if len(matching) <= EXACT_LIMIT:
                return self._exact(qvec, matching, n)
        found: dict[int, float] = {}
        for layer in layers:
            found.update(self._ann_layer(qvec, layer, filters, n, read))
        return sorted(found.items(), key=_best_first)[:n]

    def _ann_layer(self, qvec: np.ndarray, layer: str, filters: Filters, n: int,
                   read: dict[int, Record]) -> dict[int, float]:
        index = self.index(layer)
        k = n * 4 if filters else n
        while True:
            # dict.fromkeys: a long record's id comes once per matching passage
            candidates = list(dict.fromkeys(
                key for key, _ in index.search(qvec, k, exact_up_to=EXACT_LIMIT)))
            total = index.size  # of the view just searched
            if filters:
                candidates = self._passing(candidates, layer, filters)
            # A record deleted since the view was opened is simply not scored. The next
            # view() sees the moved log head and replays the log: no rebuild (minutes at
            # a million vectors, under the layer lock) for a delete that raced a search.
            scored = self._similarities(qvec, candidates, read)
            if len(scored) >= n or k >= total:
                return scored
            k *= 4

    def _passing(self, ids: list[int], layer: str, filters: Filters) -> list[int]:
        return self.db.passing(ids, layer, filters)

    def _fuse(self, qvec: np.ndarray, vector: list[tuple[int, float]],
              keyword: list[tuple[int, float]], read: dict[int, Record]
              ) -> tuple[list[tuple[int, float]], dict[int, float]]:
        """Hybrid ranking: HYBRID_ALPHA x cosine similarity + the rest x BM25 relative to the
        best keyword hit. Candidates from either list; every one scored on both."""
        bm25 = dict(keyword)
        top = max(bm25.values(), default=0.0) or 1.0
        ids = list(dict.fromkeys([i for i, _ in vector] + list(bm25)))
        sims = self._similarities(qvec, ids, read)
        fused = {i: HYBRID_ALPHA * sims[i] + (1 - HYBRID_ALPHA) * bm25.get(i, 0.0) / top
                 for i in ids if i in sims}
        return sorted(fused.items(), key=_best_first), sims

    def _exact(self, qvec: np.ndarray, ids: Sequence[int], n: int) -> list[tuple[int, float]]:
        keys, vectors = self.db.vectors(ids, self.dim)
        if not len(keys):
            return []
        scored = self._by_passage(qvec, dict(zip(keys.tolist(), (vectors @ qvec).tolist())))
        return sorted(scored.items(), key=_best_first)[:n]

    def _keyword(self, query: str, layers: Sequence[str], filters: Filters, n: int
                 ) -> list[tuple[int, float]]:
        return self.db.keyword_search(query, layers, filters, n)

    # -- the lifecycle (magray/lifecycle.py, magray/maintenance.py) ------------------------

    def promote(self, *, layers: Sequence[str] = (), threshold: float | None = None,
                ids: Sequence[int] = (), dry_run: bool = False, explain: bool = False
                ) -> "lifecycle.PromotionReport":
        """Move records that proved valuable one layer up (interact -> insights -> assets).
        ``explain`` keeps every scored decision in the report, not only the promoted ones."""
        from . import lifecycle

        return lifecycle.promote(self.db, self.indexes, self.settings, layers=layers,
                                 threshold=threshold, ids=ids, dry_run=dry_run, explain=explain,
                                 warn=self.warn)

    def clean(self, *, dry_run: bool = False, promote: bool | None = None
              ) -> "lifecycle.CleanReport":
        """Expire records past their layer's TTL, evict the lowest-value ones above its
        capacity, prune the embedding cache; promotes first when ``promote`` (default:
        setting clean_promotes)."""
        from . import lifecycle

        return lifecycle.clean(self.db, self.indexes, self.settings, self.empty_trash,
                               dry_run=dry_run, promote_first=promote)

    def ingest(self, paths: Sequence[str | Path], **options) -> "IngestReport":
        """Store the text files under ``paths`` (Markdown split at its headings) and keep
        their records in step on later runs; options: layer, tags, project, prune, dry_run,
        progress (magray/documents/sync.py)."""
        from .documents import sync

        return sync.ingest(self.db, self.settings, self.store, self.forget, paths, **options)

    def optimize(self, *, reembed: bool = False, progress: Progress | None = None
                 ) -> "maintenance.OptimizeReport":
        """Rebuild the indexes from the stored vectors, prune orphans, VACUUM; with
        ``reembed``, first re-embed every record with the configured model."""
        from . import maintenance

        return maintenance.optimize(self.db, self.indexes, self.encoder, self.settings,
                                    reembed=reembed, progress=progress)

    def scan(self, *, apply: bool = False) -> "scan.ScanReport":
        """Find credentials already stored (records; never their values in the report);
        with ``apply``, redact them in place: re-embedded, FTS rebuilt, their cached vectors
        removed, old pages overwritten."""
        from . import scan

        return scan.scan(self.db, self.indexes, self.encoder, apply=apply, warn=self.warn)

    # -- reading --------------------------------------------------------------------------

    def get(self, record_id: int) -> Record | None:
        """One record by id (not counted as an access), or None."""
        return self.db.records([record_id]).get(record_id)

    def list_records(self, *, layers: Sequence[str] = (), filters: Filters = Filters(),
                     limit: int | None = 20) -> list[Record]:
        """The newest records (by creation time) in ``layers`` passing ``filters``;
        ``limit=None`` lists them all."""
        _check_layers(layers)
        if limit is not None and limit < 1:
            raise InputError(f"limit must be at least 1, got {limit}", param="limit")
        return self.db.recent(layers or LAYERS, filters, limit)

    def export(self, *, layers: Sequence[str] = (), filters: Filters = Filters(),
               vectors: bool = False, by_layer: bool = False) -> Iterator["Entry"]:
        """Every record in ``layers`` passing ``filters``, by id (or layer by layer), with
        its vector if asked; read lazily from one consistent snapshot of the database.
        Exhaust or close the iterator before writing through this same Memory."""
        _check_layers(layers)
        return self._export(layers or LAYERS, filters, vectors, by_layer)

    def _export(self, layers: Sequence[str], filters: Filters, vectors: bool, by_layer: bool
                ) -> Iterator["Entry"]:
        from .transfer import Entry

        with self.db.read():
            model = self.db.meta("model_key")
            for record, blob in self.db.dump(layers, filters, vectors=vectors, by_layer=by_layer):
                if blob is None:
                    yield Entry(record)
                else:
                    yield Entry(record, np.frombuffer(blob, dtype=np.float32), model)

    # -- changing records -----------------------------------------------------------------

    def show(self, record_id: int) -> Record | None:
        """One record by id, counted as an access (a person asked for it), or None."""
        if self.db.records([record_id]):
            self.db.touch([record_id])
        return self.get(record_id)

    def forget(self, ids: Sequence[int], *, purge: bool = False, dry_run: bool = False
               ) -> list[Record]:
        """Move records to the trash (out of search, list, export and the indexes; back with
        ``restore_from_trash`` until ``clean`` purges the trash after trash_days). ``purge``
        destroys them at once instead (a secret pasted by mistake). All or nothing: if any
        id does not exist, nothing is removed. ``dry_run`` only looks them up."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            raise InputError("no record ids given")
        with self.db.write() as conn:
            found = self.db.records(wanted)
            NotFoundError.unless_all(wanted, found, "forgotten")
            if dry_run:
                return [found[i] for i in wanted]
            if purge:  # freed pages are zeroed, not left holding the text
                self.db.zero_freed_pages()
            when = clock.now_iso()
            for record_id in wanted:
                self.db.trash(conn, record_id, "forgotten", when)
            if purge:
                self.db.purge_trash(conn, wanted)
        if purge:
            self._scrub()
        self._sync_after_write(sorted({r.layer for r in found.values()}))
        return [found[i] for i in wanted]

    def _scrub(self) -> None:
        """After a purge: no copy of the destroyed texts stays in the files (free pages,
        FTS segments, the WAL): see magray/scan.py."""
        self.db.scrub()

    # -- the trash ------------------------------------------------------------------------

    def trash(self, ids: Sequence[int] | None = None) -> list[Trashed]:
        """What is in the trash (forgotten, expired, evicted or merged records, for
        trash_days), most recently trashed first; or only those of ``ids``."""
        return self.db.trashed(ids)

    def restore_from_trash(self, ids: Sequence[int]) -> list[Record]:
        """Put trashed records back whole: same id, text, metadata and layer, findable
        again by meaning and by words. All or nothing: NotFoundError if an id is not in the
        trash, InputError if its text was stored again in its layer meanwhile. Counts as
        a use (last access now): the next clean does not expire or evict it again at once."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            raise InputError("no record ids given")
        vectors = self._restore_vectors(wanted)
        now = clock.now_iso()
        with self.db.write() as conn:
            found = {t.record.id: t.record for t in self.db.trashed(wanted)}
            NotFoundError.unless_all(wanted, found, "restored", " in the trash")
            for record_id in wanted:
                record = found[record_id]
                twin = self.db.find(conn, record.layer, record.content_hash)
                if twin is not None:
                    raise InputError(f"record {record_id}'s text is stored again in "
                                     f"{record.layer} as record {twin.id}; forget {twin.id} "
                                     "first to restore it; nothing was restored")
                self.db.untrash(conn, record_id, vectors.get(record_id), accessed=now)
        self._sync_after_write(sorted({r.layer for r in found.values()}))
        return [found[i] for i in wanted]

    def _restore_vectors(self, ids: Sequence[int]) -> dict[int, bytes]:
        """New vectors for trashed records made by another model than the memory's now
        (after `optimize --reembed`); the others keep their stored vector."""
        key, dim = self.recorded_model()
        stale = {i: blob for i, (blob, model) in self.db.trash_vectors(ids).items()
                 if key is not None and (model != key or len(blob) != (dim or 0) * 4)}
        if not stale:
            return {}
        self.check_model()
        texts = {t.record.id: t.record.text for t in self.db.trashed(list(stale))}
        fresh = self._vectors([texts[i] for i in stale], "document")
        return {i: np.ascontiguousarray(v, dtype=np.float32).tobytes()
                for i, v in zip(stale, fresh)}

    def empty_trash(self, *, ids: Sequence[int] | None = None, older_than: str | None = None,
                    dry_run: bool = False, keep_merged: bool = False) -> list[Trashed]:
        """Destroy trashed records for good: those of ``ids``, or those trashed before the
        ISO time ``older_than``, or all; ``keep_merged`` spares the texts merges trashed
        (clean's age purge does: a merge promises they stay restorable). Returns them
        (``dry_run``: only lists them)."""
        if dry_run:
            return self._doomed(ids, older_than, keep_merged)
        # Read and purge in one write transaction: a record restored and trashed again
        # meanwhile is judged by its new trashed_at, never purged on an old reading.
        with self.db.write() as conn:
            doomed = self._doomed(ids, older_than, keep_merged)
            if doomed:
                self.db.zero_freed_pages()  # freed pages are zeroed
                self.db.purge_trash(conn, [t.record.id for t in doomed])
        if doomed:
            self._scrub()
        return doomed

    def _doomed(self, ids: Sequence[int] | None, older_than: str | None,
                keep_merged: bool = False) -> list[Trashed]:
        doomed = [t for t in self.db.trashed(ids)
                  if (older_than is None or t.trashed_at < older_than)
                  and not (keep_merged and t.reason == "merged")]
        if ids is not None:
            NotFoundError.unless_all(sorted(set(ids)), {t.record.id for t in doomed},
                                     "destroyed", " in the trash")
        return doomed

    # -- near-duplicates (magray/dedupe.py) -----------------------------------------------

    def duplicates(self, *, layers: Sequence[str] = (), similarity: float | None = None
                   ) -> "list[dedupe.Cluster]":
        """Clusters of near-duplicate records in each layer (cosine similarity at least
        ``similarity``, default the setting near_duplicate_similarity), closest first.
        Texts the model cannot read (mostly unknown tokens) are never clustered."""
        from . import dedupe

        _check_layers(layers)
        threshold = self.settings.near_duplicate_similarity if similarity is None \
            else similarity
        if not 0 < threshold <= 1:
            raise InputError(f"similarity must be above 0 and at most 1, got {threshold}",
                             param="similarity")
        return dedupe.clusters(self.db, self.indexes, self.encoder,
                               tuple(dict.fromkeys(layers)) or LAYERS, threshold)

    def merge_duplicates(self, ids: Sequence[int]) -> "dedupe.Merged":
        """Merge records of one layer into the first of ``ids``: its metadata joins theirs
        (tags, accesses, importance, times); the others go to the trash, restorable."""
        from . import dedupe

        merged = dedupe.merge(self.db, ids)
        self._sync_after_write([merged.kept.layer])
        return merged

    def import_records(self, entries: Iterable["Entry"], *, progress: Progress | None = None
                       ) -> "ImportReport":
        """Merge exported records into this memory, in batches (``entries`` may be lazy).
        A text already stored in the same layer is joined with the imported copy
        (``transfer.merge``) instead of being stored twice; new records keep their fields,
        and their ids where this memory never issued them. A file's vectors are used when
        they come from this memory's model; otherwise the text is embedded."""
        from .transfer import ImportReport

        totals: dict[str, int] = {"added": 0, "merged": 0, "unchanged": 0, "embedded": 0}
        layers: set[str] = set()
        redacted: dict[int, tuple[str, ...]] = {}
        pending = iter(self._screened(entries, "record", redacted))
        while batch := list(islice(pending, STORE_BATCH)):
            vectors = self._import_vectors(batch, totals)
            while True:
                try:
                    outcomes = self._import_batch(batch, vectors)
                    break
                except VectorNeeded as missing:  # a duplicate's original was deleted meanwhile
                    text = str(missing)
                    vectors[content_hash(text)] = self._vectors([text], "document")[0]
                    totals["embedded"] += 1
            for outcome in outcomes:
                totals[outcome] += 1
            layers.update(e.record.layer for e in batch)
            if progress:
                progress(len(batch))
        from . import passages
        from .errors import ModelError

        try:
            passages.upgrade(self.db, self.encoder)  # long imported texts: every passage gets its vector
        except ModelError as exc:  # the records are in; `magray optimize` finishes this
            self.warn(f"long imported records are searchable by their first part only until "
                      f"`magray optimize` can load the model ({exc})")
        self._sync_after_write(sorted(layers))
        return ImportReport(**totals, redacted=len(redacted))

    def _import_vectors(self, batch: Sequence["Entry"], totals: dict[str, int]
                        ) -> dict[str, np.ndarray]:
        """Vectors (by content hash) for the batch's texts not stored yet: the file's own
        when they come from this memory's model, else freshly embedded."""
        key, dim = self.recorded_model()
        key = key or self.embedder.key
        usable: dict[str, np.ndarray] = {}
        for entry in batch:
            if entry.vector is not None and entry.vector_model == key:
                dim = dim or len(entry.vector)
                if len(entry.vector) == dim:
                    usable[entry.record.content_hash] = entry.vector
        known = {layer: self.db.existing(layer, [e.record.content_hash for e in batch
                                                  if e.record.layer == layer])
                 for layer in {e.record.layer for e in batch}}
        need = {e.record.content_hash: e.record.text for e in batch
                if e.record.content_hash not in usable
                and e.record.content_hash not in known[e.record.layer]}
        if need:
            self.check_model()
            usable.update(zip(need, self._vectors(list(need.values()), "document")))
            totals["embedded"] += len(need)
        return usable

    def _import_batch(self, batch: Sequence["Entry"], vectors: dict[str, np.ndarray]
                      ) -> list[str]:
        from .transfer import merge

        outcomes = []
        with self.db.write() as conn:
            for entry in batch:
                record = entry.record
                current = self.db.find(conn, record.layer, record.content_hash)
                if current is None:
                    vector = vectors.get(record.content_hash)
                    if vector is None:
                        raise VectorNeeded(record.text)
                    self._record_model(conn, len(vector), None)  # the file's, or ours
                    self.db.insert_record(conn, record, vector)
                    outcomes.append("added")
                elif (joined := merge(current, record)) != current:
                    self.db.update_metadata(conn, joined)
                    outcomes.append("merged")
                else:
                    outcomes.append("unchanged")
        return outcomes

    # -- backups (magray/backup/ does the work) -------------------------------------------

    def backup(self, output: str | Path | None = None, *, retention: "Retention | None" = None,
               progress: Callable[[int, int], None] | None = None) -> "BackupResult":
        """Write a verified archive (default: into the backups directory; ``output`` may
        name a directory or a new file), then apply ``retention`` to the archives beside it.
        Consistent while other processes write; never loads the model."""
        from .backup import create

        return create.run(self.paths, self.db, self.settings, retention=retention,
                          output=Path(output) if output else None, progress=progress)

    def backups(self, directory: str | Path | None = None) -> "Listing":
        """The archives in ``directory`` (default: the backups directory), oldest first."""
        from .backup import list_backups

        return list_backups(self.paths, Path(directory) if directory else None)

    def verify_backup(self, archive: str | Path, *,
                      progress: Callable[[int, int], None] | None = None) -> "BackupInfo":
        """Re-read an archive against its manifest; IntegrityError names the failed check."""
        from .backup.verify import verify

        return verify(Path(archive), cap=self.settings.restore_max_bytes, progress=progress)

    def prune_backups(self, retention: "Retention", directory: str | Path | None = None, *,
                      dry_run: bool = False) -> "Pruned":
        """Apply retention to this memory's archives; the newest that verifies is kept."""
        from .backup import prune

        return prune(Path(directory) if directory else self.paths.backups, self.db.store_id,
                     retention, dry_run=dry_run, cap=self.settings.restore_max_bytes)

    def restore(self, archive: str | Path, *, replace: bool = False, config: bool | None = None,
                confirm: Callable[["RestoreResult"], bool] | None = None, dry_run: bool = False,
                progress: Callable[[int, int], None] | None = None) -> "RestoreResult":
        """Replace this memory with an archive's, after verifying all of it. The current data
        is kept as a safety archive (``result.safety_copy``) until discard_safety_copies. Other
        processes must close the memory first (this waits up to busy_timeout for them).
        ``replace`` (or ``confirm(plan)`` returning True) is needed to replace records;
        ``config``: also restore the archive's config.toml (None: only where there is none)."""
        from .backup import restore

        return restore.restore(self.paths, self.db, self.settings, Path(archive),
                               embedder=self._embedder, embedder_for=from_settings,
                               resync=self._resync_all,
                               config=config, replace_data=replace, confirm=confirm,
                               dry_run=dry_run, progress=progress)

    def _resync_all(self) -> list[SyncReport]:
        """After a restore replaced the data: forget the indexes opened on the old data and
        bring every layer's in step (none to bring while no vector is stored)."""
        self._indexes.clear()
        return self._sync_after_write(LAYERS) if self.recorded_model()[1] else []

    def safety_copies(self) -> list[Path]:
        """Safety archives of the data that restores replaced (a restore never deletes one;
        they stay until ``discard_safety_copies``)."""
        from .backup import safety_copies

        return safety_copies(self.paths)

    def discard_safety_copies(self) -> list[Path]:
        from .backup import discard_safety_copies

        return discard_safety_copies(self.paths)


def _check_layers(layers: Sequence[str]) -> None:
    for layer in layers:
        check_layer(layer, "layers", param=True)


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
    if request.mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {request.mode!r}",
                         param="mode")
    for layer in request.layers:
        check_layer(layer, "layers", param=True)
    if request.min_score is not None and not -1.0 <= request.min_score <= 1e9:
        raise InputError(f"min_score must be at least -1, got {request.min_score}",
                         param="min_score")
