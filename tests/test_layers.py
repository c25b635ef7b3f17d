"""The pure lifecycle model: policies, scores and their explanations, expiry, the join rule."""

from datetime import datetime, timedelta, timezone

import pytest

from magray import clock, config, layers
from magray.errors import ConfigError
from magray.layers import Facts

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=timezone.utc)
DEFAULTS = config.defaults()
RULES = layers.policies(DEFAULTS)
MODEL = layers.scoring_model(DEFAULTS)


def facts(text="a plain note", *, layer="interact", created=timedelta(hours=3),
          accessed: timedelta | None = None, accesses=0, importance=0.0, neighbours=0,
          record_id=1) -> Facts:
    return Facts(id=record_id, layer=layer, text=text, created_at=clock.iso(NOW - created),
                 last_access=None if accessed is None else clock.iso(NOW - accessed),
                 access_count=accesses, importance=importance, neighbours=neighbours)


def test_default_policies_match_the_brief():
    assert RULES["interact"].ttl == timedelta(hours=24) and RULES["interact"].capacity == 10_000
    assert RULES["insights"].ttl == timedelta(days=90) and RULES["insights"].capacity == 100_000
    assert RULES["assets"].ttl is None and RULES["assets"].capacity == 1_000_000
    assert RULES["interact"].promotes_to == "insights" and RULES["insights"].promotes_to == "assets"
    assert RULES["assets"].promotes_to is None
    assert RULES["insights"].threshold > RULES["interact"].threshold  # the stricter step


@pytest.mark.parametrize("word", ["critical", "security", "bug", "performance"])
def test_used_note_with_an_importance_word_is_promoted(word):
    note = facts(f"{word}: the export drops rows with a NULL date", accesses=5,
                 accessed=timedelta(hours=2))
    decision = layers.decide(note, RULES["interact"], MODEL, NOW)
    assert decision.promote and decision.target == "insights"


def test_never_accessed_plain_note_is_not_promoted_even_when_recurring():
    note = facts("bought milk and eggs", neighbours=9, created=timedelta(hours=23))
    decision = layers.decide(note, RULES["interact"], MODEL, NOW)
    assert not decision.promote


def test_explanation_adds_up_and_names_its_facts():
    note = facts("critical bug in the login form", accesses=5, accessed=timedelta(minutes=30),
                 importance=0.5, neighbours=2, created=timedelta(hours=12))
    decision = layers.decide(note, RULES["interact"], MODEL, NOW)
    parts = {c.feature: c for c in decision.contributions}
    assert list(parts) == list(layers.FEATURES)
    assert sum(c.points for c in decision.contributions) == pytest.approx(decision.score)
    for c in decision.contributions:
        assert c.points == pytest.approx(c.value * c.weight) and 0 <= c.value <= 1
    assert parts["access"].value == pytest.approx(5 / 8) and parts["access"].detail == "5 accesses"
    assert parts["age"].value == pytest.approx(0.5)  # half of interact's 24 h
    assert parts["words"].value == pytest.approx(1 - 0.05 * 0.15)  # critical and bug
    assert parts["words"].detail == "critical 0.95, bug 0.85"
    assert parts["importance"].points == pytest.approx(0.5 * 0.2)
    assert parts["neighbours"].value == pytest.approx(2 / 5)
    assert "30 min ago" in parts["recency"].detail


def test_recency_halves_per_half_life_and_counts_from_storing_when_never_accessed():
    fresh = layers.score(facts(created=timedelta(0)), RULES["insights"], MODEL, NOW)
    week = layers.score(facts(created=timedelta(days=30), accessed=timedelta(days=7)),
                        RULES["insights"], MODEL, NOW)
    value = {c.feature: c.value for c in week.contributions}
    assert value["recency"] == pytest.approx(0.5)
    assert {c.feature: c.value for c in fresh.contributions}["recency"] == pytest.approx(1.0)


def test_importance_words_match_word_starts_case_insensitively():
    words = {"bug": 0.85, "secur": 0.9}
    assert layers.matched_words("Bugs in SECURITY review", words) == words
    assert layers.matched_words("debug output", words) == {}  # inside a word: no


def test_weights_words_and_thresholds_come_from_settings():
    settings = DEFAULTS.replace(score_weights=["access=1"], importance_words=["deploy=0.5"],
                                promote_to_insights=0.2)
    model, rules = layers.scoring_model(settings), layers.policies(settings)
    decision = layers.decide(facts("deploy notes", accesses=1), rules["interact"], model, NOW)
    assert decision.score == pytest.approx(0.25) and decision.promote
    assert {c.feature: c.weight for c in decision.contributions}["words"] == 0.0
    assert model.words == {"deploy": 0.5}
    assert not layers.decide(facts("deploy notes", accesses=1), rules["interact"], model, NOW,
                             threshold=0.3).promote


