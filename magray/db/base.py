"""The storage boundary: what magray's services ask of a database (``Repository``).

``db.store.Store`` implements it on SQLite; another engine (PostgreSQL) implements the same
methods and nothing above ``magray.db`` changes. The rest of magray never sees SQL, a
cursor or a connection: only these methods, the values in ``magray.records`` and the few
types below.

Transactions: ``with repo.write() as tx:`` yields an opaque handle; every method that
writes inside the caller's transaction takes it first (``repo.insert(tx, ...)``) and does
nothing else with it. Methods without ``tx`` run on their own (a write in its own short
transaction, a read on the current snapshot: ``with repo.read():`` holds one snapshot for
several reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import (TYPE_CHECKING, Any, ContextManager, Iterable, Iterator, Protocol,
                    Sequence, runtime_checkable)

if TYPE_CHECKING:
    import numpy as np

    from ..layers import Facts
    from ..records import Filters, NewRecord, Passage, Record, Source, Trashed

Tx = Any  # what write() yields: opaque, only handed back to the repository's methods
SOURCES = ("records", "trash")  # where stored text lives: what `magray scan` reads


@dataclass
class Op:
    """One store or search call being timed; written in the call's own write transaction."""

    name: str
    started: float  # time.perf_counter() at the call's start
    items: int = 0
    cache_hits: int = 0
    cache_misses: int = 0


@dataclass(frozen=True)
class Unchanged:
    """A record as a plan saw it: trash it only if it is still so (nobody used or moved it)."""

    layer: str
    access_count: int
    last_access: str | None


class VectorNeeded(Exception):
    """A text thought to be stored already was deleted before the write: embed it after all."""


@dataclass(frozen=True)
class ServerFacts:
    """A database server as ``magray status`` reports it (never with a password)."""

    engine: str  # "postgresql"
    server: str  # host[:port], or the Unix socket directory
    database: str
    user: str
    latency_seconds: float  # one round trip (the median of three)
    version: str  # the server's
    vector_version: str | None  # pgvector's in this database; None: not created here
    vector_available: str | None  # the version the server could create; None: not installed
    bytes: int  # the database's size on the server
    tables: bool  # magray's tables exist (False: nothing stored yet)


@dataclass(frozen=True)
class VectorIndexFacts:
    """One layer's vector index in the engine, as found (not as configured)."""

    name: str
    present: bool
    valid: bool = False  # False: an interrupted build left it unusable
    type: str | None = None  # what it indexes, e.g. vector(384) or halfvec(384)
    m: int | None = None
    ef_construction: int | None = None
    bytes: int | None = None


