"""The memory lifecycle: records move up a layer when they prove valuable, and leave
when their layer's TTL has passed or the layer is over capacity.

The decisions are the pure functions of ``layers``; this module gathers their facts from
the store and the indexes, and applies them. Every change to records is one write
transaction; the index-log triggers carry it to the layer indexes, which are synced
afterwards. A crash between the two leaves the database right and an index merely behind,
and the next sync (every search does one) repairs it. Nothing here loads the model.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from . import clock
from .db.base import Unchanged
from .errors import InputError, MagrayError, NotFoundError
from .index import search_many
from .layers import (NEIGHBOURS_FULL, PROMOTES_TO, Facts, LayerPolicy, PromotionDecision,
                     ScoringModel, decide, eviction_order, expired, policies, score,
                     scoring_model)
from .records import LAYERS, Trashed

if TYPE_CHECKING:
    from .config import Settings
    from .db.base import Repository
    from .index import Indexes

PROMOTABLE = tuple(PROMOTES_TO)
VECTOR_CHUNK = 4096  # records whose vectors are read (and searched) at once
MB = 1024 * 1024


# -- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromotionReport:
    """What ``promote`` did (or, in a dry run, would do)."""

    dry_run: bool
    scored: int  # candidates the model scored
    decisions: tuple[PromotionDecision, ...]  # the promoted ones; every scored one if explained

    @property
    def moved(self) -> tuple[PromotionDecision, ...]:
        return tuple(d for d in self.decisions
                     if d.outcome in ("promoted", "merged", "would promote"))

    def to_dict(self) -> dict:
        return {"dry_run": self.dry_run, "scored": self.scored, "promoted": len(self.moved),
                "decisions": [d.to_dict() for d in self.decisions]}


@dataclass(frozen=True)
class Removal:
    """A record that ``clean`` removed (or would remove): ``expired`` or ``evicted``."""

    id: int
    layer: str
    reason: str
    text: str
    last_use: str
    access_count: int
    last_access: str | None
    score: float | None = None  # the value that ranked it for eviction

    def to_dict(self) -> dict:
        return {"id": self.id, "layer": self.layer, "reason": self.reason,
                "score": None if self.score is None else round(self.score, 4),
                "last_use": self.last_use, "access_count": self.access_count,
                "text": self.text}


@dataclass(frozen=True)
class CleanReport:
    dry_run: bool
    promotion: PromotionReport | None
    removed: tuple[Removal, ...]
    skipped: int  # planned removals another process made moot (accessed or moved meanwhile)
    cache_entries: int  # embedding-cache entries pruned (or to prune)
    cache_bytes: int
    problems: tuple[str, ...] = ()  # layers left alone, and why
    purged: int = 0  # trashed records destroyed (or to destroy) after trash_days
    purged_records: tuple = ()  # those records (Trashed), for --dry-run to list

    def count(self, reason: str) -> int:
        return sum(r.reason == reason for r in self.removed)

    def to_dict(self) -> dict:
        return {"dry_run": self.dry_run,
                "promoted": len(self.promotion.moved) if self.promotion else 0,
                "expired": self.count("expired"), "evicted": self.count("evicted"),
                "skipped": self.skipped, "purged": self.purged,
                "cache": {"entries": self.cache_entries, "bytes": self.cache_bytes},
                "problems": list(self.problems),
                "promotions": [d.to_dict() for d in self.promotion.moved] if self.promotion
                else [],
                "removed": [r.to_dict() for r in self.removed]}


# -- promote ------------------------------------------------------------------------------


def promote(store: "Repository", indexes: "Indexes", settings: "Settings", *,
            layers: Sequence[str] = (), threshold: float | None = None, ids: Sequence[int] = (),
            dry_run: bool = False, explain: bool = False,
            warn: Callable[[str], None] = lambda message: None) -> PromotionReport:
    """Score the records of ``layers`` (default interact and insights) and move those at or
    above their layer's threshold one layer up."""
    sources = _sources(layers)
    if threshold is not None and not 0 <= threshold <= 10:
        raise InputError(f"threshold must be from 0 to 10, got {threshold}", param="threshold")
    if any(not isinstance(i, int) or i < 1 for i in ids):
        raise InputError("ids: record ids are positive integers", param="ids")
    rules, model, now = policies(settings), scoring_model(settings), clock.now()
    decisions = []
    for layer in sources:
        decisions += [decide(f, rules[layer], model, now, threshold)
                      for f in gather_facts(store, indexes, layer, model, ids)]
    missing = sorted(set(ids) - {d.id for d in decisions})
    if missing:
        raise NotFoundError(f"no record {', '.join(map(str, missing))} in "
                            f"{' or '.join(sources)} (only those layers are promoted from)")
    decisions.sort(key=lambda d: (-d.score, d.id))
    decisions = _apply_promotions(store, indexes, decisions, dry_run, warn)
    shown = decisions if explain or ids else [d for d in decisions if d.promote]
    return PromotionReport(dry_run, len(decisions), tuple(shown))


