"""promote, clean, optimize and near-duplicate merging, through the library."""

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from checks import in_step
from fakes import FakeEmbedder
from corpus import FILLER, NOTES
from magray import LAYERS, Memory, NewRecord, clock, config, lifecycle, maintenance
from magray.embedding import Embedder, SentenceTransformerEmbedder, default_model_roots
from magray.errors import InputError, ModelMismatchError, NotFoundError
from magray.index import LayerIndex
from magray.layers import FEATURES
from magray.locks import locked

NOW = clock.parse_time("2030-06-01T12:00:00+00:00")


@pytest.fixture
def pin(monkeypatch):
    """Pin magray's clock (MAGRAY_NOW); call it to move the clock."""
    def move(moment):
        monkeypatch.setenv("MAGRAY_NOW", clock.iso(moment))

    move(NOW)
    return move


def open_fake(home, **settings) -> Memory:
    return Memory.open(home, settings=config.defaults().replace(**settings),
                       embedder=FakeEmbedder())


def add(memory, text, *, ago=timedelta(hours=1), **fields) -> int:
    return memory.store([NewRecord(text=text, created_at=clock.iso(NOW - ago), **fields)])[0].id


def layer_of(memory, record_id):
    rows = memory.db.conn.execute("SELECT layer FROM records WHERE id = ?", (record_id,))
    return [r[0] for r in rows]


def snapshot(memory):
    """Everything a dry run must leave alone: the tables and the index files."""
    conn = memory.db.conn
    tables = {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
              for t in ("records", "embed_cache", "meta", "index_log")}
    files = {p.name: p.read_bytes() for p in sorted(memory.paths.indexes.iterdir())
             if not p.name.endswith(".lock")}
    return tables, files


# -- promote ------------------------------------------------------------------------------


def test_search_hits_make_an_important_note_promotable(memory):
    """The brief's example, with the real model: five search hits and an importance word
    promote a note; a note never accessed, without importance words, stays."""
    ids = [s.id for s in memory.store_texts([
        "critical: the nightly backup job skips files larger than 2 GB",
        "bought oat milk and bread on the way home", "the cat sleeps on the sofa all day"])]
    for _ in range(5):
        assert memory.search("backups miss big files", top_k=1)[0].record.id == ids[0]
    before = snapshot(memory)
    plan = memory.promote(dry_run=True, explain=True)
    assert snapshot(memory) == before
    verdict = {d.id: d for d in plan.decisions}
    assert verdict[ids[0]].outcome == "would promote" and verdict[ids[0]].score >= 0.45
    assert verdict[ids[1]].outcome == "kept" and verdict[ids[2]].outcome == "kept"
    words = {c.feature: c for c in verdict[ids[0]].contributions}["words"]
    assert words.detail == "critical 0.95" and words.points == pytest.approx(0.19)

    report = memory.promote()
    assert [(d.id, d.outcome) for d in report.decisions] == [(ids[0], "promoted")]
    assert layer_of(memory, ids[0]) == ["insights"]
    hits = memory.search("backups miss big files", layers=("insights",), track=False)
    assert [h.record.id for h in hits] == [ids[0]]
    assert ids[0] not in [h.record.id for h in memory.search(
        "backups miss big files", layers=("interact",), track=False)]
    in_step(memory)


def test_promote_explains_scores_and_honours_from_and_threshold(fake_memory, pin):
    m = fake_memory
    used = add(m, "bug: invoices round cents twice")
    plain = add(m, "bought oat milk")
    insight = add(m, "teams deploy on tuesdays", layer="insights")
    for _ in range(5):
        m.db.touch([used])
    report = m.promote(explain=True)
    assert report.scored == 3
    verdict = {d.id: d for d in report.decisions}
    assert verdict[used].outcome == "promoted" and verdict[plain].outcome == "kept"
    assert verdict[insight].target == "assets" and verdict[insight].threshold == 0.65
    data = verdict[used].to_dict()
    assert [c["feature"] for c in data["contributions"]] == list(FEATURES)
    assert sum(c["points"] for c in data["contributions"]) == pytest.approx(data["score"], abs=1e-3)
    assert m.promote().decisions == ()  # insights -> assets is stricter: it stays
    assert layer_of(m, used) == ["insights"]

    only = m.promote(layers=("interact",), threshold=0.0, dry_run=True)
    assert [(d.id, d.outcome) for d in only.decisions] == [(plain, "would promote")]
    assert layer_of(m, plain) == ["interact"]
    explained = m.promote(ids=[plain])
    assert [(d.id, d.outcome) for d in explained.decisions] == [(plain, "kept")]
    with pytest.raises(InputError, match="nothing is above assets"):
        m.promote(layers=("assets",))
    with pytest.raises(NotFoundError, match="no record 999"):
        m.promote(ids=[999])