@runtime_checkable
class Repository(Protocol):
    """An open magray database: records and their vectors, the trash, the embedding cache,
    the index log, passages, sources, metadata and the operation log."""

    path: Path  # the database (backups, sizes and messages name it)
    busy_timeout: float  # seconds a write waits for another process's

    # -- opening, transactions, metadata ----------------------------------------------------
    def close(self) -> None:
        """Close the connection."""
    def read(self) -> ContextManager[Tx]:
        """One consistent snapshot for the reads inside the block."""
    def write(self) -> ContextManager[Tx]:
        """A write transaction, taken up front (waiting up to busy_timeout); all or nothing."""
    def migrate(self) -> None:
        """Bring the schema up to date (done on open; again after a restore loaded an older one)."""
    def reloaded(self) -> None:
        """Forget what was read once and kept: a restore replaced the database."""
    def meta(self, key: str) -> str | None:
        """A metadata value (model, model_key, dim, store_id, ...), None when unset."""
    def set_meta(self, tx: Tx, key: str, value: str) -> None:
        """Set a metadata value inside a write transaction."""
    def add_to_meta(self, key: str, by: int) -> None:
        """Add ``by`` to the number a metadata key holds (created as ``by``)."""
    @property
    def store_id(self) -> str:
        """This database's identity, made once when it was created."""
    def model_meta(self, tx: Tx | None = None) -> tuple[str | None, int | None]:
        """(model key, dimension) the stored vectors were made with; (None, None) before any
        (read in ``tx`` for the check that must not race a write)."""
    def tables(self) -> set[str]:
        """The tables the database holds (tells which migrations an old one lacks)."""

    # -- records -------------------------------------------------------------------------
    def count(self, layer: str) -> int:
        """Records in a layer."""
    def existing(self, layer: str, hashes: Sequence[str]) -> set[str]:
        """The content hashes among ``hashes`` already stored in ``layer``."""
    def insert(self, tx: Tx, item: NewRecord, vector: np.ndarray | None, when: str
               ) -> tuple[int, bool]:
        """Store a new text, or count the same text in its layer as an access: (id, duplicate)."""
    def insert_record(self, tx: Tx, record: Record, vector: np.ndarray) -> int:
        """Insert a complete record as given (an import); its id kept when never issued."""
    def find(self, tx: Tx, layer: str, digest: str) -> Record | None:
        """The record holding the text with this content hash in this layer, if any."""
    def update_metadata(self, tx: Tx, record: Record) -> None:
        """Overwrite a record's metadata (not its text, layer or vector) by id."""
    def delete(self, tx: Tx, ids: Sequence[int]) -> None:
        """Delete records for good (their vectors leave the indexes through the log)."""
    def touch(self, ids: Sequence[int], op: Op | None = None) -> None:
        """Count records as accessed now, and log ``op``, in one transaction."""
    def record_op(self, tx: Tx, op: Op) -> None:
        """Log a finished store or search call (status's latency and cache figures)."""
    def issued_through(self) -> int:
        """The highest record id ever issued (ids are never reused)."""
    def records(self, ids: Sequence[int]) -> dict[int, Record]:
        """Records by id (missing ids are absent)."""
    def records_and_vectors(self, ids: Sequence[int], dim: int
                            ) -> tuple[dict[int, Record], np.ndarray]:
        """Records by id and their vectors (rows in the dict's order), in one read."""
    def vectors(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids that exist, their vectors as a matrix)."""
    def layer_vectors(self, layer: str, dim: int, batch: int = 8192
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every (ids, vectors) of a layer, in batches: what an index is rebuilt from."""
    def layer_ids(self, layer: str) -> list[int]:
        """The ids of a layer's records, ascending."""
    def ids_in_layer(self, ids: Sequence[int], layer: str) -> list[int]:
        """Those of ``ids`` whose record is in ``layer``."""
    def texts(self, ids: Iterable[int], layer: str | None = None) -> dict[int, str]:
        """The text of each of ``ids`` that exists (and is in ``layer``, if given)."""
    def recent(self, layers: Sequence[str], filters: Filters, limit: int | None
               ) -> list[Record]:
        """Records in ``layers`` passing ``filters``, newest first."""
    def dump(self, layers: Sequence[str], filters: Filters, *, vectors: bool = False,
             by_layer: bool = False, batch: int = 512
             ) -> Iterator[tuple[Record, bytes | None]]:
        """Every matching record (with its raw float32 vector if asked), in batches."""
    def filtered_ids(self, layers: Sequence[str], filters: Filters, limit: int | None = None
                     ) -> list[int]:
        """Ids of records in ``layers`` that pass ``filters``."""
    def keyword_search(self, text: str, layers: Sequence[str], filters: Filters, limit: int
                       ) -> list[tuple[int, float]]:
        """(id, relevance) of records holding words of ``text``, best first (higher is better)."""
    def passing(self, ids: Iterable[int], layer: str, filters: Filters) -> list[int]:
        """Those of ``ids`` whose record is in ``layer`` and passes ``filters``."""

    # -- the trash -----------------------------------------------------------------------
    def trash(self, tx: Tx, record_id: int, reason: str, when: str, *,
              merged_into: int | None = None, unchanged: Unchanged | None = None) -> bool:
        """Move a record to the trash (only if still ``unchanged``, if given); False if not."""
    def trashed(self, ids: Sequence[int] | None = None) -> list[Trashed]:
        """Records in the trash (those of ``ids``, or all), most recently trashed first."""
    def untrash(self, tx: Tx, record_id: int, vector: bytes | None = None,
                accessed: str | None = None) -> None:
        """Put a trashed record back under its own id (a new vector, a new last access)."""
    def trash_vectors(self, ids: Sequence[int]) -> dict[int, tuple[bytes, str | None]]:
        """(raw vector, model key that made it) of trashed records."""
    def purge_trash(self, tx: Tx, ids: Sequence[int]) -> int:
        """Destroy these trashed records for good; how many."""
    def trash_count(self) -> int:
        """Records in the trash."""

    # -- the index log -------------------------------------------------------------------
    def log_head(self, layer: str) -> int:
        """The newest index-log sequence for a layer (0 when nothing was ever logged)."""
    def log_pruned_through(self, layer: str) -> int:
        """The sequence up to which a layer's log was pruned."""
    def changed_since(self, layer: str, seq: int) -> tuple[list[int], int]:
        """Ids whose vector entered or left ``layer`` after ``seq``, and the new head."""
    def prune_log(self, layer: str, through: int) -> int:
        """Forget log rows an index has saved; how many."""
    def extra_passages(self, layer: str) -> int:
        """Vectors a layer's index holds beyond one per record (further passages)."""

    # -- the embedding cache -------------------------------------------------------------
    def cached_vectors(self, model: str, hashes: Sequence[str], dim: int,
                       used_before: str = "") -> tuple[dict[str, np.ndarray], list[str]]:
        """(cached vectors by text hash, the hashes among them last used before a time)."""
    def touch_cache(self, model: str, hashes: Sequence[str], when: str) -> None:
        """Mark cache entries as used at ``when``."""
    def cache_vectors(self, tx: Tx, model: str, items: Iterable[tuple[str, np.ndarray]],
                      when: str) -> None:
        """Cache (text hash, vector) pairs of a model."""
    def prune_cache(self, limit_bytes: int, *, dry_run: bool = False) -> tuple[int, int]:
        """Drop the least recently used entries beyond a size: (entries, bytes)."""
    def keep_cache_of(self, models: Sequence[str]) -> int:
        """Delete the cached vectors of every model but these; how many."""
    def forget_cached_text(self, tx: Tx, digest: str) -> int:
        """Delete every model's cached vectors of one text (by content hash); how many."""
    def cache_entries(self) -> int:
        """Entries in the embedding cache."""
    def cache_use(self) -> tuple[int, int, int, int]:
        """Cache (hits, misses) of the recent operations, then of all time."""
    def operation(self, op: str) -> tuple[list[float], str | None, int, float]:
        """Recent durations (ascending), the oldest one's time, all-time count and seconds."""

    # -- the lifecycle -------------------------------------------------------------------
    def facts(self, layer: str, ids: Sequence[int] | None = None) -> list[Facts]:
        """What scoring looks at, for a layer's records (or those of ``ids``), by id."""
    def expired(self, layer: str, cutoff: str) -> list[Facts]:
        """The facts of a layer's records last used before ``cutoff``, by id."""
    def count_expired(self, layer: str, cutoff: str) -> int:
        """How many of a layer's records were last used before ``cutoff``."""
    def created_range(self, layer: str) -> tuple[str | None, str | None]:
        """When the oldest and the newest record of a layer were created."""
    def move(self, tx: Tx, record_id: int, layer: str, target: str, when: str
             ) -> tuple[str, int | None]:
        """Move a record up ("promoted"), into its twin there ("merged", id), or "changed"."""

    # -- maintenance ---------------------------------------------------------------------
    def compact(self) -> None:
        """Reclaim free space, refresh the planner's statistics, empty the write-ahead log."""
    def optimize_keywords(self) -> str:
        """Check (rebuild if needed) and merge the keyword index: "optimized" or "rebuilt"."""
    def reembed_counts(self) -> tuple[int, int]:
        """(records with a new vector waiting for the switch, records without one)."""
    def restart_reembed(self, target: str | None) -> None:
        """Forget the waiting vectors; note the model a re-embedding is for (None: none)."""
    def unembedded(self, limit: int) -> list[tuple[int, str]]:
        """(id, text) of records with no new vector waiting yet, by id."""
    def stage_vectors(self, rows: Sequence[tuple[int, str, np.ndarray]]) -> None:
        """Keep new vectors waiting, (id, text, vector); skipped where the text changed."""
    def switch_vectors(self, name: str, key: str, dim: int) -> bool:
        """Swap all waiting vectors in with the model they belong to; False if some lack one."""

    # -- redaction -----------------------------------------------------------------------
    def every_text(self, source: str, batch: int = 2000) -> Iterator[Record]:
        """Every record of a source of stored text (``SOURCES``), by id."""
    def secure_delete(self, tx: Tx) -> None:
        """From now on, zero what this connection frees (a purge leaves no deleted text)."""
    def redact(self, tx: Tx, source: str, record: Record, changes: dict,
               vector: np.ndarray | None, when: str) -> bool:
        """Rewrite a record's redacted fields; True when it joined an equal text's record."""
    def scrub(self) -> None:
        """Leave no removed text in the files (rebuild the keyword index, compact, checkpoint)."""

    # -- passages ------------------------------------------------------------------------
    def insert_passages(self, tx: Tx, record_id: int,
                        parts: Sequence[tuple[Passage, np.ndarray]], layer: str | None = None
                        ) -> None:
        """Write a record's passages (replacing any); ``layer``: log it for that index."""
    def passage_vectors(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(record ids, vectors) of the passages after the first of these records."""
    def passages(self, ids: Iterable[int], dim: int
                 ) -> tuple[list[tuple[int, Passage]], np.ndarray]:
        """Every passage of these records: (record id, passage) and the vectors."""
    def unsplit(self, after: int, through: int, longer_than: int, limit: int
                ) -> list[tuple[int, str, str]]:
        """(id, text, layer) of long records in an id range that have no passages."""

    # -- sources: the files records were ingested from -----------------------------------
    def sources(self, ids: Iterable[int]) -> dict[int, Source]:
        """The file and lines each of ``ids`` came from, where it came from one."""
    def file_hashes(self, paths: Sequence[str]) -> dict[str, set[str]]:
        """The file hashes recorded for each path."""
    def records_from(self, path: str) -> dict[int, str]:
        """Record id -> content hash of the records ingested from a file."""
    def source_paths(self, prefixes: Sequence[str]) -> list[str]:
        """Every recorded path under (or equal to) one of ``prefixes``."""
    def put_source(self, tx: Tx, record_id: int, source: Source, file_hash: str) -> None:
        """Record that a record holds these lines of a file."""
    def drop_sources(self, tx: Tx, path: str, record_ids: Sequence[int] | None = None
                     ) -> None:
        """Forget that a file held these records (all when None)."""
    def still_sourced(self, ids: Sequence[int]) -> set[int]:
        """Those of ``ids`` that some file still holds."""

    # -- issue 18, item 6: lifecycle runs take turns -------------------------------------
    def lifecycle_lock(self) -> ContextManager[None]:
        """Held for a whole clean or promote: another client's run waits its turn (up to
        busy_timeout, then BusyError). SQLite needs none: its runs serialise on the write
        lock and every removal re-checks its record."""

    # -- issue 18, item 8: a batch stored at once -----------------------------------------
    def insert_many(self, tx: Tx, items: Sequence[tuple[NewRecord, np.ndarray | None]],
                    when: str) -> list[tuple[int, bool]]:
        """``insert`` for each (item, vector), in order: (id, duplicate) each. PostgreSQL
        sends the new records with one COPY."""

    # -- issue 18, item 3: what the database takes ----------------------------------------
    def database_bytes(self) -> int:
        """What the database takes: the SQLite file and its write-ahead log, or the
        PostgreSQL database's size on its server (``optimize`` reports before and after)."""

    # -- issue 18, item 2: an engine's own vector index ------------------------------------
    def layer_index(self, layer: str, spec: Any, *, ef_search: int) -> Any:
        """The engine's own index of a layer's vectors (pgvector's HNSW on PostgreSQL: an
        ``index.EngineIndex`` made for an ``index.IndexSpec``), or None when it keeps none
        and magray keeps a usearch file per layer (SQLite). (Typed Any: magray.index
        imports the db package, so naming its classes here would make a cycle.)"""

    # -- backup (issue 18, item 4): an archive holds a SQLite database, whatever the engine --
    # SQLite: magray/db/snapshot.py (its backup API); PostgreSQL: magray/db/pg/snapshot.py.
    def snapshot_to(self, target: Path) -> dict:
        """Write one consistent copy of the whole memory at ``target``: a SQLite database of
        the SQLite engine's schema, integrity-checked. Returns its facts (store id, model,
        model key, dim, counts per layer: ``db.snapshot.database_facts``)."""
    def contents(self) -> tuple[dict[str, int], int]:
        """What a restore would replace: the records per layer, and the records in the trash."""
    def exclusive(self) -> ContextManager[None]:
        """No other client writes (on SQLite: nor reads) until the block ends, from a restore's
        safety copy to the end of its load; BusyError after busy_timeout."""
    def prepare_load(self, staged: Path) -> None:
        """Ready an unpacked archive's database for ``load_snapshot`` (before the locks: it
        may rewrite the staged file; SQLite gives it the live page size)."""
    def load_snapshot(self, staged: Path, timeout: float) -> bool:
        """Replace the whole memory with the SQLite database at ``staged`` (an unpacked
        archive), all or nothing. True when the archive's index files fit what was loaded
        (they are put in place); False when every index is to be rebuilt from the vectors."""

    # -- status (issue 18, item 5): what `magray status` reports of the engine ------------
    def server(self) -> ServerFacts | None:
        """The database server (address, round trip, versions, size); None for a database
        that is a file (SQLite: status measures the file and reads the usearch headers)."""
    def vector_indexes(self) -> dict[str, VectorIndexFacts] | None:
        """The engine's own vector index of each layer (pgvector's HNSW), by layer; None
        when the engine keeps none (SQLite: the usearch files under the home's indexes/)."""