def _sources(layers: Sequence[str]) -> tuple[str, ...]:
    for layer in layers:
        if layer == "assets":
            raise InputError("layers: nothing is above assets; choose interact or insights",
                             param="layers")
        if layer not in PROMOTABLE:
            raise InputError(f"layers: unknown layer {layer!r} (choose interact or insights)",
                             param="layers")
    return tuple(dict.fromkeys(layers)) or PROMOTABLE


def _apply_promotions(store: "Repository", indexes: "Indexes",
                      decisions: list[PromotionDecision], dry_run: bool,
                      warn: Callable[[str], None]) -> list[PromotionDecision]:
    movers = [d for d in decisions if d.promote]
    if dry_run or not movers:
        outcome = "would promote" if dry_run else "promoted"
        return [replace(d, outcome=outcome) if d.promote else d for d in decisions]
    when = clock.now_iso()
    with store.write() as tx:  # every move, or none of them
        done = {d.id: move(tx, d, when, store) for d in movers}
    indexes.after_write(sorted({d.layer for d in movers} | {d.target for d in movers}), warn)
    return [replace(d, outcome=done[d.id][0], merged_into=done[d.id][1]) if d.id in done else d
            for d in decisions]


def move(tx: Any, decision: PromotionDecision, when: str, store: "Repository"
         ) -> tuple[str, int | None]:
    """Move one record up, inside a write transaction (``Repository.move``: if its text is
    already in the target layer, the two are joined there and the moved one is trashed)."""
    return store.move(tx, decision.id, decision.layer, decision.target, when)


# -- facts ----------------------------------------------------------------------------------


def gather_facts(store: "Repository", indexes: "Indexes", layer: str, model: ScoringModel,
                 ids: Sequence[int] = ()) -> list[Facts]:
    """The facts of a layer's records (or of ``ids`` among them), near neighbours counted."""
    if store.model_meta()[1] is None:
        return []  # nothing was ever stored
    found = store.facts(layer, ids or None)
    counts = neighbour_counts(store, indexes, layer, [f.id for f in found],
                              model.neighbour_similarity)
    return [replace(f, neighbours=counts.get(f.id, 0)) for f in found]


def neighbour_counts(store: "Repository", indexes: "Indexes", layer: str, ids: Sequence[int],
                     similarity: float) -> dict[int, int]:
    """For each record, how many other records of ``layer`` are at ``similarity`` or closer
    (counted up to NEIGHBOURS_FULL, through the layer's index)."""
    if not ids:
        return {}
    view = indexes.layer(layer).open_view()
    if view is None:
        return {}
    counts: dict[int, int] = {}
    for chunk in _chunks(list(ids), VECTOR_CHUNK):
        keys, vectors = store.vectors(chunk, store.model_meta()[1])
        for key, found in zip(keys.tolist(), search_many(view, vectors, NEIGHBOURS_FULL + 1)):
            counts[key] = sum(1 for other, sim in found if other != key and sim >= similarity)
    return counts


