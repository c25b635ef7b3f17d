"""Layer policies and the value of a record: pure functions, no I/O.

A record's *value* is a weighted sum of six features, each scaled to 0..1, so every
decision can be explained feature by feature (the default weights sum to 1, so a score is
0..1 too):

=============  ==============================================================  =======
feature        scaled value                                                    weight
=============  ==============================================================  =======
access         accesses / (accesses + 3): 0 never, 0.5 at 3, 0.63 at 5          0.30
recency        0.5 ** (time since last use / recency_half_life)                 0.15
age            share of the layer's TTL already used up (a year when none)      0.05
words          importance words in the text, combined as 1 - prod(1 - weight)   0.20
importance     the record's own importance, as the user set it                  0.20
neighbours     near neighbours in the layer / 5, at most 1 (a recurring topic)   0.10
=============  ==============================================================  =======

An *access* is a use that meant something: a search hit plausibly wanted (``Memory.accessed``:
among the first three hits and at least ``access_similarity`` alike to the query; in keyword
mode the first hit), a ``show`` of the record, or the same text stored again. The other hits
a search shows are not accesses, so unrelated searches do not promote a note.

"Last use" is the later of the last access and the moment the record was stored: the TTL
clock runs from it, and a record nobody has searched for yet is as fresh as its storing.
Age counts for a record because one that is still wanted near the end of its layer's life
should move up before it expires.

The same score ranks records for eviction when a layer is over capacity: lowest first.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence

from . import clock, units
from .config import SCORE_FEATURES, parse_pairs
from .errors import ConfigError
from .records import LAYERS, NewRecord, Record

FEATURES = SCORE_FEATURES
PROMOTES_TO = {"interact": "insights", "insights": "assets"}
ACCESS_HALF = 3  # accesses at which the access feature reaches 0.5
NEIGHBOURS_FULL = 5  # near neighbours at which the neighbours feature reaches 1
NO_TTL_HORIZON = timedelta(days=365)  # what "age" is measured against in a layer that keeps all
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class LayerPolicy:
    """How long a layer keeps records, how many, and what it takes to move up from it."""

    layer: str
    ttl: timedelta | None  # None: records never expire
    capacity: int
    promotes_to: str | None = None
    threshold: float | None = None  # score needed to be promoted

    def cutoff(self, now: datetime) -> str | None:
        """Records last used before this moment have expired (None: nothing expires)."""
        return None if self.ttl is None else clock.iso(now - self.ttl)


@dataclass(frozen=True)
class ScoringModel:
    """Feature weights, importance words and the recency half-life."""

    weights: Mapping[str, float]
    words: Mapping[str, float]
    half_life: timedelta
    neighbour_similarity: float = 0.75


@dataclass(frozen=True)
class Facts:
    """What the scoring model looks at in one record."""

    id: int
    layer: str
    text: str
    created_at: str
    last_access: str | None
    access_count: int
    importance: float
    neighbours: int = 0

    @property
    def last_use(self) -> str:
        return last_use(self.created_at, self.last_access)


@dataclass(frozen=True)
class Contribution:
    """One feature's part in a score: its scaled value, its weight, and the points it adds."""

    feature: str
    value: float
    weight: float
    points: float
    detail: str  # the fact behind the value, in words

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("value", "weight", "points"):
            data[key] = round(data[key], 4)
        return data


@dataclass(frozen=True)
class Score:
    total: float
    contributions: tuple[Contribution, ...]


@dataclass(frozen=True)
class PromotionDecision:
    """The promotion model's verdict on one record, with every feature's contribution.

    ``outcome``: ``promoted``, ``merged`` (the text was already in the target layer, so
    the two records became one: ``merged_into``), ``would promote`` (a dry run), ``kept``
    (below the threshold) or ``changed`` (another process moved or deleted it meanwhile).
    """

    id: int
    text: str
    layer: str
    target: str
    score: float
    threshold: float
    contributions: tuple[Contribution, ...]
    outcome: str = "kept"
    merged_into: int | None = None

    @property
    def promote(self) -> bool:
        return self.score >= self.threshold

    def to_dict(self) -> dict:
        return {"id": self.id, "layer": self.layer, "target": self.target,
                "score": round(self.score, 4), "threshold": self.threshold,
                "promote": self.promote, "outcome": self.outcome,
                "merged_into": self.merged_into, "text": self.text,
                "contributions": [c.to_dict() for c in self.contributions]}


