"""One usearch HNSW index per layer: a rebuildable cache of the vectors in the database.
(An engine that indexes vectors itself, PostgreSQL with pgvector, hands out an
``EngineIndex`` instead: ``Indexes.layer`` gives whichever the store provides, and the
services use either through the same methods.)

Each index file ``<layer>.usearch`` has a sidecar ``<layer>.json`` that records what the
file holds: the store it belongs to, the index-log sequence it reflects, its settings,
its record count, and the file's size, mtime and CRC-32. The index is fresh when all of
these agree with the database and the file on disk; otherwise ``sync`` repairs it, under
the layer's lock, by replaying the index log (or, when that cannot be trusted, by a full
rebuild from the stored vectors). Nothing is ever re-embedded.

Write order: index file first, sidecar second, both by atomic rename. A reader reads the
sidecar first, so it can only ever think the index is older than it is, never newer.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Literal

from . import files
from .errors import IntegrityError, MagrayError
from .locks import locked
from .db.connection import disk_full, nearly_full
from .records import LAYERS

if TYPE_CHECKING:
    import numpy as np
    from usearch.index import Index

    from . import config, paths
    from .db.store import Store
    from .records import Filters

FORMAT = 2  # 2: several vectors per record (multi=True), one per passage of a long text
PRUNE_EVERY = 10_000  # log rows kept per layer before they are pruned
VECTOR_CHUNK = 1024  # vectors read from the database at a time: memory stays flat at any size


@dataclass(frozen=True)
class IndexSpec:
    """The settings that shape an index file: changing one means a rebuild."""

    dim: int
    dtype: str = "f32"
    m: int = 16
    ef_construction: int = 200


@dataclass(frozen=True)
class IndexState:
    """What a sidecar says about its index file."""

    store_id: str
    layer: str
    seq: int
    count: int
    spec: IndexSpec
    size: int
    mtime_ns: int
    crc32: int
    format: int = FORMAT


@dataclass(frozen=True)
class SyncReport:
    layer: str
    action: str  # "fresh", "updated", "rebuilt"
    count: int
    reason: str = ""


def usearch_index() -> type["Index"]:
    """usearch's ``Index`` class, imported on first use, after ONNX Runtime when that is
    installed: loading ONNX Runtime's native library after usearch's crashes the process
    (usearch 2.26 with onnxruntime 1.31, on Linux), and a query encoder may need it later."""
    if "usearch.index" not in sys.modules:
        if importlib.util.find_spec("onnxruntime"):
            import onnxruntime  # noqa: F401
        # usearch imports urllib.request (with http.client, email, ssl: ~30 ms of a cold
        # search) for a binary downloader magray never calls.
        with _deferred("urllib.request"):
            import usearch.index  # noqa: F401
    from usearch.index import Index

    return Index


@contextmanager
def _deferred(name: str) -> Iterator[None]:
    """While the block runs, ``import <name>`` gets a stand-in that imports the real module
    on first use. Afterwards sys.modules holds the real module or nothing (so find_spec and
    a later import behave as ever), and the stand-in stays only as the parent package's
    attribute, until the real module is imported. (importlib's LazyLoader does not help:
    the ``import`` statement itself reads the module's ``__spec__``, which loads it.)"""
    if name in sys.modules:
        yield
        return
    parent, _, child = name.rpartition(".")
    package = importlib.import_module(parent)
    stand_in = _Deferred(name)
    sys.modules[name] = stand_in
    setattr(package, child, stand_in)
    try:
        yield
    finally:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]


class _Deferred(types.ModuleType):
    def __init__(self, name: str):
        super().__init__(name)
        self.__spec__ = None

    def __getattr__(self, attribute: str):
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, real)
        return getattr(real, attribute)