# -- clean ----------------------------------------------------------------------------------


def clean(store: "Repository", indexes: "Indexes", settings: "Settings",
          empty_trash: Callable[..., Sequence[Trashed]], *, dry_run: bool = False,
          promote_first: bool | None = None) -> CleanReport:
    """Promote (setting clean_promotes), expire by TTL, evict above capacity, prune the
    embedding cache. Everything is planned from one look at the database, then applied in
    one transaction in which each removal re-checks that its record was not used meanwhile;
    a dry run stops after the plan, so it lists exactly what a real run would remove.
    ``empty_trash``: ``Memory.empty_trash`` (purging trashed records past trash_days)."""
    rules, model, now = policies(settings), scoring_model(settings), clock.now()
    problems = _unsyncable_layers(store, indexes)
    healthy = [layer for layer in LAYERS if layer not in problems]
    promote_first = settings.clean_promotes if promote_first is None else promote_first

    scored: dict[str, list[Facts]] = {}  # facts already gathered, by layer
    decisions: list[PromotionDecision] = []
    for layer in PROMOTABLE if promote_first else ():
        if layer in healthy and PROMOTES_TO[layer] in healthy:
            scored[layer] = gather_facts(store, indexes, layer, model)
            decisions += [decide(f, rules[layer], model, now) for f in scored[layer]]
    movers = {d.id: d for d in decisions if d.promote}
    moved_in = _moved_in(movers, scored)

    removals: list[Removal] = []
    for layer in healthy:
        gone = _expired(store, rules[layer], now, movers, moved_in.get(layer, []))
        removals += gone
        removals += _evictions(store, indexes, layer, rules[layer], model, now, movers, scored,
                               moved_in.get(layer, []), {r.id for r in gone})

    decisions.sort(key=lambda d: (-d.score, d.id))
    skipped = 0
    if dry_run:
        decisions = [replace(d, outcome="would promote") if d.promote else d for d in decisions]
    elif movers or removals:
        decisions, removals, skipped = _apply_clean(store, indexes, decisions, removals, problems)
    promotion = PromotionReport(dry_run, len(decisions), tuple(d for d in decisions
                                                               if d.promote)) \
        if promote_first else None
    entries, size = prune_cache(store, settings.embed_cache_mb, dry_run=dry_run)
    # Merged texts are spared: only an explicit `trash empty` destroys them.
    purged = empty_trash(older_than=clock.iso(now - timedelta(days=settings.trash_days)),
                                dry_run=dry_run, keep_merged=True)
    return CleanReport(dry_run, promotion, tuple(removals), skipped, entries, size,
                       tuple(problems.values()), len(purged), tuple(purged))