def test_promotion_survives_a_crash_between_database_and_index(home, fake_memory, monkeypatch):
    m = fake_memory
    note = "security: rotate the deploy keys"
    record = add(m, note, importance=1.0)
    add(m, "bought oat milk")

    def crash(self, *args, **kwargs):
        raise OSError("simulated crash before the index was saved")

    with monkeypatch.context() as patched:
        patched.setattr(LayerIndex, "_save", crash)
        report = m.promote()  # committed, so the index's failure is only a warning
    assert [d.id for d in report.moved] == [record]
    assert layer_of(m, record) == ["insights"]  # committed: exactly one layer

    with Memory.open(home, embedder=FakeEmbedder()) as after:  # a later process
        found = after.search(note, layers=("insights",), mode="vector", track=False)
        assert found[0].record.id == record
        elsewhere = after.search(note, layers=("interact",), mode="vector", track=False)
        assert record not in [h.record.id for h in elsewhere]
        assert not after.index("interact").open_view().contains(record)
        assert after.index("insights").open_view().contains(record)
        in_step(after)


def test_a_crash_inside_the_promotion_transaction_moves_nothing(fake_memory, monkeypatch):
    m = fake_memory
    first = add(m, "security: rotate the deploy keys", importance=1.0)
    second = add(m, "critical: renew the tls certificate", importance=1.0)
    real_move, calls = lifecycle.move, []

    def move_then_crash(conn, decision, when, store):
        calls.append(decision.id)
        if len(calls) == 2:
            raise RuntimeError("killed mid-way")
        return real_move(conn, decision, when, store)

    monkeypatch.setattr(lifecycle, "move", move_then_crash)
    with pytest.raises(RuntimeError):
        m.promote()
    assert layer_of(m, first) == ["interact"] and layer_of(m, second) == ["interact"]
    in_step(m)


def test_promotion_into_a_layer_holding_the_same_text_merges(fake_memory):
    m = fake_memory
    low = m.store_texts(["security: rotate the deploy keys"], layer="insights", tags=("a",))[0].id
    high = m.store([NewRecord(text="security: rotate the deploy keys", importance=1.0,
                              tags=("b",))])[0].id
    report = m.promote(layers=("interact",))
    assert [(d.id, d.outcome, d.merged_into) for d in report.decisions] == [(high, "merged", low)]
    assert m.get(high) is None
    merged = m.get(low)
    assert merged.tags == ("a", "b") and merged.importance == 1.0
    in_step(m)


# -- clean ----------------------------------------------------------------------------------


def test_clean_expires_by_ttl_and_the_dry_run_lists_exactly_that(fake_memory, pin):
    m = fake_memory
    stale = add(m, "stale scratch about printers", ago=timedelta(hours=30))
    add(m, "fresh scratch about keyboards", ago=timedelta(hours=2))
    revived = add(m, "old scratch about monitors", ago=timedelta(hours=40))
    pin(NOW - timedelta(hours=1))
    m.db.touch([revived])  # a search hit an hour ago restarts its TTL clock
    pin(NOW)
    old_insight = add(m, "insight about cables", layer="insights", ago=timedelta(days=100))
    add(m, "insight about chargers", layer="insights", ago=timedelta(days=10))
    add(m, "manual for the espresso machine", layer="assets", ago=timedelta(days=5000))

    before = snapshot(m)
    plan = m.clean(dry_run=True)
    assert snapshot(m) == before
    assert [(r.id, r.layer, r.reason) for r in plan.removed] == [
        (stale, "interact", "expired"), (old_insight, "insights", "expired")]

    done = m.clean()
    assert [(r.id, r.reason) for r in done.removed] == [(r.id, r.reason) for r in plan.removed]
    assert m.get(stale) is None and m.get(old_insight) is None and m.get(revived) is not None
    assert m.db.conn.execute("SELECT count(*) FROM records").fetchone()[0] == 4
    assert stale not in [h.record.id for h in m.search("printers", mode="keyword")]
    in_step(m)


