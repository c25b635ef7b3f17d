"""magray/dedupe.py as a service: near-duplicates found at store time and for review, and
merged by the one join rule, against a real repository and real indexes, without a Memory.
(Whether the real model judges two texts alike is tested with it, in test_lifecycle.py.)"""

import pytest

from magray import dedupe
from magray.errors import InputError, NotFoundError
from magray.records import NewRecord
from services import services

NOTE = "restart nginx after editing its config"
SAME_WORDS = "Restart nginx, after editing its config!"  # the fake embedder: ~0.98 alike
OTHER = "the printer on floor three is out of toner"


def test_the_fake_pair_is_alike_and_the_other_is_not(tmp_path):
    with services(tmp_path) as s:
        a, b, c = s.encoder.vectors([NOTE, SAME_WORDS, OTHER], "document")
        assert float(a @ b) >= s.settings.near_duplicate_similarity > float(a @ c)


def test_a_new_text_is_found_near_a_stored_record_and_an_earlier_one_of_its_batch(tmp_path):
    with services(tmp_path) as s:
        stored = s.add(NOTE)
        s.add(OTHER)
        near = dedupe.NearDuplicates(s.store, s.indexes, s.encoder, s.settings)
        batch = [NewRecord(SAME_WORDS), NewRecord("something else entirely, about lunch"),
                 NewRecord("Something else entirely about lunch")]
        vectors = dict(zip([i.text for i in batch],
                           s.encoder.vectors([i.text for i in batch], "document")))
        found = near.find(batch, vectors)
        assert sorted(found) == [0, 2]
        assert found[0].record == stored and found[0].similarity >= 0.95
        assert found[2].item == 1 and found[2].record is None


def test_clusters_are_listed_and_merged_by_the_one_join_rule(tmp_path):
    with services(tmp_path) as s:
        first = s.add(NOTE, tags=("a",), accesses=2)
        second = s.add(SAME_WORDS, tags=("b",), accesses=3, importance=0.5, project="ops")
        other = s.add(OTHER)
        s.indexes.sync()
        found = dedupe.clusters(s.store, s.indexes, s.encoder, ("interact",), 0.95)
        assert [[r.id for r in c.records] for c in found] == [[first, second]]
        merged = dedupe.merge(s.store, [first, second])
        kept = s.get(first)
        assert merged.kept == kept and [r.id for r in merged.merged] == [second]
        assert (kept.tags, kept.access_count, kept.importance, kept.project) == \
            (("a", "b"), 5, 0.5, "ops")
        assert [(t.record.id, t.reason, t.merged_into) for t in s.store.trashed()] == \
            [(second, "merged", first)]
        s.indexes.sync()
        assert dedupe.clusters(s.store, s.indexes, s.encoder, ("interact",), 0.95) == []
        assert s.get(other) is not None


def test_merge_refuses_what_it_cannot_join_and_changes_nothing(tmp_path):
    with services(tmp_path) as s:
        first = s.add(NOTE)
        elsewhere = s.add(SAME_WORDS, "insights")
        before = s.store.records([first, elsewhere])
        with pytest.raises(InputError, match="at least two"):
            dedupe.merge(s.store, [first, first])
        with pytest.raises(InputError, match="different layers"):
            dedupe.merge(s.store, [first, elsewhere])
        with pytest.raises(NotFoundError):
            dedupe.merge(s.store, [first, 999])
        assert s.store.records([first, elsewhere]) == before and s.store.trashed() == []
