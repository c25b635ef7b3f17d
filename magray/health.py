"""``magray status`` as a library: read-only health checks, alerts and metrics.

``check()`` looks at the database (opened read-only), the index sidecars and index file
headers, the backups directory, and the figures that store and search log about
themselves. It creates, migrates and repairs nothing, never imports torch, and loads the
model only when asked (``check_model=True``). It returns a frozen ``Health``;
``prometheus()`` renders one in the Prometheus text exposition format.

Severities: ``error`` means the memory is unhealthy (``magray status`` exits 1);
``warning`` needs attention soon; ``info`` is worth knowing.
"""

from __future__ import annotations

import math
import os
import sqlite3
import struct
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import __version__, clock, config, paths, units
from .errors import BusyError, MagrayError
from .locks import locked
from .db.base import ServerFacts, VectorIndexFacts
from .db.reader import Reader
from .layers import LayerPolicy
from .records import LAYERS, model_key

if TYPE_CHECKING:
    from .embedding import Embedder
    from .index import LayerIndex

SEVERITIES = ("info", "warning", "error")
OPERATIONS = ("store", "search")
BACKUP_SUFFIXES = (".tar.zst", ".tar.zstd", ".tzst")  # archives in paths.backups
NEAR_CAPACITY = 0.9  # an info alert from this share of a layer's capacity
PROBE_TEXT = "magray health probe: can the embedding model turn this sentence into a vector?"
OPTIMIZE = "run `magray optimize` to rebuild it from the database"
# a database server's HNSW index: what makes (or remakes) it (PgLayerIndex.sync, issue 18
# item 2: a search builds it when it is missing or was built for other settings)
SERVER_INDEX = "run `magray optimize` (the next search also builds it)"
REQUIRED_TABLES = {"meta", "records", "index_log", "embed_cache"}


@dataclass(frozen=True)
class Alert:
    """Something status found: how bad, a stable code, what, and the one thing to do."""

    severity: str  # info, warning or error
    code: str  # e.g. index_stale, model_mismatch
    message: str
    remedy: str
    layer: str | None = None


@dataclass(frozen=True)
class IndexHealth:
    path: str
    bytes: int | None  # None: no file
    records: int | None  # what the sidecar says the file holds
    fresh: bool
    problem: str = ""  # why not, in LayerIndex.staleness() words


@dataclass(frozen=True)
class LayerHealth:
    name: str
    records: int
    oldest: str | None  # created_at of the oldest and newest record
    newest: str | None
    ttl_seconds: float | None  # None: records never expire
    expired: int  # records past the TTL, waiting for `magray clean`
    capacity: int
    index: IndexHealth

    @property
    def capacity_used(self) -> float:
        return self.records / self.capacity


@dataclass(frozen=True)
class Probe:
    """What ``check_model=True`` saw when it loaded the model and embedded a probe text."""

    model: str
    requested_device: str
    device: str | None  # the device actually used; None if the model could not be loaded
    cuda_unused: str | None  # why CUDA was not used (None when it was)
    dimension: int | None
    load_seconds: float | None
    embed_seconds: float | None
    error: str | None = None


@dataclass(frozen=True)
class ModelHealth:
    configured: str  # the model setting
    configured_key: str  # the vector space it makes (model@truncation)
    recorded: str | None  # what the stored vectors were made with (None: nothing stored)
    recorded_key: str | None
    dimension: int | None  # of the stored vectors
    probe: Probe | None = None

    @property
    def mismatch(self) -> bool:
        return self.recorded_key is not None and self.recorded_key != self.configured_key


@dataclass(frozen=True)
class CacheHealth:
    entries: int
    hits: int  # lookups by the recent operations (the ops window)
    misses: int
    hits_total: int  # since the database was created
    misses_total: int

    @property
    def hit_rate(self) -> float | None:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else None


@dataclass(frozen=True)
class OperationStats:
    """Figures store or search logged about themselves (see store.OPS_KEEP)."""

    name: str
    recent: int  # operations in the kept window
    since: str | None  # when the oldest of them finished
    p50_seconds: float | None
    p99_seconds: float | None
    total: int  # since the database was created
    total_seconds: float


@dataclass(frozen=True)
class BackupHealth:
    directory: str
    archives: int
    latest: str | None  # file name of the newest archive
    latest_at: str | None  # its modification time, ISO 8601 UTC
    age_seconds: float | None
    max_age_seconds: float | None  # setting backup_max_age; None: never warn