def test_capacity_evicts_the_lowest_value_records_first(home, pin):
    with open_fake(home, capacity_interact=3, ttl_interact="none", clean_promotes=False) as m:
        a = add(m, "alpha apples", ago=timedelta(hours=10))
        b = add(m, "bravo bananas", ago=timedelta(hours=1))
        c = add(m, "charlie cherries", ago=timedelta(hours=1), importance=0.8)
        d = add(m, "delta dates are critical", ago=timedelta(hours=5))
        e = add(m, "echo elderberries", ago=timedelta(hours=20))
        m.db.touch([b])
        before = snapshot(m)
        plan = m.clean(dry_run=True)
        assert snapshot(m) == before
        assert [(r.id, r.reason) for r in plan.removed] == [(e, "evicted"), (a, "evicted")]
        assert plan.removed[0].score <= plan.removed[1].score
        done = m.clean()
        assert [r.id for r in done.removed] == [e, a]
        assert sorted(r[0] for r in m.db.conn.execute("SELECT id FROM records")) == [b, c, d]
        in_step(m)


def test_clean_promotes_first_so_valuable_notes_outlive_their_ttl(fake_memory, pin):
    m = fake_memory
    valuable = add(m, "security: the vpn drops ipv6", ago=timedelta(hours=30), importance=1.0)
    pin(NOW - timedelta(hours=25))
    m.db.touch([valuable])
    pin(NOW)
    dull = add(m, "bought oat milk", ago=timedelta(hours=30))
    report = m.clean()
    assert [d.id for d in report.promotion.moved] == [valuable]
    assert [r.id for r in report.removed] == [dull]
    assert layer_of(m, valuable) == ["insights"]
    kept = m.clean(promote=False, dry_run=True)
    assert kept.promotion is None and kept.removed == ()


def test_a_record_used_between_plan_and_removal_is_kept(fake_memory, pin, monkeypatch):
    m = fake_memory
    stale = add(m, "stale scratch about printers", ago=timedelta(hours=30))
    real_apply = lifecycle._apply_clean

    def search_meanwhile(store, indexes, decisions, removals, problems):
        store.touch([stale])  # another process's search, after the plan
        return real_apply(store, indexes, decisions, removals, problems)

    monkeypatch.setattr(lifecycle, "_apply_clean", search_meanwhile)
    report = m.clean()
    assert report.removed == () and report.skipped == 1 and m.get(stale) is not None


def test_clean_removes_nothing_from_a_layer_whose_index_is_locked(home, pin):
    with open_fake(home, busy_timeout=0.1) as m:
        stale = add(m, "stale scratch about printers", ago=timedelta(hours=30))
        old_insight = add(m, "insight about cables", layer="insights", ago=timedelta(days=100))
        with locked(m.index("interact").lock_path, timeout=1):
            report = m.clean()
        assert len(report.problems) == 1 and "interact index" in report.problems[0]
        assert m.get(stale) is not None and m.get(old_insight) is None


def test_clean_prunes_the_embedding_cache_least_recently_used_first(home, pin):
    entry = 64 * 4 + 64 + len("m|document")  # vector, hash, model name
    with open_fake(home, embed_cache_mb=3.5 * entry / lifecycle.MB) as m:
        with m.db.write() as conn:
            for hours in range(10):
                m.db.cache_vectors(conn, "m|document", [(f"{hours:064d}", np.ones(64))],
                                   clock.iso(NOW - timedelta(hours=hours)))
        plan = m.clean(dry_run=True)
        assert (plan.cache_entries, plan.cache_bytes) == (7, 7 * entry)
        assert m.db.conn.execute("SELECT count(*) FROM embed_cache").fetchone()[0] == 10
        done = m.clean()
        assert (done.cache_entries, done.cache_bytes) == (7, 7 * entry)
        left = [r[0] for r in m.db.conn.execute("SELECT text_hash FROM embed_cache ORDER BY 1")]
        assert left == [f"{h:064d}" for h in range(3)]


def test_cache_hits_count_as_use_at_most_hourly(fake_memory, pin):
    m = fake_memory
    m.store_texts(["a note about sailing"])

    def used():
        return m.db.conn.execute("SELECT last_used FROM embed_cache WHERE model LIKE '%query'"
                                 ).fetchone()[0]

    m.search("boats at sea", mode="vector")
    pin(NOW + timedelta(minutes=30))
    m.search("boats at sea", mode="vector")
    assert used() == clock.iso(NOW)
    pin(NOW + timedelta(hours=2))
    m.search("boats at sea", mode="vector")
    assert used() == clock.iso(NOW + timedelta(hours=2))


