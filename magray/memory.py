"""``Memory``: the library's front door and the composition root. It opens the store and
wires the services over it (Encoder, Indexes, Searcher, Writer, Trash); each method is
one call into the service that does the work.

    from magray import Memory
    with Memory.open() as memory:
        memory.store_texts(["use rg -uu to search ignored files"], tags=["shell"])
        for hit in memory.search("grep through gitignored files"):
            print(hit.score, hit.record.text)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np

from . import config, paths
from .embedding import Embedder, from_settings
from .errors import InputError
from .encoder import Encoder
from .index import Indexes, LayerIndex, SyncReport
from .ingest import check_layer
from .records import LAYERS, Filters, Hit, NewRecord, Record, Stored, Trashed
from .search import Searcher
from .db.pg import open_repository
from .db.store import Store
from .trash import Trash
from .write import Writer

if TYPE_CHECKING:
    from . import dedupe, lifecycle, maintenance, scan
    from .backup import BackupInfo, BackupResult, Listing, Pruned, RestoreResult, Retention
    from .documents.sync import IngestReport
    from .transfer import Entry, ImportReport

Progress = Callable[[int], None]


class Memory:
    """An open personal memory: records in three layers, searchable by meaning."""

    def __init__(self, where: paths.Paths, settings: config.Settings, store: Store,
                 embedder: Embedder | None = None, warn: Callable[[str], None] | None = None,
                 note: Callable[[str], None] | None = None):
        self.paths = where
        self._settings = settings
        self.db = store
        self.warn = warn or (lambda message: None)
        self.note = note  # what is happening during a long wait (making the ONNX copy)

        def warn_now(message: str) -> None:  # a caller may replace warn on an open Memory
            self.warn(message)

        self.encoder = Encoder(store, settings, where, embedder, warn=warn_now, note=note)
        self.indexes = Indexes(store, settings, where, dim=lambda: self.encoder.dim)
        self.searcher = Searcher(store, self.encoder, self.indexes, settings)
        self.writer = Writer(store, self.encoder, self.indexes, settings, warn_now,
                             near_duplicates=self._near_duplicates,
                             upgrade_passages=self._upgrade_passages)
        self.trash_can = Trash(store, self.encoder, self.indexes, warn_now, scrub=self._scrub)

    @property
    def settings(self) -> config.Settings:
        """The settings this memory was opened with; fixed for its life, since the services
        hold them (open another Memory with ``settings=`` to change them)."""
        return self._settings

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
        store = open_repository(settings.database, where.database,
                                busy_timeout=settings.busy_timeout)
        return cls(where, settings, store, embedder, warn, note)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Memory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The Writer's per-call helpers (magray/dedupe.py, magray/passages.py), made from the
    # services here, where they are wired.

    def _near_duplicates(self) -> "dedupe.NearDuplicates":
        from . import dedupe

        return dedupe.NearDuplicates(self.db, self.indexes, self.encoder, self.settings)

    def _upgrade_passages(self) -> int:
        from . import passages

        return passages.upgrade(self.db, self.encoder)

    # -- the model and the indexes (magray/encoder.py, magray/index.py) ---------------

    @property
    def embedder(self) -> Embedder:
        return self.encoder.embedder

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

    def sync(self, layers: Iterable[str] = LAYERS, *, rebuild: bool = False) -> list[SyncReport]:
        """Bring the layers' indexes in step with the database."""
        return self.indexes.sync(layers, rebuild=rebuild)

    # -- storing and importing (magray/write.py) ----------------------------------------

    def store(self, items: Iterable[NewRecord], *, progress: Progress | None = None
              ) -> list[Stored]:
        """Store validated records, a window at a time (``Writer.store_records``)."""
        return self.writer.store_records(items, progress=progress)

    def store_texts(self, texts: Sequence[str], **fields) -> list[Stored]:
        """Convenience: store plain texts with shared metadata (layer, tags, project...);
        without a layer, they go to the setting default_layer (assets: kept until removed)."""
        return self.writer.store_texts(texts, **fields)

    def import_records(self, entries: Iterable["Entry"], *, progress: Progress | None = None
                       ) -> "ImportReport":
        """Merge exported records into this memory (``Writer.import_records``)."""
        return self.writer.import_records(entries, progress=progress)

    # -- searching (magray/search.py) ---------------------------------------------------

    def search(self, query: str, **options) -> list[Hit]:
        """Search by meaning (``mode='vector'``), by words (``'keyword'``) or both fused
        (``'hybrid'``, the default). Options are the fields of ``SearchRequest``."""
        return self.searcher.search(query, **options)

    def accessed(self, hits: Sequence[Hit]) -> set[int]:
        """The hits of a search that count as an access (``Searcher.accessed``)."""
        return self.searcher.accessed(hits)

    # -- the lifecycle (magray/lifecycle.py, magray/maintenance.py) ------------------------

    def promote(self, *, layers: Sequence[str] = (), threshold: float | None = None,
                ids: Sequence[int] = (), dry_run: bool = False, explain: bool = False
                ) -> "lifecycle.PromotionReport":
        """Move records that proved valuable one layer up (interact -> insights -> assets).
        ``explain`` keeps every scored decision in the report, not only the promoted ones."""
        from . import lifecycle

        with self.db.lifecycle_lock():  # another machine's run waits (PostgreSQL)
            return lifecycle.promote(self.db, self.indexes, self.settings, layers=layers,
                                     threshold=threshold, ids=ids, dry_run=dry_run,
                                     explain=explain, warn=self.warn)

    def clean(self, *, dry_run: bool = False, promote: bool | None = None
              ) -> "lifecycle.CleanReport":
        """Expire records past their layer's TTL, evict the lowest-value ones above its
        capacity, prune the embedding cache; promotes first when ``promote`` (default:
        setting clean_promotes)."""
        from . import lifecycle

        with self.db.lifecycle_lock():  # another machine's run waits (PostgreSQL)
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
        """Move records to the trash, or destroy them at once with ``purge``; all or
        nothing (``Trash.forget``)."""
        return self.trash_can.forget(ids, purge=purge, dry_run=dry_run)

    def _scrub(self) -> None:
        """After a purge: no copy of the destroyed texts stays in the files (free pages,
        FTS segments, the WAL): see magray/scan.py."""
        self.db.scrub()

    # -- the trash (magray/trash.py) ------------------------------------------------------

    def trash(self, ids: Sequence[int] | None = None) -> list[Trashed]:
        """What is in the trash (forgotten, expired, evicted or merged records, for
        trash_days), most recently trashed first; or only those of ``ids``."""
        return self.trash_can.listing(ids)

    def restore_from_trash(self, ids: Sequence[int]) -> list[Record]:
        """Put trashed records back whole, all or nothing (``Trash.restore``)."""
        return self.trash_can.restore(ids)

    def empty_trash(self, *, ids: Sequence[int] | None = None, older_than: str | None = None,
                    dry_run: bool = False, keep_merged: bool = False) -> list[Trashed]:
        """Destroy trashed records for good: those of ``ids``, or those trashed before the
        ISO time ``older_than``, or all; ``keep_merged`` spares the texts merges trashed.
        Returns them (``dry_run``: only lists them). See ``Trash.empty``."""
        return self.trash_can.empty(ids=ids, older_than=older_than, dry_run=dry_run,
                                    keep_merged=keep_merged)

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
        self.indexes.after_write([merged.kept.layer], self.warn)
        return merged

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
                               encoder=self.encoder, indexes=self.indexes,
                               embedder_for=from_settings, warn=self.warn, config=config,
                               replace_data=replace, confirm=confirm, dry_run=dry_run,
                               progress=progress)

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
