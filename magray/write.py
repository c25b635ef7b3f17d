"""``Writer``: every path that adds records. New texts go through a windowed pipeline
(screened for credentials, embedded longest first, committed STORE_BATCH at a time, each
compared with its layer for near-duplicates); exported records are merged in by
``import_records``. The timing of one call (its ``Op``) is passed along that call, never
kept on the long-lived Writer."""

from __future__ import annotations

import time
from dataclasses import replace
from itertools import islice
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from . import clock
from .errors import StoreInterrupted
from .ingest import check_layer
from .records import NewRecord, Stored, content_hash
from .db.base import Op, VectorNeeded

if TYPE_CHECKING:
    from . import config
    from .encoder import Encoder
    from .index import Indexes
    from .db.store import Store
    from .transfer import Entry, ImportReport

Progress = Callable[[int], None]
T = TypeVar("T")
STORE_BATCH = 256
FIRST_WINDOW = STORE_BATCH  # a bulk store commits this many before its first whole window
WINDOW_BYTES = 4 << 20  # vectors embedded together (longest first: little padding)


class Writer:
    """Store and import for one memory. ``near_duplicates`` makes the per-call finder of
    near-duplicates (magray/dedupe.py) and ``upgrade_passages`` gives long imported texts
    their passages' vectors (magray/passages.py): the composition root hands both in."""

    def __init__(self, store: "Store", encoder: "Encoder", indexes: "Indexes",
                 settings: "config.Settings", warn: Callable[[str], None], *,
                 near_duplicates: Callable[[], Any], upgrade_passages: Callable[[], object]):
        self.store = store
        self.encoder = encoder
        self.indexes = indexes
        self.settings = settings
        self.warn = warn
        self.near_duplicates = near_duplicates
        self.upgrade_passages = upgrade_passages

    # -- storing --------------------------------------------------------------------------

    def store_texts(self, texts: Sequence[str], **fields) -> list[Stored]:
        """Convenience: store plain texts with shared metadata (layer, tags, project...);
        without a layer, they go to the setting default_layer (assets: kept until removed)."""
        from .ingest import from_args

        fields["tags"] = tuple(fields.get("tags", ()))
        fields["layer"] = fields.get("layer") or self.settings.default_layer
        template = NewRecord(text="", **fields)
        check_layer(template.layer)
        return self.store_records(from_args(texts, template, self.settings.max_text_bytes))

    def store_records(self, items: Iterable[NewRecord], *, progress: Progress | None = None
                      ) -> list[Stored]:
        """Store validated records; the same text in the same layer is counted as an access
        of the existing record instead of being stored twice. A new text that closely
        resembles a record of its layer is stored all the same; ``Stored.near`` names the
        record it resembles (``magray duplicates`` reviews them). ``items`` may be a lazy
        iterable (``ingest.Validated``): at most one window of texts is held, and one
        window of vectors (``WINDOW_BYTES``). Records are committed STORE_BATCH at a time,
        the first batch before the first window is embedded; Ctrl-C raises
        ``StoreInterrupted``, which holds what was committed."""
        self.encoder.check_model()
        redacted: dict[int, tuple[str, ...]] = {}
        items = self._screened(items, "text", redacted)
        results: list[Stored] = []
        op = Op("store", time.perf_counter())
        call = _StoreCall(self, op, self.near_duplicates(), progress)
        pending = iter(items)
        size = max(STORE_BATCH, WINDOW_BYTES // (4 * (self.encoder.recorded_model()[1] or 384)))
        window = list(islice(pending, FIRST_WINDOW))  # a first commit soon, then windows
        try:
            while window:
                following = list(islice(pending, 1))  # is this window the last?
                op.items += len(window)
                call.store_window(window, results, last=not following)
                window = following + list(islice(pending, size - 1)) if following else []
        except KeyboardInterrupt as stop:
            raise StoreInterrupted(results) from stop
        self.indexes.after_write(sorted({r.layer for r in results}), self.warn)
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
            scan.count_found(self.store, found)

    # -- importing ------------------------------------------------------------------------

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
                    vectors[content_hash(text)] = self.encoder.vectors([text], "document")[0]
                    totals["embedded"] += 1
            for outcome in outcomes:
                totals[outcome] += 1
            layers.update(e.record.layer for e in batch)
            if progress:
                progress(len(batch))
        from .errors import ModelError

        try:
            self.upgrade_passages()  # long imported texts: every passage gets its vector
        except ModelError as exc:  # the records are in; `magray optimize` finishes this
            self.warn(f"long imported records are searchable by their first part only until "
                      f"`magray optimize` can load the model ({exc})")
        self.indexes.after_write(sorted(layers), self.warn)
        return ImportReport(**totals, redacted=len(redacted))

    def _import_vectors(self, batch: Sequence["Entry"], totals: dict[str, int]
                        ) -> dict[str, np.ndarray]:
        """Vectors (by content hash) for the batch's texts not stored yet: the file's own
        when they come from this memory's model, else freshly embedded."""
        key, dim = self.encoder.recorded_model()
        key = key or self.encoder.embedder.key
        usable: dict[str, np.ndarray] = {}
        for entry in batch:
            if entry.vector is not None and entry.vector_model == key:
                dim = dim or len(entry.vector)
                if len(entry.vector) == dim:
                    usable[entry.record.content_hash] = entry.vector
        known = {layer: self.store.existing(layer, [e.record.content_hash for e in batch
                                                     if e.record.layer == layer])
                 for layer in {e.record.layer for e in batch}}
        need = {e.record.content_hash: e.record.text for e in batch
                if e.record.content_hash not in usable
                and e.record.content_hash not in known[e.record.layer]}
        if need:
            self.encoder.check_model()
            usable.update(zip(need, self.encoder.vectors(list(need.values()), "document")))
            totals["embedded"] += len(need)
        return usable

    def _import_batch(self, batch: Sequence["Entry"], vectors: dict[str, np.ndarray]
                      ) -> list[str]:
        from .transfer import merge

        outcomes = []
        with self.store.write() as tx:
            for entry in batch:
                record = entry.record
                current = self.store.find(tx, record.layer, record.content_hash)
                if current is None:
                    vector = vectors.get(record.content_hash)
                    if vector is None:
                        raise VectorNeeded(record.text)
                    self.encoder.record_model(tx, len(vector), None)  # the file's, or ours
                    self.store.insert_record(tx, record, vector)
                    outcomes.append("added")
                elif (joined := merge(current, record)) != current:
                    self.store.update_metadata(tx, joined)
                    outcomes.append("merged")
                else:
                    outcomes.append("unchanged")
        return outcomes


class _StoreCall:
    """One store call's windows, each embedded (longest first), then committed batch by
    batch; it carries the call's Op, near-duplicate finder and progress callback."""

    def __init__(self, writer: Writer, op: Op, near: Any, progress: Progress | None):
        self.store = writer.store
        self.encoder = writer.encoder
        self.op = op
        self.near = near
        self.progress = progress

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.vectors(texts, "document", self.op)

    def store_window(self, window: Sequence[NewRecord], results: list[Stored], *, last: bool
                     ) -> None:
        """Embed a window and commit it batch by batch, appending each committed batch to
        ``results`` at once (an interrupt keeps the count true)."""
        known = {layer: self.store.existing(layer, [i.content_hash for i in window
                                                    if i.layer == layer])
                 for layer in {i.layer for i in window}}
        need = list(dict.fromkeys(i.text for i in window if i.content_hash not in known[i.layer]))
        vectors = self._embed_longest_first(need)
        parts = self._passages(need, vectors)
        for start in range(0, len(window), STORE_BATCH):
            batch = window[start:start + STORE_BATCH]
            final = last and start + STORE_BATCH >= len(window)  # the call's figures ride here
            while True:
                found = self.near.find(batch, vectors)
                try:
                    stored = self._insert(batch, vectors, found, last=final, parts=parts)
                except VectorNeeded as missing:  # a duplicate's original was deleted meanwhile
                    text = str(missing)
                    vectors[text] = self.vectors([text])[0]
                    continue
                results += stored  # committed: counted before anything else can stop us
                self.near.added(batch, vectors, stored)
                break
        if self.progress and len(window) > len(need):
            self.progress(len(window) - len(need))

    def _embed_longest_first(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors for texts, in batches of similar length (as a raw model.encode sorts
        them, by the model's own measure), with a progress tick per batch."""
        if not texts:
            return {}
        lengths = self.encoder.embedder.lengths(texts)
        ordered = [texts[i] for i in sorted(range(len(texts)), key=lambda i: -lengths[i])]
        vectors: dict[str, np.ndarray] = {}
        for start in range(0, len(ordered), STORE_BATCH):
            chunk = ordered[start:start + STORE_BATCH]
            vectors.update(zip(chunk, self.vectors(chunk)))
            if self.progress:
                self.progress(len(chunk))
        return vectors

    def _passages(self, texts: Sequence[str], whole: dict[str, np.ndarray]) -> dict:
        """The passages (with vectors) of the texts longer than the model's window."""
        from . import passages

        return passages.embed_long(self.encoder.embedder, texts, whole, self.vectors)

    def _insert(self, batch: Sequence[NewRecord], vectors: dict[str, np.ndarray],
                found: Mapping[int, Any], *, last: bool = False,
                parts: Mapping[str, object] = MappingProxyType({})) -> list[Stored]:
        when = clock.now_iso()
        results: list[Stored] = []
        with self.store.write() as tx:
            if vectors:  # any vector: its model must (still) be the recorded one
                dim = len(next(iter(vectors.values())))
                self.encoder.record_model(tx, dim, self.encoder.embedder.key)
            outcomes = self.store.insert_many(  # one COPY on PostgreSQL
                tx, [(item, vectors.get(item.text)) for item in batch], when)
            for n, (item, (record_id, duplicate)) in enumerate(zip(batch, outcomes)):
                near = found.get(n)
                if not duplicate and item.text in parts:  # a long text: all its passages
                    self.store.insert_passages(tx, record_id, parts[item.text])
                if duplicate:
                    results.append(Stored(record_id, item.layer, True, 1.0))
                elif near is None:
                    results.append(Stored(record_id, item.layer, False))
                else:
                    other = near.record if near.record is not None else results[near.item].id
                    results.append(Stored(record_id, item.layer, False, near.similarity,
                                          other if other != record_id else None))
            if last:  # the call's figures ride on its last commit
                self.store.record_op(tx, self.op)
        return results