def test_lifecycle_commands_never_load_the_model(home, pin):
    with open_fake(home) as m:
        add(m, "stale scratch about printers", ago=timedelta(hours=30))
        add(m, "security: rotate keys", importance=1.0)
    with Memory.open(home) as m:
        m.promote(dry_run=True, explain=True)
        m.clean()
        m.optimize()
        assert m.encoder.loaded is None


# -- near-duplicates ------------------------------------------------------------------------


def test_near_duplicate_is_stored_as_its_own_record_and_named(memory):
    first = memory.store_texts(["restart nginx after editing its config"], tags=("ops",))[0]
    again = memory.store_texts(["restart nginx after you edit its config"], tags=("web",))[0]
    assert not again.duplicate and again.id != first.id
    assert again.near == first.id and 0.95 <= again.similarity < 1
    assert memory.get(again.id).text == "restart nginx after you edit its config"
    record = memory.get(first.id)
    assert record.tags == ("ops",) and record.access_count == 0  # untouched by its near twin
    exact = memory.store_texts(["restart nginx after editing its config"])[0]
    assert exact.duplicate and exact.id == first.id and exact.similarity == 1.0
    assert exact.near is None and memory.get(first.id).access_count == 1

    apart = memory.store_texts(["host db-1000 runs the billing replica",
                                "water the office plants on friday"])
    assert not any(s.duplicate or s.near for s in apart)
    batch = memory.store_texts(["use rg -uu to search files that .gitignore hides",
                                "use rg -uu to search files hidden by .gitignore"])
    assert not batch[1].duplicate and batch[1].near == batch[0].id != batch[1].id
    elsewhere = memory.store_texts(["restart nginx after you edit its config"], layer="assets")
    assert not elsewhere[0].duplicate and elsewhere[0].near is None  # layers are apart
    assert memory.db.count("interact") == 6 and memory.db.count("assets") == 1
    in_step(memory)


@pytest.mark.parametrize("refresh_after", [1, 4096])
def test_near_duplicates_are_found_across_the_batches_of_one_store(fake_memory, monkeypatch,
                                                                   refresh_after):
    import magray.dedupe
    import magray.write

    monkeypatch.setattr(magray.write, "STORE_BATCH", 2)
    monkeypatch.setattr(magray.dedupe, "REFRESH_AFTER", refresh_after)
    stored = fake_memory.store_texts(["apples pears plums", "kiwis limes lemons",
                                      "plums pears apples", "grapes figs dates",
                                      "lemons limes kiwis", "figs dates grapes"])
    assert [(s.id, s.duplicate, s.near) for s in stored] == [
        (1, False, None), (2, False, None), (3, False, 1), (4, False, None), (5, False, 2),
        (6, False, 4)]
    assert fake_memory.db.count("interact") == 6
    in_step(fake_memory)


@pytest.mark.parametrize("settings", [{"near_duplicate_merge": True},
                                      {"near_duplicate_similarity": 0.99}])
def test_near_duplicates_are_never_merged_and_the_threshold_is_a_setting(home, real_embedder,
                                                                         settings):
    with Memory.open(home, settings=config.defaults().replace(**settings),
                     embedder=real_embedder) as m:
        m.store_texts(["restart nginx after editing its config"], layer="interact")
        again = m.store_texts(["restart nginx after you edit its config"], layer="interact")[0]
        assert not again.duplicate and m.db.count("interact") == 2
        assert (again.near is None) == (settings.get("near_duplicate_similarity") == 0.99)


# -- optimize -------------------------------------------------------------------------------


def test_optimize_compacts_the_index_after_deletions(fake_memory, pin):
    m = fake_memory
    m.store([NewRecord(text=f"scratch line {i} about topic {i % 7}",
                       created_at=clock.iso(NOW - timedelta(hours=30 if i < 250 else 1)))
             for i in range(300)])
    path = m.index("interact").path
    full = path.stat().st_size
    assert m.clean().count("expired") == 250
    in_step(m)
    after_clean = path.stat().st_size
    assert after_clean > full * 0.9  # removed vectors leave holes: the file does not shrink
    report = m.optimize()
    interact = {c.layer: c for c in report.indexes}["interact"]
    assert (interact.records, interact.before_bytes, interact.was) == (50, after_clean, "in step")
    assert interact.after_bytes == path.stat().st_size < after_clean / 3
    hit = m.search("scratch line 260 about topic 1", mode="vector", track=False)[0]
    assert hit.record.text == "scratch line 260 about topic 1"
    in_step(m)