@dataclass(frozen=True)
class VectorIndexHealth:
    """A layer's vector index kept by the database server (pgvector HNSW): as found, and what
    the settings ask for (``wanted_*`` None: nothing stored yet, so no dimension to ask)."""

    layer: str
    found: VectorIndexFacts
    wanted_type: str | None
    wanted_m: int
    wanted_ef_construction: int

    @property
    def matches(self) -> bool:
        f = self.found
        return (f.present and f.valid and self.wanted_type in (None, f.type)
                and (f.m, f.ef_construction) == (self.wanted_m, self.wanted_ef_construction))

    def to_dict(self) -> dict:
        return {**asdict(self.found), "wanted": {
            "type": self.wanted_type, "m": self.wanted_m,
            "ef_construction": self.wanted_ef_construction}, "matches": self.matches}


@dataclass(frozen=True)
class Health:
    """Everything ``magray status`` reports."""

    version: str
    checked_at: str
    data_dir: str
    database: str
    indexes: str
    config_file: str
    config_exists: bool
    backups_dir: str
    database_exists: bool
    database_bytes: int  # the database file and its write-ahead log
    store_id: str | None
    layers: tuple[LayerHealth, ...]
    model: ModelHealth
    cache: CacheHealth
    operations: tuple[OperationStats, ...]
    backups: BackupHealth
    alerts: tuple[Alert, ...]
    trash: int = 0  # records in the trash, restorable until clean purges them
    # a memory on a database server (PostgreSQL): the server, and each layer's HNSW index;
    # None and () for a memory in a file (SQLite), whose JSON keeps its shape
    server: ServerFacts | None = None
    vector_indexes: tuple[VectorIndexHealth, ...] = ()

    @property
    def healthy(self) -> bool:
        return not any(a.severity == "error" for a in self.alerts)

    def layer(self, name: str) -> LayerHealth:
        return next(layer for layer in self.layers if layer.name == name)

    def to_dict(self) -> dict:
        """The ``--json`` document (its keys are a contract: tests pin them)."""
        model = asdict(self.model)
        model["mismatch"] = self.model.mismatch
        cache = asdict(self.cache)
        cache["hit_rate"] = self.cache.hit_rate
        document = {
            "healthy": self.healthy,
            "version": self.version,
            "checked_at": self.checked_at,
            "paths": {"data": self.data_dir, "database": self.database,
                      "indexes": self.indexes, "config": self.config_file,
                      "backups": self.backups_dir},
            "config_exists": self.config_exists,
            "database": {"exists": self.database_exists, "bytes": self.database_bytes,
                         "store_id": self.store_id},
            "layers": {layer.name: {**asdict(layer), "capacity_used": layer.capacity_used}
                       for layer in self.layers},
            "model": model,
            "cache": cache,
            "operations": {op.name: asdict(op) for op in self.operations},
            "backups": asdict(self.backups),
            "trash": {"records": self.trash},
            "alerts": [asdict(a) for a in self.alerts],
        }
        if self.server is not None:  # only then: the SQLite document keeps its keys
            server = asdict(self.server)
            del server["bytes"], server["tables"]  # database.bytes and database.exists
            server["vector_indexes"] = {v.layer: v.to_dict() for v in self.vector_indexes}
            document["server"] = server
        return document


# -- checking ------------------------------------------------------------------------------


def check(home: str | os.PathLike | None = None, *, settings: config.Settings | None = None,
          check_model: bool = False, embedder: "Embedder | None" = None) -> Health:
    """Look at the memory under ``home`` and report its health, changing nothing.

    ``check_model`` also loads the configured model (or ``embedder``) and embeds a probe.
    A missing database is an empty, healthy memory; nothing is created for it.
    """
    where = paths.resolve(home)
    settings = settings or config.load(where.config_file)
    return _Checker(where, settings).run(check_model, embedder)