class LayerIndex:
    """The index of one layer, bound to an open store."""

    def __init__(self, directory: Path, layer: str, spec: IndexSpec, store: "Store",
                 *, ef_search: int = 50, lock_timeout: float = 60.0):
        self.layer = layer
        self.spec = spec
        self.store = store
        self.ef_search = ef_search
        self.lock_timeout = lock_timeout
        self.path = directory / f"{layer}.usearch"
        self.sidecar = directory / f"{layer}.json"
        self.lock_path = directory / f"{layer}.lock"
        self._view: "Index | None" = None
        self._view_token: tuple | None = None

    # -- reading --------------------------------------------------------------------------

    def state(self) -> IndexState | None:
        try:
            raw = json.loads(self.sidecar.read_text())
            raw["spec"] = IndexSpec(**raw["spec"])
            state = IndexState(**raw)
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return state if state.format == FORMAT else None

    def staleness(self, state: IndexState | None = None) -> str:
        """Why the index on disk does not match the database ('' when it is fresh)."""
        state = state or self.state()
        if state is None:
            return "missing" if not self.path.exists() else "no readable metadata"
        if state.store_id != self.store.store_id or state.spec != self.spec:
            return "built for another store or with other settings"
        if not self._file_matches(state):
            return "file changed on disk"
        head = self.store.log_head(self.layer)
        if state.seq != head:
            return f"behind the database ({head - state.seq} changes)"
        if state.count != self.vector_count():
            return "vector count differs from the database"
        if files.leftovers(self.path) or files.leftovers(self.sidecar):
            return "temporary files left by an interrupted writer"
        return ""

    def open_view(self) -> "Index | None":
        """A memory-mapped, read-only view of a fresh index (repairing it first if needed);
        None when the layer is empty."""
        state = self.state()
        if self.staleness(state):
            self.sync()
            state = self.state()
        view = self._view_matching(state)
        if view is not False:
            return view
        # A writer renamed a new file in after we read its sidecar and has not yet written
        # the new sidecar. Under a shared lock no writer is between the two renames.
        with locked(self.lock_path, timeout=self.lock_timeout, shared=True):
            view = self._view_matching(self.state())
        if view is not False:
            return view
        self.sync(rebuild=True)  # the pair disagrees for good: damaged, so rebuild
        view = self._view_matching(self.state())
        if view is False:
            raise IntegrityError(f"the {self.layer} index could not be read after a rebuild")
        return view

    def _view_matching(self, state: IndexState | None) -> "Index | None | Literal[False]":
        """The mapped file if it holds what ``state`` says; None for an empty layer; False
        when file and sidecar disagree."""
        if state is None or state.count == 0:
            return None
        try:
            view = usearch_index().restore(str(self.path), view=True)
        except (ValueError, RuntimeError, OSError):
            return False
        if view is None or len(view) != state.count:
            return False
        view.expansion_search = self.ef_search
        return view

    def view(self) -> "Index | None":
        """``open_view()``, kept between calls: while the sidecar, the index file and the
        layer's log head are unchanged, the full staleness check would pass again (every
        change to the layer's vectors moves the log head), so it is skipped."""
        token = self._token()
        if self._view_token is None or token != self._view_token:
            self._view = self.open_view()
            self._view_token = token  # taken before opening: a later change is never missed
        return self._view

    def _token(self) -> tuple:
        stamps = []
        for path in (self.sidecar, self.path):
            try:
                info = os.stat(path)
                stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
            except OSError:
                stamps.append(None)
        return (*stamps, self.store.log_head(self.layer))

    @property
    def size(self) -> int:
        """Vectors in the view last opened (a fresh index holds the layer's record count)."""
        return 0 if self._view is None else len(self._view)

    def search(self, query: np.ndarray, k: int, *, exact_up_to: int = 0,
               filters: "Filters | None" = None) -> list[tuple[int, float]]:
        """Top-k (record id, inner product) for one normalised query vector: approximate,
        except that an index of at most ``exact_up_to`` vectors is scanned in full. The
        scan's answer depends only on the vectors, never on how the graph was built.
        ``filters`` is a hint an engine's index may apply; this one holds vectors only, so
        the caller filters what it returns."""
        view = self.view()
        if view is None:
            return []
        matches = view.search(query, min(k, len(view)), exact=len(view) <= exact_up_to)
        return list(zip(matches.keys.tolist(), (1.0 - matches.distances).tolist()))

    # -- repairing ------------------------------------------------------------------------

    def sync(self, *, rebuild: bool = False) -> SyncReport:
        """Bring the index file in step with the database, under the layer's lock."""
        with locked(self.lock_path, timeout=self.lock_timeout):
            files.remove_leftovers(self.path)
            files.remove_leftovers(self.sidecar)
            state = self.state()
            reason = "rebuild requested" if rebuild else self.staleness(state)
            if not reason:
                return SyncReport(self.layer, "fresh", state.count)
            index = None if rebuild else self._load_for_update(state)
            with self.store.read():
                if index is None:
                    index, head = self._build(), self.store.log_head(self.layer)
                    action = "rebuilt"
                else:
                    head = self._replay(index, state.seq)
                    action = "updated"
                count = self.vector_count()
            if len(index) != count:  # the replay could not be trusted: start over
                with self.store.read():
                    index, head = self._build(), self.store.log_head(self.layer)
                    count = self.vector_count()
                action, reason = "rebuilt", f"{reason}; replay disagreed with the database"
            self._save(index, head, count)
        if head - self.store.log_pruned_through(self.layer) > PRUNE_EVERY:
            self.store.prune_log(self.layer, head)
        return SyncReport(self.layer, action, count, reason)

    def _load_for_update(self, state: IndexState | None) -> "Index | None":
        """The index in memory if it can be replayed forward; None means rebuild."""
        if (state is None or state.store_id != self.store.store_id or state.spec != self.spec
                or state.seq < self.store.log_pruned_through(self.layer)
                or state.seq > self.store.log_head(self.layer)):
            return None
        if not self._file_matches(state) and not self._checksum_matches(state):
            return None
        try:
            index = usearch_index().restore(str(self.path), view=False)
        except (ValueError, RuntimeError, OSError):
            return None
        if index is None or index.ndim != self.spec.dim or len(index) != state.count:
            return None
        index.expansion_add = self.spec.ef_construction
        return index

    def _replay(self, index: "Index", seq: int) -> int:
        """Apply the net effect of log rows after ``seq``: drop every touched id, then add
        back the ones whose vector is (still) in this layer. Idempotent."""
        ids, head = self.store.changed_since(self.layer, seq)
        if not ids:
            return head
        present = [i for i in ids if index.contains(i)]
        if present:
            index.remove(present)
        back = self.store.ids_in_layer(ids, self.layer)
        for start in range(0, len(back), VECTOR_CHUNK):
            keys, vectors = self.store.vectors(back[start:start + VECTOR_CHUNK], self.spec.dim)
            if len(keys):
                index.add(keys, vectors)
            self._add_passages(index, back[start:start + VECTOR_CHUNK])
        return head

    def _build(self) -> "Index":
        index = self.new_index()
        for keys, vectors in self.store.layer_vectors(self.layer, self.spec.dim, VECTOR_CHUNK):
            index.add(keys, vectors)
            self._add_passages(index, keys.tolist())
        return index

    def _add_passages(self, index: "Index", ids: list[int]) -> None:
        """A long record's other passages, under its id (magray/passages.py)."""
        keys, vectors = self.store.passage_vectors(ids, self.spec.dim)
        if len(keys):
            index.add(keys, vectors)

    def vector_count(self) -> int:
        """Vectors the layer's index holds: one per record, and one per further passage
        (plain SQL: `magray status` asks, and must not import numpy)."""
        return self.store.count(self.layer) + self.store.extra_passages(self.layer)

    def new_index(self) -> "Index":
        return usearch_index()(ndim=self.spec.dim, metric="ip", dtype=self.spec.dtype, multi=True,
                               connectivity=self.spec.m, expansion_add=self.spec.ef_construction,
                               expansion_search=self.ef_search)

    def _save(self, index: "Index", seq: int, count: int) -> None:
        try:
            self._write(index, seq, count)
        except OSError as exc:  # fsync, the sidecar
            if exc.errno != errno.ENOSPC:
                raise
            raise disk_full(self.path) from exc

    def _write(self, index: "Index", seq: int, count: int) -> None:
        with files.replacing(self.path) as tmp:
            try:
                index.save(str(tmp))
            except RuntimeError as exc:
                # usearch tells a full disk only as "Failed to serialize into stream": the free
                # space says what it was, asked while the temporary file still fills the disk
                # (it is removed on the way out; the old index stays).
                if not nearly_full(tmp):
                    raise
                raise disk_full(self.path) from exc
            # Everything the sidecar says is read off the temporary file, so the window
            # between the two renames stays as short as it can be.
            info = tmp.stat()
            state = IndexState(store_id=self.store.store_id, layer=self.layer, seq=seq,
                               count=count, spec=self.spec, size=info.st_size,
                               mtime_ns=info.st_mtime_ns, crc32=files.crc32(tmp))
        files.write_atomic(self.sidecar, json.dumps(asdict(state), indent=1).encode())

    # -- file checks ----------------------------------------------------------------------

    def _file_matches(self, state: IndexState) -> bool:
        try:
            info = os.stat(self.path)
        except OSError:
            return False
        return info.st_size == state.size and info.st_mtime_ns == state.mtime_ns

    def _checksum_matches(self, state: IndexState) -> bool:
        try:
            return self.path.stat().st_size == state.size and files.crc32(self.path) == state.crc32
        except OSError:
            return False

    def verify(self) -> bool:
        """The deep check: does the file's CRC-32 match its sidecar?"""
        state = self.state()
        return state is not None and self._checksum_matches(state)

    def disk_bytes(self) -> int:
        """What the index takes on disk (``optimize`` reports it before and after)."""
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def remove_leftovers(self) -> int:
        """Remove the temporary files of writers killed before they could rename them."""
        with locked(self.lock_path, timeout=self.lock_timeout):
            return files.remove_leftovers(self.path) + files.remove_leftovers(self.sidecar)


