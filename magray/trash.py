"""``Trash``: taking records out (forget), putting them back whole (restore), and destroying
them for good (empty, or forget with purge). A trashed record keeps its id, text,
metadata and vector, so that it comes back exactly as it was."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from . import clock
from .errors import InputError, NotFoundError
from .records import Record, Trashed

if TYPE_CHECKING:
    from .encoder import Encoder
    from .index import Indexes
    from .db.store import Store


class Trash:
    """The trash of one memory. ``scrub`` runs after a purge, so that no copy of the
    destroyed texts stays in the files (magray/scan.py); the composition root hands it in."""

    def __init__(self, store: "Store", encoder: "Encoder", indexes: "Indexes",
                 warn: Callable[[str], None], *, scrub: Callable[[], None]):
        self.store = store
        self.encoder = encoder
        self.indexes = indexes
        self.warn = warn
        self.scrub = scrub

    def listing(self, ids: Sequence[int] | None = None) -> list[Trashed]:
        """What is in the trash, most recently trashed first; or only those of ``ids``."""
        return self.store.trashed(ids)

    def forget(self, ids: Sequence[int], *, purge: bool = False, dry_run: bool = False
               ) -> list[Record]:
        """Move records to the trash (out of search, list, export and the indexes; back with
        ``restore`` until ``clean`` purges the trash after trash_days). ``purge`` destroys
        them at once instead (a secret pasted by mistake). All or nothing: if any id does
        not exist, nothing is removed. ``dry_run`` only looks them up."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            raise InputError("no record ids given")
        with self.store.write() as tx:
            found = self.store.records(wanted)
            NotFoundError.unless_all(wanted, found, "forgotten")
            if dry_run:
                return [found[i] for i in wanted]
            if purge:  # freed pages are zeroed, not left holding the text
                self.store.secure_delete(tx)
            when = clock.now_iso()
            for record_id in wanted:
                self.store.trash(tx, record_id, "forgotten", when)
            if purge:
                self.store.purge_trash(tx, wanted)
        if purge:
            self.scrub()
        self.indexes.after_write(sorted({r.layer for r in found.values()}), self.warn)
        return [found[i] for i in wanted]

    def restore(self, ids: Sequence[int]) -> list[Record]:
        """Put trashed records back whole: same id, text, metadata and layer, findable
        again by meaning and by words. All or nothing: NotFoundError if an id is not in the
        trash, InputError if its text was stored again in its layer meanwhile. Counts as
        a use (last access now): the next clean does not expire or evict it again at once."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            raise InputError("no record ids given")
        vectors = self._restore_vectors(wanted)
        now = clock.now_iso()
        with self.store.write() as tx:
            found = {t.record.id: t.record for t in self.store.trashed(wanted)}
            NotFoundError.unless_all(wanted, found, "restored", " in the trash")
            for record_id in wanted:
                record = found[record_id]
                twin = self.store.find(tx, record.layer, record.content_hash)
                if twin is not None:
                    raise InputError(f"record {record_id}'s text is stored again in "
                                     f"{record.layer} as record {twin.id}; forget {twin.id} "
                                     "first to restore it; nothing was restored")
                self.store.untrash(tx, record_id, vectors.get(record_id), accessed=now)
        self.indexes.after_write(sorted({r.layer for r in found.values()}), self.warn)
        return [found[i] for i in wanted]

    def _restore_vectors(self, ids: Sequence[int]) -> dict[int, bytes]:
        """New vectors for trashed records made by another model than the memory's now
        (after `optimize --reembed`); the others keep their stored vector."""
        key, dim = self.encoder.recorded_model()
        stale = {i: blob for i, (blob, model) in self.store.trash_vectors(ids).items()
                 if key is not None and (model != key or len(blob) != (dim or 0) * 4)}
        if not stale:
            return {}
        self.encoder.check_model()
        texts = {t.record.id: t.record.text for t in self.store.trashed(list(stale))}
        fresh = self.encoder.vectors([texts[i] for i in stale], "document")
        return {i: np.ascontiguousarray(v, dtype=np.float32).tobytes()
                for i, v in zip(stale, fresh)}

    def empty(self, *, ids: Sequence[int] | None = None, older_than: str | None = None,
              dry_run: bool = False, keep_merged: bool = False) -> list[Trashed]:
        """Destroy trashed records for good: those of ``ids``, or those trashed before the
        ISO time ``older_than``, or all; ``keep_merged`` spares the texts merges trashed
        (clean's age purge does: a merge promises they stay restorable). Returns them
        (``dry_run``: only lists them)."""
        if dry_run:
            return self._doomed(ids, older_than, keep_merged)
        # Read and purge in one write transaction: a record restored and trashed again
        # meanwhile is judged by its new trashed_at, never purged on an old reading.
        with self.store.write() as tx:
            doomed = self._doomed(ids, older_than, keep_merged)
            if doomed:
                self.store.secure_delete(tx)  # freed pages are zeroed
                self.store.purge_trash(tx, [t.record.id for t in doomed])
        if doomed:
            self.scrub()
        return doomed

    def _doomed(self, ids: Sequence[int] | None, older_than: str | None,
                keep_merged: bool = False) -> list[Trashed]:
        doomed = [t for t in self.store.trashed(ids)
                  if (older_than is None or t.trashed_at < older_than)
                  and not (keep_merged and t.reason == "merged")]
        if ids is not None:
            NotFoundError.unless_all(sorted(set(ids)), {t.record.id for t in doomed},
                                     "destroyed", " in the trash")
        return doomed