class _Checker:
    def __init__(self, where: paths.Paths, settings: config.Settings):
        self.where = where
        self.settings = settings
        self.now = clock.now()
        self.alerts: list[Alert] = []
        self.store: Reader | None = None
        self.tables: set[str] = set()
        # the `database` setting: None (the home's file), another file, or a server's URL
        from .db.pg.target import parse_database  # imports no database driver

        self.target = parse_database(settings.database or None, where.data)
        self.database = self.target if isinstance(self.target, Path) else where.database
        # what a database server reported (None: the memory is a file), and its indexes
        self.server: ServerFacts | None = None
        self.server_indexes: dict[str, VectorIndexFacts] | None = None
        self.index_health: list[VectorIndexHealth] = []

    def alert(self, severity: str, code: str, message: str, remedy: str,
              layer: str | None = None) -> None:
        self.alerts.append(Alert(severity, code, message, remedy, layer))

    def run(self, check_model: bool, embedder: "Embedder | None") -> Health:
        store = self._open()
        try:
            facts = self._read_database(store)
        finally:
            if store is not None:
                store.close()
        model = facts["model"]
        if check_model:
            model = self._probe(model, embedder)
        backups = self._backups(sum(layer.records for layer in facts["layers"]))
        where = self.where
        order = {severity: rank for rank, severity in enumerate(reversed(SEVERITIES))}
        if self.server is not None:  # the server measured it, and knows whether it is new
            database, exists, size = self.target.url, self.server.tables, self.server.bytes
        else:
            path = self.database
            database, exists = str(path), path.is_file()
            size = _size(path) + _size(_wal(path))
        return Health(
            version=__version__, checked_at=clock.iso(self.now), data_dir=str(where.data),
            database=database, indexes=str(where.indexes),
            config_file=str(where.config_file), config_exists=where.config_file.is_file(),
            backups_dir=str(where.backups), database_exists=exists, database_bytes=size,
            store_id=facts["store_id"],
            layers=facts["layers"], model=model, cache=facts["cache"],
            operations=facts["operations"], backups=backups, trash=facts["trash"],
            alerts=tuple(sorted(self.alerts, key=lambda a: order[a.severity])),
            server=self.server, vector_indexes=tuple(self.index_health))

    # -- the database ---------------------------------------------------------------------

    def _open(self) -> Reader | None:
        """The database, read-only; None when there is none (or it cannot be read)."""
        if self.target is not None and not isinstance(self.target, Path):
            return self._open_server()
        path = self.database
        if not path.is_file():
            return None
        try:
            reader = Reader.open_readonly(path, busy_timeout=self.settings.busy_timeout)
        except MagrayError as exc:
            self._unreadable(exc)
            return None
        try:
            self.tables = reader.tables()
        except (sqlite3.DatabaseError, MagrayError) as exc:
            reader.close()
            self._unreadable(exc)
            return None
        if not REQUIRED_TABLES <= self.tables:
            reader.close()
            self.alert("error", "database_unreadable",
                       f"{path} is not a magray database",
                       "move it away, or restore a backup with `magray restore`")
            return None
        return reader

    def _open_server(self) -> Reader | None:
        """A memory on a database server, read-only (an unreachable server raises its one
        line). What the server reports decides the rest: a database without magray's tables
        is an empty memory, as a missing file is."""
        from .db.pg import open_for_status  # the driver is imported only now

        store = open_for_status(self.target, busy_timeout=self.settings.busy_timeout)
        try:
            self.server = store.server()
            self.server_indexes = store.vector_indexes()
            self._server_alerts(self.server)
            if not self.server.tables:
                store.close()
                return None
            self.tables = store.tables()
        except BaseException:
            store.close()
            raise
        if not REQUIRED_TABLES <= self.tables:
            store.close()
            self.alert("error", "database_unreadable",
                       f"the database {self.server.database} on {self.server.server} is not "
                       "a magray database", "point the database setting at another database")
            return None
        return store

    def _server_alerts(self, server: ServerFacts) -> None:
        if server.vector_version is not None:
            return
        if server.vector_available is None:
            self.alert("error", "pgvector_missing",
                       f"the PostgreSQL server at {server.server} has no pgvector extension: "
                       "magray cannot keep vectors there",
                       "install pgvector on the server (e.g. the postgresql-NN-pgvector "
                       f"package), then CREATE EXTENSION vector in database {server.database}")
        else:
            self.alert("warning", "pgvector_missing",
                       f"the database {server.database} has no vector extension yet (the "
                       f"server offers pgvector {server.vector_available})",
                       "magray creates it on the first store when the role may; otherwise an "
                       "administrator runs config/postgres-role.sql (CREATE EXTENSION vector)")

    def _trash(self, store: Reader) -> int:
        if "trash" not in self.tables:  # a database the running magray has not migrated yet
            return 0
        return store.trash_count()

    def _unreadable(self, exc: Exception) -> None:
        self.alert("error", "database_unreadable",
                   f"the database {self.database} cannot be read: {exc}",
                   "restore the latest backup with `magray restore`")

    def _read_database(self, store: Reader | None) -> dict[str, Any]:
        if store is not None:
            self.store, alerts_before = store, len(self.alerts)
            try:
                with store.read():  # one snapshot for every figure
                    self._secrets(store)
                    model = self._model(store)
                    return {"store_id": store.store_id, "model": model,
                            "layers": tuple(self._layer(name, model.dimension)
                                            for name in LAYERS),
                            "cache": self._cache(), "operations": self._operations(),
                            "trash": self._trash(store)}
            except (sqlite3.DatabaseError, MagrayError) as exc:  # damaged: report what is known
                del self.alerts[alerts_before:]
                self._unreadable(exc)
            self.store = None
        return {"store_id": None, "model": self._model(None),
                "layers": tuple(self._layer(name) for name in LAYERS),
                "cache": CacheHealth(0, 0, 0, 0, 0), "trash": 0,
                "operations": tuple(OperationStats(op, 0, None, None, None, 0, 0.0)
                                    for op in OPERATIONS)}

    def _secrets(self, store: Reader) -> None:
        # The count the last scan (or a write with secrets=allow) left: status never scans.
        found = int(store.meta("secrets_found") or 0)
        if found:
            self.alert("warning", "secrets_stored",
                       f"{found} record(s) hold credentials (keys, tokens or passwords)",
                       "run `magray scan` to list them and `magray scan --apply` to redact them")

    # -- layers and their indexes ---------------------------------------------------------

    def _layer(self, name: str, dim: int | None = None) -> LayerHealth:
        ttl = config.layer_ttl(self.settings, name)
        capacity = config.layer_capacity(self.settings, name)
        records, oldest, newest, expired = 0, None, None, 0
        if self.store is not None:
            records = self.store.count(name)
            oldest, newest = self.store.created_range(name)
            cutoff = LayerPolicy(name, ttl, capacity).cutoff(self.now)
            if cutoff is not None and records:
                expired = self.store.count_expired(name, cutoff)
        layer = LayerHealth(name, records, oldest, newest,
                            None if ttl is None else ttl.total_seconds(), expired, capacity,
                            self._index(name, records, dim))
        self._layer_alerts(layer)
        return layer

    def _layer_alerts(self, layer: LayerHealth) -> None:
        name = layer.name
        if layer.expired:
            ttl = self.settings.values[f"ttl_{name}"]
            self.alert("warning", "expired_pending",
                       f"{layer.expired:,} record(s) in {name} are past the layer's TTL of {ttl}",
                       "run `magray clean` (in cron, to keep up): it moves them to the trash, "
                       "restorable with `magray trash restore` for trash_days", name)
        if layer.records > layer.capacity:
            self.alert("warning", "over_capacity",
                       f"{name} holds {layer.records:,} records, over its capacity of "
                       f"{layer.capacity:,}",
                       f"run `magray clean`, or raise capacity_{name}", name)
        elif layer.records >= NEAR_CAPACITY * layer.capacity:
            self.alert("info", "near_capacity",
                       f"{name} holds {layer.records:,} records, {layer.capacity_used:.0%} "
                       f"of its capacity of {layer.capacity:,}",
                       f"promote what matters (`magray promote`), or raise capacity_{name}", name)

    def _index(self, layer: str, records: int, dim: int | None) -> IndexHealth:
        """Does the layer's index agree with the database? Sidecar, stat and header only."""
        if self.server_indexes is not None:  # the server keeps the layer's index itself
            return self._server_index(layer, records, dim)
        from .index import IndexSpec, LayerIndex

        path = self.where.index_file(layer)
        size = _size_or_none(path)
        if self.store is None or dim is None:  # no vectors stored: nothing to index
            return IndexHealth(str(path), size, None, fresh=True)
        s = self.settings
        spec = IndexSpec(dim=dim, dtype=s.index_dtype, m=s.hnsw_m,
                         ef_construction=s.hnsw_ef_construction)
        index = LayerIndex(self.where.indexes, layer, spec, self.store)  # type: ignore[arg-type]
        alert, found = self._judge(index, records)
        if alert is not None and alert.severity == "error" and index.lock_path.exists():
            # A writer may be between renaming the index file and its sidecar: wait for it
            # (a shared lock changes nothing on disk) and look again.
            try:
                with locked(index.lock_path, timeout=self.settings.busy_timeout, shared=True):
                    alert, found = self._judge(index, records)
            except BusyError:
                pass
        if alert is not None:
            self.alerts.append(alert)
        return found

    def _server_index(self, layer: str, records: int, dim: int | None) -> IndexHealth:
        """A layer's HNSW index on the server: present, valid, built as the settings ask."""
        from .db.pg.query import vector_type

        s, found = self.settings, self.server_indexes[layer]
        wanted = None if dim is None else vector_type(s.index_dtype, dim)[0]
        health = VectorIndexHealth(layer, found, wanted, s.hnsw_m, s.hnsw_ef_construction)
        self.index_health.append(health)
        problem = ""
        if not found.present and records:
            problem = "not built"
            self.alert("warning", "index_stale",
                       f"the HNSW index for {layer} is not built on the server ({records:,} "
                       "records: searches read every vector)", SERVER_INDEX, layer)
        elif found.present and not found.valid:
            problem = "invalid (its build was interrupted)"
            self.alert("warning", "index_invalid",
                       f"the HNSW index for {layer} is invalid (its build was interrupted; "
                       "searches read every vector)", SERVER_INDEX, layer)
        elif found.present and not health.matches:
            problem = (f"built as {found.type} m={found.m} ef_construction="
                       f"{found.ef_construction}; the settings ask {wanted or found.type} "
                       f"m={s.hnsw_m} ef_construction={s.hnsw_ef_construction}")
            self.alert("warning", "index_settings",
                       f"the HNSW index for {layer} was built with other settings than the "
                       f"current ones ({problem})", SERVER_INDEX, layer)
        return IndexHealth(found.name, found.bytes, records if found.present else None,
                           fresh=not problem, problem=problem)

    def _judge(self, index: "LayerIndex", records: int) -> tuple[Alert | None, IndexHealth]:
        layer, path, spec = index.layer, index.path, index.spec
        size = _size_or_none(path)
        state = index.state()
        if state is None and size is None and records == 0 and not index.sidecar.exists():
            return None, IndexHealth(str(path), None, None, fresh=True)  # never needed one
        problem = index.staleness(state)
        header = read_index_header(path) if size is not None else None
        severity, code, message, remedy = "error", "", "", OPTIMIZE
        if state is None and size is None and not index.sidecar.exists():
            # Never built (or the indexes directory was cleared): the next search builds it.
            severity, code = "warning", "index_stale"
            message = f"the index for {layer} is not built yet ({records:,} records)"
            remedy = "run `magray optimize` (the next search also builds it)"
        elif state is None:
            code = "index_corrupt"
            message = f"the index metadata for {layer} is unreadable"
        elif state.store_id != self.store.store_id:
            code, message = "index_foreign", f"the index for {layer} belongs to another database"
        elif size is None:
            code, message = "index_missing", f"the index file for {layer} is missing"
        elif header is None:
            code, message = "index_corrupt", f"the index file for {layer} is damaged (no header)"
        elif header != (state.count, state.spec.dim):
            code = "index_corrupt"
            message = (f"the index file for {layer} is damaged: its header says {header[0]} "
                       f"vectors of {header[1]} dimensions, its metadata {state.count} of "
                       f"{state.spec.dim}")
        elif state.spec != spec:
            severity, code = "warning", "index_settings"
            message = f"the index for {layer} was built with other settings than the current ones"
            remedy = "run `magray optimize` to rebuild it (the next search also does)"
        elif problem.startswith("behind"):  # a pending update, not damage: see staleness()
            severity, code = "warning", "index_stale"
            message = f"the index for {layer} is stale: {problem}"
            remedy = "run `magray optimize` (the next search also catches up)"
        elif problem:
            code = "index_corrupt" if "changed" in problem else "index_mismatch"
            message = f"the index for {layer} disagrees with the database: {problem}"
        alert = Alert(severity, code, message, remedy, layer) if code else None
        return alert, IndexHealth(str(path), size, state.count if state else None,
                                  fresh=not problem, problem=problem)

    # -- the model, its cache, and the operations -----------------------------------------

    def _model(self, store: Reader | None) -> ModelHealth:
        s = self.settings
        configured_key = model_key(s.model, s.truncate_dim)
        recorded = recorded_key = dim = None
        if store is not None:
            recorded, recorded_key = store.meta("model"), store.meta("model_key")
            dim = int(store.meta("dim")) if store.meta("dim") else None
        health = ModelHealth(s.model, configured_key, recorded, recorded_key, dim)
        if health.mismatch:
            self.alert("error", "model_mismatch",
                       f"the stored vectors were made with {recorded_key} ({dim} dimensions) "
                       f"but the configured model is {configured_key}",
                       f"run `magray optimize --reembed`, or set model back to {recorded}")
        return health

    def _cache(self) -> CacheHealth:
        entries = self.store.cache_entries()
        if "ops" not in self.tables:
            return CacheHealth(entries, 0, 0, 0, 0)
        return CacheHealth(entries, *self.store.cache_use())

    def _operations(self) -> tuple[OperationStats, ...]:
        stats = []
        for op in OPERATIONS:
            if "ops" not in self.tables:
                stats.append(OperationStats(op, 0, None, None, None, 0, 0.0))
                continue
            seconds, since, count, total = self.store.operation(op)
            stats.append(OperationStats(op, len(seconds), since, percentile(seconds, 0.5),
                                        percentile(seconds, 0.99), count, total))
        return tuple(stats)

    def _probe(self, model: ModelHealth, embedder: "Embedder | None") -> ModelHealth:
        """The deep check: load the model, embed one text, say where it ran and how fast."""
        requested = self.settings.device
        load_s = embed_s = dim = None
        device = error = None
        name = model.configured_key
        try:
            if embedder is None:
                from .embedding import from_settings

                embedder = from_settings(self.settings, self.where.data)
            name = embedder.key
            started = time.perf_counter()
            dim = embedder.dim  # loads the model
            load_s = time.perf_counter() - started
            started = time.perf_counter()
            vector = embedder.embed_query(PROBE_TEXT)
            embed_s = time.perf_counter() - started
            dim = int(vector.shape[-1])
            # Queries may run on ONNX Runtime (CPU) by design; the device worth reporting is
            # the one bulk documents are embedded on, so embed a batch that takes that path.
            from .embedding import SMALL_BATCH

            embedder.embed_documents([PROBE_TEXT] * (SMALL_BATCH + 1))
            device = getattr(embedder, "device", None) or "cpu"
        except Exception as exc:  # noqa: BLE001 - whatever breaks the model is the finding
            error = str(exc) if isinstance(exc, MagrayError) else f"{type(exc).__name__}: {exc}"
            self.alert("error", "model_unusable", f"the model cannot be used: {error}",
                       "fix setting 'model' (or its files), then run "
                       "`magray status --check-model` again")
        cuda_unused = None
        if error is None and device != "cuda":
            cuda_unused = ("device is set to cpu" if requested == "cpu" else
                           getattr(embedder, "fallback_reason", None) or "the model runs on CPU")
            if requested == "cuda":
                self.alert("warning", "model_cpu_fallback",
                           f"device is set to cuda but the model runs on the CPU: {cuda_unused}",
                           "check the CUDA driver and torch build, or set device = \"cpu\"")
        if dim is not None and model.dimension is not None and dim != model.dimension:
            self.alert("error", "model_dimension",
                       f"the model makes {dim}-dimensional vectors but the stored ones have "
                       f"{model.dimension}",
                       "run `magray optimize --reembed`, or set the model back")
        probe = Probe(name, requested, device, cuda_unused, dim, load_s, embed_s, error)
        return replace(model, probe=probe)

    # -- backups --------------------------------------------------------------------------

    def _backups(self, records: int) -> BackupHealth:
        directory = self.where.backups
        archives: list[tuple[float, str]] = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if (entry.name.endswith(BACKUP_SUFFIXES) and not entry.name.startswith(".")
                            and entry.is_file(follow_symlinks=False)):
                        archives.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
        except OSError:
            pass  # no backups directory (yet)
        max_age = config.duration(self.settings, "backup_max_age")
        max_age_s = None if max_age is None else max_age.total_seconds()
        if not archives:
            if records:
                self.alert("info", "backup_none", "there is no backup yet",
                           "run `magray backup` (and add it to cron)")
            return BackupHealth(str(directory), 0, None, None, None, max_age_s)
        mtime, name = max(archives)
        age = self.now.timestamp() - mtime
        if max_age_s is not None and age > max_age_s:
            self.alert("warning", "backup_old",
                       f"the newest backup ({name}) is {units.duration(age)} old, past "
                       f"backup_max_age = {self.settings.backup_max_age}",
                       "run `magray backup` (cron: `magray backup --keep-daily 7 --keep-weekly 4`)")
        latest_at = clock.iso(datetime.fromtimestamp(mtime, timezone.utc))
        return BackupHealth(str(directory), len(archives), name, latest_at, age, max_age_s)