class EngineIndex:
    """A layer's index that the database keeps itself (pgvector's HNSW on PostgreSQL): what
    the services ask of ``LayerIndex``, with nothing on disk here. Every client sees every
    committed vector at once; there is no file to sync, replay or verify. The engine's
    module subclasses it (``magray.db.pg.vectors``); this class holds no SQL."""

    layer: str
    spec: IndexSpec

    def search(self, query: np.ndarray, k: int, *, exact_up_to: int = 0,
               filters: "Filters | None" = None) -> list[tuple[int, float]]:
        """Top-k distinct (record id, inner product), a record scoring as its best passage:
        exact when the layer holds at most ``exact_up_to`` vectors; ``filters`` applied
        inside the search, which keeps going until k pass (or the layer is exhausted)."""
        raise NotImplementedError

    def search_many(self, vectors: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """``search`` for each row of ``vectors`` (approximate), in one round trip."""
        raise NotImplementedError

    def vector_count(self) -> int:
        """Vectors the layer holds: one per record and one per further passage."""
        raise NotImplementedError

    def sync(self, *, rebuild: bool = False) -> SyncReport:
        """Make sure the engine's index exists with these settings (``rebuild``: rebuild it,
        as ``optimize`` does)."""
        raise NotImplementedError

    def staleness(self, state: None = None) -> str:
        """Why the engine's index is not ready to serve ('' when it is)."""
        raise NotImplementedError

    def disk_bytes(self) -> int:
        raise NotImplementedError

    @property
    def size(self) -> int:
        """Vectors in the layer as the last search saw them."""
        raise NotImplementedError

    def view(self) -> "EngineIndex":
        """Nothing to open: the index is the database's."""
        return self

    def open_view(self) -> "EngineIndex | None":
        """This index (``search_many`` takes it as it takes a usearch view), None when the
        layer holds no vectors."""
        return self if self.vector_count() else None

    def __len__(self) -> int:
        return self.vector_count()

    def state(self) -> None:
        """No sidecar: nothing here describes the index."""
        return None

    def verify(self) -> bool:
        return not self.staleness()

    def remove_leftovers(self) -> int:
        return 0  # no files


class Indexes:
    """The layers' indexes of one open memory, each kept for the life of the memory: it
    holds its memory-mapped view between searches and re-checks freshness cheaply."""

    def __init__(self, store: "Store", settings: "config.Settings", where: "paths.Paths",
                 dim: Callable[[], int]):
        self.store = store
        self.settings = settings
        self.paths = where
        self.dim = dim  # the recorded dimension, or the embedder's before any vector
        self._open: dict[str, LayerIndex] = {}

    def layer(self, name: str) -> "LayerIndex | EngineIndex":
        """The layer's index, made anew only when its shape (dimension, settings) changed."""
        s = self.settings
        spec = IndexSpec(dim=self.dim(), dtype=s.index_dtype, m=s.hnsw_m,
                         ef_construction=s.hnsw_ef_construction)
        index = self._open.get(name)
        if index is None or index.spec != spec:
            # the engine's own index when it keeps one (PostgreSQL), else a usearch file here
            index = self.store.layer_index(name, spec, ef_search=s.hnsw_ef_search)
            if index is None:
                index = LayerIndex(self.paths.indexes, name, spec, self.store,
                                   ef_search=s.hnsw_ef_search, lock_timeout=s.busy_timeout)
            self._open[name] = index
        return index

    def clear(self) -> None:
        """Forget the open indexes: a restore replaced the data they describe."""
        self._open.clear()

    def sync(self, layers: Iterable[str] = LAYERS, *, rebuild: bool = False
             ) -> list[SyncReport]:
        """Bring the layers' indexes in step with the database (nothing to do before the
        first vector is stored)."""
        if self.store.model_meta()[1] is None:
            return []
        return [self.layer(name).sync(rebuild=rebuild) for name in layers]

    def after_write(self, layers: Iterable[str], warn: Callable[[str], None]
                    ) -> list[SyncReport]:
        """Update indexes after a committed write: the one way every write path does its
        after-commit work. The records are safe in the database already, so any failure
        here (a full disk, an index lock held too long) is a warning, never the write's
        failure: the next command repairs the index. Returns the layers' sync reports."""
        reports = []
        for name in layers:
            try:
                reports.append(self.layer(name).sync())
            except (MagrayError, OSError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                warn(f"the {name} index could not be updated ({why}); "
                     "the next command will repair it")
        return reports


def search_many(view: "Index | EngineIndex", vectors: np.ndarray, k: int
                ) -> list[list[tuple[int, float]]]:
    """Top-k (key, inner product) in an index view for each row of ``vectors`` (counting a
    layer's near neighbours, near-duplicates)."""
    if isinstance(view, EngineIndex):
        return view.search_many(vectors, k)
    import numpy as np  # not at import time: `magray status` reads indexes without numpy

    if not len(vectors) or not len(view):
        return [[] for _ in range(len(vectors))]
    k = min(k, len(view))
    matches = view.search(vectors, k)
    keys = np.asarray(matches.keys).reshape(len(vectors), -1)
    distances = np.asarray(matches.distances).reshape(len(vectors), -1)
    counts = getattr(matches, "counts", None)
    counts = np.full(len(vectors), keys.shape[1]) if counts is None else np.asarray(counts)
    return [[(int(keys[r, c]), 1.0 - float(distances[r, c])) for c in range(int(counts[r]))]
            for r in range(len(vectors))]
