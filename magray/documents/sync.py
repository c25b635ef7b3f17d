"""``Memory`` in step with files: ingest new and changed files, skip unchanged ones, and with
``prune`` remove the records of files that disappeared.

Cheap on a re-run: a file whose bytes hash as recorded is not even split; in a changed file,
only sections whose text is new are embedded (the rest keep their records and vectors).
New sections go through ``Memory.store`` (the one write path: validation, the embedding
cache, passages for long sections); a file's bookkeeping (which records it holds, at which
lines) is replaced in one transaction; records no file holds any more are removed with
``Memory.forget``. A kill at any point is repaired by the next run: storing a text again
finds its record instead of making a second one.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from ..errors import InputError
from ..records import NewRecord, Source
from .markdown import Section, sections
from .walk import Found, Skipped, walk

if TYPE_CHECKING:
    from ..config import Settings
    from ..db.base import Repository
    from ..records import Stored

Write = Callable[[list[NewRecord]], "Sequence[Stored]"]  # Memory.store
Forget = Callable[[list[int]], object]  # Memory.forget
FILES_PER_BATCH = 64  # files whose new sections are embedded together


@dataclass(frozen=True)
class IngestReport:
    """What an ingest did (or, in a dry run, would do)."""

    files_added: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    sections_added: int = 0
    sections_unchanged: int = 0
    sections_removed: int = 0
    skipped: tuple[Skipped, ...] = ()
    dry_run: bool = False

    def summary(self) -> str:
        """One line, fit for a cron mail."""
        head = "would ingest" if self.dry_run else "ingested"
        return (f"{head}: files {self.files_added} added, {self.files_changed} changed, "
                f"{self.files_unchanged} unchanged, {self.files_removed} removed; sections "
                f"{self.sections_added} added, {self.sections_unchanged} unchanged, "
                f"{self.sections_removed} removed; {len(self.skipped)} skipped")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["skipped"] = [asdict(s) for s in self.skipped]
        return data


@dataclass
class _Plan:
    """One changed or new file: its sections, and which of its records stay or go."""

    found: Found
    digest: str
    texts: list[tuple[str, Section]]  # (validated text, its section)
    existing: dict[int, str]  # record id -> content hash, of the records it held
    new: bool
    kept: dict[str, int] = field(default_factory=dict)  # content hash -> record id


def ingest(store: "Repository", settings: "Settings", write: Write, forget: Forget,
           paths: Sequence[str | Path], *, layer: str = "assets",
           tags: Sequence[str] = (), project: str | None = None, prune: bool = False,
           dry_run: bool = False, progress: Callable[[int], None] | None = None
           ) -> IngestReport:
    """Bring the records of the files under ``paths`` in step with the files. New sections
    are stored through ``write`` (``Memory.store``), records no file holds any more are
    removed with ``forget`` (``Memory.forget``)."""
    if not paths:
        raise InputError("no paths given")
    counts = dict.fromkeys(("files_added", "files_changed", "files_unchanged", "files_removed",
                            "sections_added", "sections_unchanged", "sections_removed"), 0)
    skipped: list[Skipped] = []
    seen: set[str] = set()
    limit = settings.max_text_bytes
    pending: list[_Plan] = []
    template = NewRecord(text="", layer=layer, tags=tuple(sorted(set(tags))), project=project,
                         kind="document")
    for item in walk(paths):
        if isinstance(item, Skipped):
            skipped.append(item)
            continue
        seen.add(item.path)
        plan = _plan(store, item, limit, skipped)
        if plan is None:
            counts["files_unchanged"] += 1
            if progress:
                progress(1)
            continue
        counts["files_added" if plan.new else "files_changed"] += 1
        pending.append(plan)
        if len(pending) >= FILES_PER_BATCH:
            _apply(store, write, forget, pending, template, counts, dry_run, progress)
            pending = []
    _apply(store, write, forget, pending, template, counts, dry_run, progress)
    if prune:
        _prune(store, forget, paths, seen, counts, dry_run)
    return IngestReport(**counts, skipped=tuple(skipped), dry_run=dry_run)


def _plan(store: "Repository", found: Found, limit: int, skipped: list[Skipped]) -> _Plan | None:
    """None for an unchanged file; else what storing it takes."""
    from ..ingest import check_text

    digest = hashlib.sha256(found.data).hexdigest()
    recorded = store.file_hashes([found.path]).get(found.path, set())
    if recorded == {digest}:
        return None
    texts = []
    for section in sections(found.text, found.markdown):
        try:
            texts.append((check_text(section.text, limit, f"{found.path}:{section.line_start}"),
                          section))
        except InputError as exc:
            skipped.append(Skipped(found.path, f"a section was left out ({exc})"))
    return _Plan(found, digest, texts, store.records_from(found.path),
                 new=not recorded)


def _apply(store: "Repository", write: Write, forget: Forget, plans: list[_Plan],
           template: NewRecord, counts: dict[str, int], dry_run: bool,
           progress: Callable[[int], None] | None) -> None:
    """Store the plans' new sections in one call, then each file's bookkeeping."""
    from dataclasses import replace

    if not plans:
        return
    new_texts: dict[str, None] = {}
    for plan in plans:
        held = {h: rid for rid, h in plan.existing.items()}
        for text, _ in plan.texts:
            digest = NewRecord(text).content_hash
            if digest in held:
                plan.kept[digest] = held[digest]
            else:
                new_texts.setdefault(text)
    stored: dict[str, int] = {}
    if not dry_run and new_texts:
        items = [replace(template, text=text) for text in new_texts]
        # Sections of one file are often alike (same heading path, same boilerplate):
        # each stays its own record (near-duplicates are never merged when stored).
        results = write(items)
        stored = {item.text: r.id for item, r in zip(items, results)}
    removed: list[int] = []
    for plan in plans:
        wanted = {NewRecord(t).content_hash for t, _ in plan.texts}
        gone = [rid for rid, h in plan.existing.items() if h not in wanted]
        counts["sections_unchanged"] += len(plan.kept)
        counts["sections_added"] += len(plan.texts) - len(plan.kept)
        counts["sections_removed"] += len(gone)
        if dry_run:
            continue
        with store.write() as conn:
            store.drop_sources(conn, plan.found.path)
            for text, section in plan.texts:
                rid = plan.kept.get(NewRecord(text).content_hash) or stored[text]
                store.put_source(conn, rid, Source(plan.found.path, section.line_start,
                                                       section.line_end, len(section.prefix)),
                                     plan.digest)
        removed += gone
        if progress:
            progress(1)
    _forget_unsourced(store, forget, removed)


def _prune(store: "Repository", forget: Forget, paths: Sequence[str | Path], seen: set[str],
           counts: dict[str, int], dry_run: bool) -> None:
    """Remove what files under ``paths`` that no longer exist had brought in."""
    given = [str(Path(p).expanduser().absolute()) for p in paths]
    gone = [p for p in store.source_paths(given) if p not in seen
            and not Path(p).is_file()]
    removed: list[int] = []
    for path in gone:
        held = list(store.records_from(path))
        counts["files_removed"] += 1
        counts["sections_removed"] += len(held)
        if not dry_run:
            with store.write() as conn:
                store.drop_sources(conn, path)
            removed += held
    _forget_unsourced(store, forget, removed)


def _forget_unsourced(store: "Repository", forget: Forget, ids: Iterable[int]) -> None:
    """Forget (into the trash, where there is one) the records no file holds any more."""
    ids = list(dict.fromkeys(ids))
    orphans = [i for i in ids if i not in store.still_sourced(ids)]
    found = store.records(orphans)
    existing = [i for i in orphans if i in found]
    if existing:
        forget(existing)