# -- small pieces ----------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when it is empty)."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


_HEADER_MAGIC = b"usearch"
_HEADER_MAJOR = 2  # the file format of every usearch 2.x (pyproject caps usearch below 3)


def read_index_header(path: Path) -> tuple[int, int] | None:
    """(vectors, dimensions) from a usearch file's header; None when the file has no readable
    header. A usearch 2 file is read here, a few dozen bytes, because importing usearch (and
    numpy) would cost status about a tenth of a second; a file of another format version
    goes to usearch's own ``Index.metadata``. Tests pin this reader to that one on real
    files. The file starts with the vector matrix (rows and row bytes as 32- or 64-bit
    integers, then the data), followed by the dense-index head: magic, version (major,
    minor, patch), four kind bytes, then present count, deleted count and dimensions."""
    try:
        with open(path, "rb") as handle:
            head = _find_head(handle)
    except (OSError, OverflowError, ValueError):
        return None
    if head is None:
        return None
    if struct.unpack_from("<H", head, len(_HEADER_MAGIC))[0] != _HEADER_MAJOR:
        return _header_by_usearch(path)
    present, _deleted, dims = struct.unpack_from("<QQQ", head, 17)
    return present, dims


def _find_head(handle) -> bytes | None:
    prefix = handle.read(16)
    offsets = [0]
    for width, fmt in ((4, "<II"), (8, "<QQ")):
        if len(prefix) >= 2 * width:
            rows, row_bytes = struct.unpack_from(fmt, prefix)
            offsets.append(2 * width + rows * row_bytes)
    for offset in offsets:
        handle.seek(offset)
        head = handle.read(41)
        if len(head) == 41 and head.startswith(_HEADER_MAGIC):
            return head
    return None