# -- settings -> policies -----------------------------------------------------------------


def policies(settings: Any) -> dict[str, LayerPolicy]:
    """Each layer's policy from the settings (``ttl_<layer>``, ``capacity_<layer>``...)."""
    up, top = settings.promote_to_insights, settings.promote_to_assets
    if top < up:
        raise ConfigError(f"setting 'promote_to_assets' ({top}) must be at least "
                          f"'promote_to_insights' ({up}): the step to assets is the stricter one")
    thresholds = {"interact": up, "insights": top}
    return {layer: LayerPolicy(
        layer=layer,
        ttl=clock.parse_duration(getattr(settings, f"ttl_{layer}"), what=f"ttl_{layer}"),
        capacity=getattr(settings, f"capacity_{layer}"),
        promotes_to=PROMOTES_TO.get(layer), threshold=thresholds.get(layer))
        for layer in LAYERS}


def scoring_model(settings: Any) -> ScoringModel:
    weights = {name: 0.0 for name in FEATURES}
    weights.update(parse_pairs(settings.score_weights, "score_weights", FEATURES))
    return ScoringModel(
        weights=weights, words=parse_pairs(settings.importance_words, "importance_words"),
        half_life=clock.parse_duration(settings.recency_half_life, what="recency_half_life")
        or timedelta(days=7),
        neighbour_similarity=settings.neighbour_similarity)


# -- time -------------------------------------------------------------------------------


def last_use(created_at: str, last_access: str | None) -> str:
    """When the TTL clock started: the later of storing and the last access."""
    return max(created_at, last_access or created_at)


def expired(facts: Facts, policy: LayerPolicy, now: datetime) -> bool:
    cutoff = policy.cutoff(now)
    return cutoff is not None and facts.last_use < cutoff


# -- scoring ----------------------------------------------------------------------------


def score(facts: Facts, policy: LayerPolicy, model: ScoringModel, now: datetime) -> Score:
    """The value of a record in a layer, with each feature's contribution."""
    parts = [_access(facts), _recency(facts, model, now), _age(facts, policy, now),
             _words(facts, model), _importance(facts), _neighbours(facts, model)]
    contributions = tuple(Contribution(name, value, model.weights.get(name, 0.0),
                                       value * model.weights.get(name, 0.0), detail)
                          for name, value, detail in parts)
    return Score(sum(c.points for c in contributions), contributions)


def decide(facts: Facts, policy: LayerPolicy, model: ScoringModel, now: datetime,
           threshold: float | None = None) -> PromotionDecision:
    """Should this record move up a layer? ``threshold`` overrides the policy's."""
    if policy.promotes_to is None or policy.threshold is None:
        raise ValueError(f"nothing is above the {policy.layer} layer")
    result = score(facts, policy, model, now)
    return PromotionDecision(
        id=facts.id, text=facts.text, layer=facts.layer, target=policy.promotes_to,
        score=result.total, threshold=policy.threshold if threshold is None else threshold,
        contributions=result.contributions)


def eviction_order(scored: Iterable[tuple[Facts, float]]) -> list[tuple[Facts, float]]:
    """Lowest value first; among equals the longest unused, then the oldest id."""
    return sorted(scored, key=lambda pair: (round(pair[1], 9), pair[0].last_use, pair[0].id))


def _access(facts: Facts) -> tuple[str, float, str]:
    n = max(facts.access_count, 0)
    return "access", n / (n + ACCESS_HALF), f"{n} access{'es' if n != 1 else ''}"


