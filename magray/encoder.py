"""``Encoder``: texts to vectors for one memory. It owns the embedder (loaded on first use),
the model the stored vectors were made with, the persistent embedding cache, and the query
vectors kept in process. Nothing else decides whether two vectors share a space."""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from . import clock
from .embedding import Embedder, from_settings
from .errors import ModelMismatchError
from .records import content_hash

if TYPE_CHECKING:
    from . import config, paths
    from .db.base import Op
    from .db.store import Store

RECENT_QUERIES = 1024  # query vectors an Encoder keeps in process (1.5 MiB at 384 dimensions)
CACHE_TOUCH_EVERY = timedelta(hours=1)  # how stale a cache hit's last_used may get


class Encoder:
    """The embedder of one memory, behind its cache, checked against the recorded model."""

    def __init__(self, store: "Store", settings: "config.Settings", where: "paths.Paths",
                 embedder: Embedder | None = None, warn: Callable[[str], None] | None = None,
                 note: Callable[[str], None] | None = None):
        self.store = store
        self.settings = settings
        self.paths = where
        self.warn = warn or (lambda message: None)
        self.note = note  # what is happening during a long wait (making the ONNX copy)
        self._embedder = embedder
        self._pinned: tuple[str | None, int | None] | None = None
        # (model, query) -> (vector, when its cache entry was last marked used)
        self._recent_queries: OrderedDict[tuple[str, str], tuple[np.ndarray, datetime]] = \
            OrderedDict()

    # -- the model ------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = from_settings(self.settings, self.paths.data, warn=self.warn,
                                           note=self.note)
        return self._embedder

    @property
    def loaded(self) -> Embedder | None:
        """The embedder if it was given or loaded already; None (and nothing loads) if not."""
        return self._embedder

    def recorded_model(self) -> tuple[str | None, int | None]:
        """(model key, dimension) the stored vectors were made with; (None, None) if none."""
        if self._pinned is not None:
            return self._pinned
        return self.store.model_meta()

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """One read of the recorded model serves the whole block (a search never changes
        it); read afresh on entry, forgotten on exit."""
        self._pinned = None
        self._pinned = self.recorded_model()
        try:
            yield
        finally:
            self._pinned = None

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

    def record_model(self, tx, dim: int, key: str | None) -> None:
        """Inside a write transaction: record the model with the first vectors, or refuse
        vectors of another model (``key``; None: check the dimension only). Read here, not
        before, so two first writers with different models cannot both pass
        ``check_model`` and mix vector spaces."""
        found_key, found_dim = self.store.model_meta(tx)
        if found_key is None:
            self.store.set_meta(tx, "model", self.embedder.name)
            self.store.set_meta(tx, "model_key", key or self.embedder.key)
            self.store.set_meta(tx, "dim", str(dim))
        elif found_dim != dim or key not in (None, found_key):
            raise ModelMismatchError(
                f"this memory was embedded with {found_key} ({found_dim} "
                f"dimensions) meanwhile, but these vectors come from {key or 'another model'} "
                f"({dim} dimensions); nothing was stored from this batch")

    # -- vectors through the cache --------------------------------------------------------

    def vectors(self, texts: Sequence[str], role: str, op: "Op | None" = None) -> np.ndarray:
        """Embeddings for texts, through the persistent cache; misses are embedded once.
        ``op`` (the call being timed, if any) counts the cache's hits and misses."""
        model = f"{self.embedder.key}|{role}"
        digests = [content_hash(t) for t in texts]
        dim = self.recorded_model()[1]
        cached = self._cached(model, digests, op)
        missing = sorted({d: t for d, t in zip(digests, texts) if d not in cached}.items())
        if op is not None:
            op.cache_misses += len(missing)
        if missing:
            embed = (self.embedder.embed_query if role == "query" else None)
            fresh = (np.stack([embed(t) for _, t in missing]) if embed else
                     self.embedder.embed_documents([t for _, t in missing]))
            if dim and fresh.shape[1] != dim:
                raise ModelMismatchError(
                    f"the configured model makes {fresh.shape[1]}-dimensional vectors but this "
                    f"memory holds {dim}-dimensional ones; run `magray optimize --reembed`")
            new = {d: v for (d, _), v in zip(missing, fresh)}
            with self.store.write() as tx:
                self.record_model(tx, fresh.shape[1], self.embedder.key)
                self.store.cache_vectors(tx, model, new.items(), clock.now_iso())
            cached.update(new)
        return np.stack([cached[d] for d in digests]) if digests else np.zeros((0, dim or 0))

    def _cached(self, model: str, digests: Sequence[str], op: "Op | None"
                ) -> dict[str, np.ndarray]:
        """Cache hits among ``digests``, counted, and marked used (at most hourly) so that
        recently used entries survive `magray clean`'s LRU pruning."""
        dim = self.recorded_model()[1]
        if not dim:
            return {}
        now = clock.now()
        cached, stale = self.store.cached_vectors(model, digests, dim,
                                                  clock.iso(now - CACHE_TOUCH_EVERY))
        self.store.touch_cache(model, stale, clock.iso(now))
        if op is not None:
            op.cache_hits += sum(d in cached for d in digests)
        return cached

    # -- query vectors kept in process ----------------------------------------------------

    def query_vector(self, query: str, op: "Op | None" = None
                     ) -> tuple[Callable[[], np.ndarray], bool]:
        """(a function giving the query's vector, whether an encoder is needed): the vector
        comes at once from the cache, or from the encoder, which starts loading now."""
        model = f"{self.embedder.key}|query"
        if (known := self._recent_queries.get((model, query))) is not None:
            vector, touched = known
            self._recent_queries.move_to_end((model, query))
            if op is not None:
                op.cache_hits += 1
            now = clock.now()
            if now - touched >= CACHE_TOUCH_EVERY:  # still a use, for clean's LRU pruning
                self.store.touch_cache(model, [content_hash(query)], clock.iso(now))
                self._remember(model, query, vector)
            return (lambda: vector), False
        cached = self._cached(model, [content_hash(query)], op)
        if cached:
            vector = self._remember(model, query, next(iter(cached.values())))
            return (lambda: vector), False
        prepare = getattr(self.embedder, "prepare_query", None)
        if prepare:
            prepare()
        return (lambda: self._remember(model, query, self.vectors([query], "query", op)[0])), \
            True

    def forget_query(self, query: str) -> None:
        """Drop a query's vector from the in-process cache (a benchmark's cold query)."""
        self._recent_queries.pop((f"{self.embedder.key}|query", query), None)

    def recent_queries(self) -> list[str]:
        """The queries whose vectors are kept in process, least recently used first."""
        return [query for _, query in self._recent_queries]

    def _remember(self, model: str, query: str, vector: np.ndarray) -> np.ndarray:
        """Keep a query's vector in this process too: a long-lived caller (an agent, a
        script) repeats its queries, and then skips even the cache's SQLite lookup."""
        self._recent_queries[(model, query)] = (vector, clock.now())
        if len(self._recent_queries) > RECENT_QUERIES:
            self._recent_queries.popitem(last=False)
        return vector