def _header_by_usearch(path: Path) -> tuple[int, int] | None:
    from .index import usearch_index

    try:
        meta = usearch_index().metadata(str(path))
    except (RuntimeError, ValueError):  # what usearch raises for a file it cannot read
        return None
    return (int(meta["count_present"]), int(meta["dimensions"])) if meta else None


def _size(path: Path) -> int:
    return _size_or_none(path) or 0


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _wal(database: Path) -> Path:
    return database.with_name(database.name + "-wal")


# -- Prometheus text exposition ----------------------------------------------------------


def prometheus(health: Health) -> str:
    """The health as Prometheus text (format 0.0.4), for node_exporter's textfile collector."""
    out = _Exposition()
    h = health
    out.metric("magray_healthy", "gauge", "1 when no error-level alert stands, else 0",
               [({}, int(h.healthy))])
    out.metric("magray_info", "gauge", "the magray version and the configured model",
               [({"version": h.version, "model": h.model.configured_key}, 1)])
    counts = {s: sum(a.severity == s for a in h.alerts) for s in SEVERITIES}
    out.metric("magray_alerts", "gauge", "standing alerts, by severity",
               [({"severity": s}, n) for s, n in counts.items()])
    out.metric("magray_alert", "gauge", "one series per standing alert",
               [({"severity": a.severity, "code": a.code, "layer": a.layer or ""}, 1)
                for a in h.alerts])
    out.metric("magray_database_bytes", "gauge", "size of the database and its write-ahead log",
               [({}, h.database_bytes)])
    per_layer: list[tuple[str, str, Callable[[LayerHealth], Any]]] = [
        ("magray_records", "records in the layer", lambda x: x.records),
        ("magray_records_expired", "records past the layer's TTL, waiting for clean",
         lambda x: x.expired),
        ("magray_layer_capacity_records", "most records the layer keeps", lambda x: x.capacity),
        ("magray_layer_capacity_ratio", "records / capacity", lambda x: x.capacity_used),
        ("magray_layer_ttl_seconds", "the layer's TTL (absent: none)", lambda x: x.ttl_seconds),
        ("magray_oldest_record_timestamp_seconds", "creation time of the oldest record",
         lambda x: _epoch(x.oldest)),
        ("magray_newest_record_timestamp_seconds", "creation time of the newest record",
         lambda x: _epoch(x.newest)),
        ("magray_index_bytes", "size of the layer's index file", lambda x: x.index.bytes),
        ("magray_index_records", "vectors the index holds, per its metadata",
         lambda x: x.index.records),
        ("magray_index_fresh", "1 when the index agrees with the database",
         lambda x: int(x.index.fresh)),
    ]
    for name, help_text, value in per_layer:
        out.metric(name, "gauge", help_text,
                   [({"layer": x.name}, value(x)) for x in h.layers])
    m = h.model
    out.metric("magray_model_mismatch", "gauge",
               "1 when the configured model is not the one the data was embedded with",
               [({}, int(m.mismatch))])
    out.metric("magray_embedding_dimensions", "gauge", "dimension of the stored vectors",
               [({}, m.dimension)])
    if m.probe is not None:
        p = m.probe
        out.metric("magray_model_probe_seconds", "gauge", "deep check: model load and embed time",
                   [({"stage": "load"}, p.load_seconds), ({"stage": "embed"}, p.embed_seconds)])
        out.metric("magray_model_device", "gauge", "deep check: the device the model ran on",
                   [({"device": p.device or "none"}, 1)])
    c = h.cache
    out.metric("magray_embedding_cache_entries", "gauge", "vectors in the embedding cache",
               [({}, c.entries)])
    out.metric("magray_embedding_cache_hit_ratio", "gauge",
               "share of recent embedding lookups served by the cache", [({}, c.hit_rate)])
    out.metric("magray_embedding_cache_hits", "counter", "embedding lookups served by the cache",
               [({}, c.hits_total)])
    out.metric("magray_embedding_cache_misses", "counter", "embedding lookups that ran the model",
               [({}, c.misses_total)])
    out.metric("magray_operations", "counter", "store and search calls",
               [({"op": op.name}, op.total) for op in h.operations])
    samples: list[tuple[dict, Any]] = []
    for op in h.operations:
        samples += [({"op": op.name, "quantile": "0.5"}, op.p50_seconds),
                    ({"op": op.name, "quantile": "0.99"}, op.p99_seconds)]
        samples += [({"op": op.name, "__suffix": "_sum"}, op.total_seconds),
                    ({"op": op.name, "__suffix": "_count"}, op.total)]
    out.metric("magray_operation_duration_seconds", "summary",
               "wall time of store and search calls (quantiles over the recent window)", samples)
    if h.server is not None:
        _server_metrics(out, h)
    b = h.backups
    out.metric("magray_backups", "gauge", "backup archives present", [({}, b.archives)])
    out.metric("magray_last_backup_timestamp_seconds", "gauge", "time of the newest backup",
               [({}, _epoch(b.latest_at))])
    out.metric("magray_last_backup_age_seconds", "gauge", "age of the newest backup",
               [({}, b.age_seconds)])
    return out.text()