def _unsyncable_layers(store: "Repository", indexes: "Indexes") -> dict[str, str]:
    """Layers whose index cannot be brought in step with the database, and why: clean
    removes nothing from them (a deletion there could leave a search disagreeing)."""
    problems = {}
    if store.model_meta()[1] is None:
        return problems
    for layer in LAYERS:
        index = indexes.layer(layer)
        if index.state() is None and store.count(layer) == 0:
            continue  # nothing to remove, nothing to check: a dry run creates no files
        try:
            index.sync()
        except (MagrayError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise  # a home that cannot be written: one error for the whole command
            problems[layer] = (f"the {layer} index could not be brought in step with the "
                               f"database ({exc}); nothing was removed from {layer}")
    return problems


def _moved_in(movers: Mapping[int, PromotionDecision], scored: Mapping[str, list[Facts]]
              ) -> dict[str, list[Facts]]:
    """The facts of promoted records as they will be in their new layer."""
    result: dict[str, list[Facts]] = {}
    for facts in (f for layer in scored for f in scored[layer] if f.id in movers):
        target = movers[facts.id].target
        result.setdefault(target, []).append(replace(facts, layer=target))
    return result


def _expired(store: "Repository", policy: LayerPolicy, now, movers: Mapping[int, object],
             moved_in: list[Facts]) -> list[Removal]:
    cutoff = policy.cutoff(now)
    if cutoff is None:
        return []
    candidates = [f for f in store.expired(policy.layer, cutoff) if f.id not in movers]
    candidates += [f for f in moved_in if expired(f, policy, now)]
    return [_removal(f, "expired") for f in candidates]


def _evictions(store: "Repository", indexes: "Indexes", layer: str, policy: LayerPolicy,
               model: ScoringModel, now, movers: Mapping[int, PromotionDecision],
               scored: dict[str, list[Facts]], moved_in: list[Facts], expiring: set[int]
               ) -> list[Removal]:
    """The lowest-value records of a layer that holds more than its capacity."""
    moved_out = sum(1 for d in movers.values() if d.layer == layer)
    remaining = store.count(layer) - moved_out + len(moved_in) - len(expiring)
    excess = remaining - policy.capacity
    if excess <= 0:
        return []
    if layer not in scored:
        scored[layer] = gather_facts(store, indexes, layer, model)
    arrived = {f.id: f for f in moved_in}
    if arrived:  # count their neighbours among the records of the layer they join
        counts = neighbour_counts(store, indexes, layer, list(arrived), model.neighbour_similarity)
        arrived = {i: replace(f, neighbours=counts.get(i, 0)) for i, f in arrived.items()}
    staying = [f for f in scored[layer] if f.id not in movers and f.id not in expiring]
    staying += [f for f in arrived.values() if f.id not in expiring]
    ranked = eviction_order((f, score(f, policy, model, now).total) for f in staying)
    return [_removal(f, "evicted", value) for f, value in ranked[:excess]]


def _removal(facts: Facts, reason: str, value: float | None = None) -> Removal:
    return Removal(facts.id, facts.layer, reason, facts.text, facts.last_use,
                   facts.access_count, facts.last_access, value)


def _apply_clean(store: "Repository", indexes: "Indexes", decisions: list[PromotionDecision],
                 removals: list[Removal], problems: dict[str, str]
                 ) -> tuple[list[PromotionDecision], list[Removal], int]:
    when = clock.now_iso()
    done: dict[int, tuple[str, int | None]] = {}
    removed: list[Removal] = []
    with store.write() as conn:
        for decision in (d for d in decisions if d.promote):
            done[decision.id] = move(conn, decision, when, store)
        for removal in removals:
            # To the trash, and only if nobody used or moved it since the plan: a search in
            # between saves it.
            if store.trash(conn, removal.id, removal.reason, when,
                           unchanged=Unchanged(removal.layer, removal.access_count,
                                               removal.last_access)):
                removed.append(removal)
    touched = ({d.layer for d in decisions if d.id in done}
               | {d.target for d in decisions if d.id in done} | {r.layer for r in removed})
    for layer in sorted(touched):
        try:
            indexes.layer(layer).sync()
        except (MagrayError, OSError) as exc:
            problems[layer] = (f"the {layer} index could not be updated after cleaning "
                               f"({exc}); the next search or `magray optimize` repairs it")
    decisions = [replace(d, outcome=done[d.id][0], merged_into=done[d.id][1])
                 if d.id in done else d for d in decisions]
    return decisions, removed, len(removals) - len(removed)


def prune_cache(store: "Repository", limit_mb: float, *, dry_run: bool = False
                ) -> tuple[int, int]:
    """Drop the least recently used embedding-cache entries beyond ``limit_mb``.
    Returns (entries, bytes) pruned, or that would be in a dry run."""
    return store.prune_cache(int(limit_mb * MB), dry_run=dry_run)


def _chunks(values: list, size: int) -> Iterable[list]:
    for start in range(0, len(values), size):
        yield values[start:start + size]