def _recency(facts: Facts, model: ScoringModel, now: datetime) -> tuple[str, float, str]:
    since = max(now - clock.parse_time(facts.last_use), timedelta(0))
    value = 0.5 ** (since / model.half_life)
    what = "last accessed" if facts.last_access else "never accessed; stored"
    return "recency", value, f"{what} {units.duration(since)} ago"


def _age(facts: Facts, policy: LayerPolicy, now: datetime) -> tuple[str, float, str]:
    age = max(now - clock.parse_time(facts.created_at), timedelta(0))
    horizon = policy.ttl or NO_TTL_HORIZON
    value = min(1.0, age / horizon)
    against = f"the layer's {units.duration(policy.ttl)} TTL" if policy.ttl else "a year"
    return "age", value, f"{units.duration(age)} old, {value:.0%} of {against}"


def _words(facts: Facts, model: ScoringModel) -> tuple[str, float, str]:
    found = matched_words(facts.text, model.words)
    missing = 1.0
    for weight in found.values():
        missing *= 1.0 - weight
    detail = ", ".join(f"{w} {v:g}" for w, v in found.items()) or "none"
    return "words", 1.0 - missing, detail


def _importance(facts: Facts) -> tuple[str, float, str]:
    value = min(max(facts.importance, 0.0), 1.0)
    return "importance", value, f"set to {value:g}" if value else "not set"


def _neighbours(facts: Facts, model: ScoringModel) -> tuple[str, float, str]:
    n = facts.neighbours
    return ("neighbours", min(1.0, n / NEIGHBOURS_FULL),
            f"{n}{'+' if n >= NEIGHBOURS_FULL else ''} record{'s' if n != 1 else ''} at "
            f"similarity {model.neighbour_similarity:g} or more")


def matched_words(text: str, words: Mapping[str, float]) -> dict[str, float]:
    """The importance words in ``text``: a word matches its own start, so 'bug' finds
    'bugs' and 'bugfix', 'secur' would find 'security' (case-insensitive)."""
    tokens = set(_WORD.findall(text.lower()))
    lengths = {len(word) for word in words}
    starts = {token[:n] for token in tokens for n in lengths if len(token) >= n}
    return {word: weight for word, weight in words.items() if weight > 0 and word in starts}


# -- joining records ----------------------------------------------------------------------


def join(records: Sequence[Record], when: str | None = None, *, copies: bool = False
         ) -> Record:
    """Records that become one (the same text in one layer, or near-duplicates a person
    merged) as that one: the first, keeping its id and text, with the tags united, the
    highest importance, the earliest creation and the latest access; kind, project and
    session the first's, else the first the others have. Their accesses add up, unless
    ``copies``: the records are copies of one record's history (an imported export), whose
    accesses are the same ones, so the largest count is kept and joining twice changes
    nothing. ``updated_at`` becomes ``when``, or (None) the latest of theirs.

    The one rule for every join: a promotion into a layer holding the same text, the same
    text stored again (one more access), an import, ``duplicates --merge`` and a redaction
    that made two texts equal."""
    first = records[0]
    accesses = [r.last_access for r in records if r.last_access]
    counts = [r.access_count for r in records]
    fields: dict[str, Any] = {
        "tags": tuple(sorted({t for r in records for t in r.tags})),
        "importance": max(r.importance for r in records),
        "access_count": max(counts) if copies else sum(counts),
        "created_at": min(r.created_at for r in records),
        "last_access": max(accesses) if accesses else None,
        "updated_at": when if when is not None else max(r.updated_at for r in records)}
    for name in ("kind", "project", "session"):
        fields[name] = getattr(first, name) or next(
            (getattr(r, name) for r in records if getattr(r, name)), None)
    return replace(first, **fields)


def access(record: Record, item: NewRecord, when: str) -> Record:
    """The same text stored again, as a record to join with the stored one: one access
    now, bringing the new item's tags and importance (nothing else of it)."""
    return replace(record, kind=None, tags=tuple(item.tags), project=None, session=None,
                   last_access=when, access_count=1, importance=item.importance)