def _server_metrics(out: "_Exposition", h: Health) -> None:
    """A memory on a database server: the server, its round trip, each layer's HNSW index."""
    s = h.server
    out.metric("magray_server_info", "gauge", "the database server and its versions",
               [({"engine": s.engine, "server": s.server, "database": s.database,
                  "version": s.version, "pgvector": s.vector_version or ""}, 1)])
    out.metric("magray_server_latency_seconds", "gauge", "one round trip to the server",
               [({}, s.latency_seconds)])
    out.metric("magray_vector_index_present", "gauge",
               "1 when the layer's HNSW index exists on the server (and is valid)",
               [({"layer": v.layer}, int(v.found.present and v.found.valid))
                for v in h.vector_indexes])
    out.metric("magray_vector_index_matches", "gauge",
               "1 when the layer's HNSW index was built as the settings ask",
               [({"layer": v.layer}, int(v.matches)) for v in h.vector_indexes])


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help_text: str, samples: list[tuple[dict, Any]]
               ) -> None:
        samples = [(labels, value) for labels, value in samples if value is not None]
        if not samples:
            return
        family = name + "_total" if kind == "counter" else name
        self.lines.append(f"# HELP {family} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {family} {kind}")
        for labels, value in samples:
            labels = dict(labels)
            suffix = labels.pop("__suffix", "_total" if kind == "counter" else "")
            rendered = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items())
            self.lines.append(f"{name}{suffix}{{{rendered}}} {_number(value)}" if rendered
                              else f"{name}{suffix} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: Any) -> str:
    if isinstance(value, bool) or isinstance(value, int):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _epoch(iso: str | None) -> float | None:
    return None if iso is None else clock.parse_time(iso).timestamp()