def test_assets_step_must_be_the_stricter_one():
    with pytest.raises(ConfigError, match="promote_to_assets"):
        layers.policies(DEFAULTS.replace(promote_to_insights=0.7, promote_to_assets=0.5))


@pytest.mark.parametrize("name, value, message", [
    ("MAGRAY_SCORE_WEIGHTS", "access=0.5,luck=0.5", "unknown feature 'luck'"),
    ("MAGRAY_IMPORTANCE_WORDS", "critical", "needs items like 'word=0.8'"),
    ("MAGRAY_IMPORTANCE_WORDS", "critical=2", "weights from 0 to 1"),
    ("MAGRAY_TTL_INTERACT", "soon", "must be a duration"),
    ("MAGRAY_NEAR_DUPLICATE_SIMILARITY", "0.2", "at least 0.5"),
])
def test_bad_lifecycle_settings_are_refused(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        config.load(None)


def test_ttl_runs_from_the_later_of_storing_and_last_access():
    rule = RULES["interact"]
    assert layers.expired(facts(created=timedelta(hours=25)), rule, NOW)
    assert not layers.expired(facts(created=timedelta(hours=23)), rule, NOW)
    assert not layers.expired(facts(created=timedelta(days=9), accessed=timedelta(hours=1)),
                              rule, NOW)
    assert not layers.expired(facts(layer="assets", created=timedelta(days=9000)),
                              RULES["assets"], NOW)
    assert rule.cutoff(NOW) == clock.iso(NOW - timedelta(hours=24))


def test_eviction_order_lowest_value_then_longest_unused_then_oldest_id():
    a = facts(record_id=1, created=timedelta(hours=1))
    b = facts(record_id=2, created=timedelta(hours=5))
    c = facts(record_id=3, created=timedelta(hours=5))
    d = facts(record_id=4)
    order = layers.eviction_order([(a, 0.2), (b, 0.2), (c, 0.2), (d, 0.1)])
    assert [f.id for f, _ in order] == [4, 2, 3, 1]


# -- the one rule that joins records -----------------------------------------------------------


def record(record_id, **fields):
    from magray.records import Record

    values = dict(id=record_id, text="the same text", layer="insights", kind=None, tags=(),
                  project=None, session=None, created_at="2030-01-02T00:00:00.000000Z",
                  updated_at="2030-01-02T00:00:00.000000Z", last_access=None, access_count=0,
                  importance=0.0, content_hash="h")
    return Record(**{**values, **fields})


def test_join_keeps_the_first_and_unites_the_rest():
    kept = record(1, tags=("b",), access_count=2, importance=0.2, project="home",
                  created_at="2030-01-05T00:00:00.000000Z",
                  last_access="2030-01-06T00:00:00.000000Z")
    other = record(2, tags=("a", "b"), access_count=3, importance=0.7, kind="fact",
                   project="work", session="s", created_at="2030-01-01T00:00:00.000000Z",
                   last_access="2030-01-09T00:00:00.000000Z", text="other")
    joined = layers.join([kept, other], "2030-02-01T00:00:00.000000Z")
    assert (joined.id, joined.text, joined.tags) == (1, "the same text", ("a", "b"))
    assert (joined.kind, joined.project, joined.session) == ("fact", "home", "s")
    assert (joined.access_count, joined.importance) == (5, 0.7)
    assert joined.created_at == "2030-01-01T00:00:00.000000Z"
    assert joined.last_access == "2030-01-09T00:00:00.000000Z"
    assert joined.updated_at == "2030-02-01T00:00:00.000000Z"


def test_joining_copies_of_one_history_keeps_the_larger_count_and_is_idempotent():
    current = record(1, access_count=4, updated_at="2030-01-03T00:00:00.000000Z")
    imported = record(9, access_count=3, tags=("x",), updated_at="2030-01-08T00:00:00.000000Z")
    once = layers.join([current, imported], copies=True)
    assert (once.id, once.access_count, once.tags) == (1, 4, ("x",))
    assert once.updated_at == "2030-01-08T00:00:00.000000Z"
    assert layers.join([once, imported], copies=True) == once


def test_the_same_text_stored_again_is_one_access_bringing_tags_and_importance():
    from magray.records import NewRecord

    stored = record(1, tags=("a",), access_count=2, importance=0.5, kind="fact",
                    last_access="2030-01-03T00:00:00.000000Z")
    item = NewRecord("the same text", layer="insights", tags=("b",), importance=0.9,
                     kind="other", project="p")
    joined = layers.join([stored, layers.access(stored, item, "2030-01-04T00:00:00.000000Z")])
    assert (joined.access_count, joined.tags, joined.importance) == (3, ("a", "b"), 0.9)
    assert (joined.kind, joined.project) == ("fact", None)
    assert joined.last_access == "2030-01-04T00:00:00.000000Z"
    assert (joined.created_at, joined.updated_at) == (stored.created_at, stored.updated_at)