def test_optimize_prunes_orphans_and_repairs_full_text(fake_memory):
    m = fake_memory
    ids = [s.id for s in m.store_texts(["kubectl rollout restart", "ssh jump host bastion"])]
    with m.db.write() as conn:
        m.db.cache_vectors(conn, "old-model|document", [("ab" * 32, np.ones(8))], clock.now_iso())
        conn.execute("INSERT INTO records_fts(records_fts, rowid, text) VALUES ('delete', ?, ?)",
                     (ids[0], "kubectl rollout restart"))
    assert m.search("kubectl", mode="keyword") == []
    leftover = m.index("interact").path.with_name(".interact.usearch.tmp-99999")
    leftover.write_bytes(b"half an index")

    report = m.optimize()
    assert report.fts == "rebuilt"
    assert report.orphans["embed_cache"] == 1 and report.orphans["temp_files"] == 1
    assert report.orphans["index_log"] >= 2 and not leftover.exists()
    assert m.search("kubectl", mode="keyword")[0].record.id == ids[0]
    assert m.db.conn.execute("SELECT count(*) FROM index_log").fetchone()[0] == 0
    assert m.optimize().fts == "optimized"
    in_step(m)


class Counting(Embedder):
    """Wraps an embedder: counts the texts it embeds; can fail on its n-th call."""

    def __init__(self, inner: Embedder, fail_on_call: int | None = None):
        self.inner, self.name, self.fail_on_call = inner, inner.name, fail_on_call
        self.calls = self.texts = 0

    @property
    def key(self) -> str:
        return self.inner.key

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed_documents(self, texts):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # the user pressed ^C, or the process was killed
        self.texts += len(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text):
        return self.inner.embed_query(text)


@pytest.fixture(scope="session")
def truncated_embedder():
    """A second configuration of the shipped model: Matryoshka truncation to 128 dims."""
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2", roots=default_model_roots(
        Path("/nonexistent")), device="cpu", truncate_dim=128)
    embedder.dim
    return embedder


def test_reembed_after_a_model_change_resumes_after_a_kill(memory, home, truncated_embedder,
                                                          monkeypatch):
    texts = [note for note, _ in NOTES] + FILLER[:12]
    memory.store_texts(texts)
    monkeypatch.setattr(maintenance, "REEMBED_BATCH", 8)

    with Memory.open(home, embedder=Counting(truncated_embedder, fail_on_call=2)) as m:
        with pytest.raises(ModelMismatchError, match="magray optimize --reembed"):
            m.search("anything")
        with pytest.raises(KeyboardInterrupt):
            m.optimize(reembed=True)
        assert m.recorded_model() == ("all-MiniLM-L6-v2", 384)
        assert m.db.conn.execute("SELECT count(*) FROM records WHERE pending_embedding "
                                 "IS NOT NULL").fetchone()[0] == 8
    hit = memory.search(NOTES[0][1], track=False)[0]  # meanwhile the old model still works
    assert hit.record.text == NOTES[0][0]

    counting = Counting(truncated_embedder)
    with Memory.open(home, embedder=counting) as m:
        report = m.optimize(reembed=True).reembed
        assert (report.embedded, report.resumed, counting.texts) == (12, 8, 12)
        assert (report.previous_key, report.previous_dim) == ("all-MiniLM-L6-v2", 384)
        meta = dict(m.db.conn.execute("SELECT key, value FROM meta"))
        assert (meta["model"], meta["model_key"], meta["dim"]) == (
            "all-MiniLM-L6-v2", "all-MiniLM-L6-v2@128", "128")
        assert "reembed_target" not in meta
        sizes = {r[0] for r in m.db.conn.execute("SELECT length(embedding) FROM records")}
        assert sizes == {128 * 4}
        assert m.db.conn.execute("SELECT count(*) FROM records WHERE pending_embedding "
                                 "IS NOT NULL").fetchone()[0] == 0
        assert m.index("interact").state().spec.dim == 128
        blob = m.db.conn.execute("SELECT embedding FROM records WHERE text = ?",
                                 (NOTES[0][0],)).fetchone()[0]
        expected = truncated_embedder.embed_documents([NOTES[0][0]])[0]
        assert np.allclose(np.frombuffer(blob, dtype=np.float32), expected, atol=1e-5)
        for note, query in NOTES[:4]:
            assert m.search(note, mode="vector", track=False)[0].record.text == note
            assert note in [h.record.text for h in m.search(query, top_k=3, track=False)]
        in_step(m)
        again = m.optimize(reembed=True).reembed
        assert (again.embedded, again.resumed) == (0, 0)
    with pytest.raises(ModelMismatchError):  # the old configuration is now the stranger
        memory.search("anything")


# -- the service alone: a real repository and real indexes, no Memory --------------------------


def test_promote_service_moves_a_valuable_record_and_its_index_entry(tmp_path, pin):
    from services import services

    with services(tmp_path) as s:
        valuable = s.add("security: rotate the deploy keys", importance=1.0, accesses=5,
                         accessed_ago=timedelta(minutes=5))
        plain = s.add("lunch was fine")
        warnings = []
        report = lifecycle.promote(s.store, s.indexes, s.settings, warn=warnings.append)
        assert [(d.id, d.outcome) for d in report.moved] == [(valuable, "promoted")]
        assert s.get(valuable).layer == "insights" and s.get(plain).layer == "interact"
        assert s.indexes.layer("insights").open_view().contains(valuable)
        assert not s.indexes.layer("interact").open_view().contains(valuable)
        in_step(s)
        assert warnings == []


def test_promote_service_joins_a_twin_in_the_target_layer_by_the_one_rule(tmp_path, pin):
    from services import services

    with services(tmp_path) as s:
        kept = s.add("security: rotate the deploy keys", "insights", tags=("a",), accesses=2,
                     ago=timedelta(days=3))
        moved = s.add("security: rotate the deploy keys", tags=("b",), importance=1.0,
                      accesses=4, accessed_ago=timedelta(minutes=1), project="ops")
        report = lifecycle.promote(s.store, s.indexes, s.settings, layers=("interact",))
        assert [(d.id, d.outcome, d.merged_into) for d in report.decisions] == \
            [(moved, "merged", kept)]
        joined = s.get(kept)
        assert (joined.tags, joined.access_count, joined.importance) == (("a", "b"), 6, 1.0)
        assert joined.project == "ops" and joined.created_at == clock.iso(NOW - timedelta(days=3))
        assert s.get(moved) is None
        assert [(t.record.id, t.reason, t.merged_into) for t in s.store.trashed()] == \
            [(moved, "merged", kept)]
        in_step(s)


def test_clean_service_trashes_what_expired_unless_used_since_the_plan(tmp_path, pin,
                                                                       monkeypatch):
    from services import services

    with services(tmp_path) as s:
        stale = s.add("stale scratch about printers", ago=timedelta(hours=30))
        saved = s.add("stale scratch about cables", ago=timedelta(hours=30))
        fresh = s.add("fresh scratch", ago=timedelta(hours=2))
        asked = []

        def empty_trash(**options):
            asked.append(options)
            return []

        real_apply = lifecycle._apply_clean

        def used_meanwhile(store, indexes, decisions, removals, problems):
            store.touch([saved])  # another process's search, after the plan
            return real_apply(store, indexes, decisions, removals, problems)

        monkeypatch.setattr(lifecycle, "_apply_clean", used_meanwhile)
        report = lifecycle.clean(s.store, s.indexes, s.settings, empty_trash)
        assert [(r.id, r.reason) for r in report.removed] == [(stale, "expired")]
        assert report.skipped == 1
        assert s.get(stale) is None and s.get(saved) is not None and s.get(fresh) is not None
        assert [t.reason for t in s.store.trashed([stale])] == ["expired"]
        assert asked == [{"older_than": clock.iso(NOW - timedelta(days=30)), "dry_run": False,
                          "keep_merged": True}]
        in_step(s)


def test_clean_service_dry_run_plans_the_same_and_writes_nothing(tmp_path, pin):
    from services import services

    with services(tmp_path, capacity_interact=2) as s:
        ids = [s.add(f"note number {n} about printers", ago=timedelta(hours=n + 1))
               for n in range(4)]
        s.indexes.sync()
        before = s.store.records(ids), s.store.log_head("interact")
        plan = lifecycle.clean(s.store, s.indexes, s.settings, lambda **o: [], dry_run=True,
                               promote_first=False)
        assert (s.store.records(ids), s.store.log_head("interact")) == before
        done = lifecycle.clean(s.store, s.indexes, s.settings, lambda **o: [],
                               promote_first=False)
        assert [(r.id, r.reason) for r in done.removed] == \
            [(r.id, r.reason) for r in plan.removed]
        assert plan.count("evicted") == 2 and s.store.count("interact") == 2
        in_step(s)
