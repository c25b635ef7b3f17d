"""Nothing a person stored is lost: near-duplicates kept and named, a default layer that
keeps notes, a trash for everything magray removes, accesses that mean use (issue 12)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import timedelta

import pytest

from magray import Memory, clock, config
from magray.records import NewRecord
from shell_helpers import fake_model  # noqa: F401  (fixture)
from checks import in_step

PAIRS = [
    ("Increase the connection pool size for the api service",
     "Decrease the connection pool size for the api service"),
    ("Run migrations before deploying the api", "Run migrations after deploying the api"),
    ("We chose React over Vue for the admin dashboard",
     "We chose Vue over React for the admin dashboard"),
    ("Dentist appointment on Thursday at 3pm", "Dentist appointment on Friday at 3pm"),
    ("Decision: migrate billing from Postgres to MySQL",
     "Decision: migrate billing from MySQL to Postgres"),
]
# Texts the model reads as (mostly) unknown tokens: all embed to about the same vector.
SCRIPTS = ["🎉🎊🥳", "🔥🔥🔥", "😀😃😄", "สวัสดีครับ ยินดีที่ได้รู้จัก", "วันนี้อากาศดีมาก",
           "ሰላም ለዓለም", "გამარჯობა მსოფლიო"]
TEXTS = [t for pair in PAIRS for t in pair] + SCRIPTS


def findable(memory, record_id: int, text: str, modes=("vector", "keyword", "hybrid")) -> None:
    for mode in modes:
        if mode == "keyword" and not any(c.isalnum() for c in text):
            continue  # emoji are no words to FTS5; export and meaning still find them
        hits = memory.search(text, mode=mode, top_k=20, track=False)
        assert record_id in [h.record.id for h in hits], (mode, text)


@pytest.mark.parametrize("together", [True, False])
def test_near_pairs_and_unreadable_scripts_all_kept(memory, together):
    stored = (memory.store_texts(TEXTS) if together else
              [memory.store_texts([t])[0] for t in TEXTS])
    assert len({s.id for s in stored}) == len(TEXTS) and not any(s.duplicate for s in stored)
    for n in range(len(PAIRS)):  # the second of each pair names the first
        first, second = stored[2 * n], stored[2 * n + 1]
        assert second.near == first.id and 0.95 <= second.similarity < 1, PAIRS[n]
    assert all(s.near is None for s in stored[2 * len(PAIRS):])  # never judged by vectors
    exported = {e.record.id: e.record.text for e in memory.export()}
    assert exported == {s.id: t for s, t in zip(stored, TEXTS)}
    for s, text in zip(stored, TEXTS):
        findable(memory, s.id, text)
    clusters = [{r.id for r in c.records} for c in memory.duplicates()]
    for n in range(len(PAIRS)):
        assert any({stored[2 * n].id, stored[2 * n + 1].id} <= c for c in clusters), PAIRS[n]
    blind = {s.id for s in stored[2 * len(PAIRS):]}
    assert not any(blind & c for c in clusters)


def test_store_reports_a_near_duplicate_in_json_and_on_a_terminal(cli, monkeypatch):
    import sys

    from magray.cli import output

    cli("store", PAIRS[0][0])
    result = cli("store", PAIRS[0][1], "--json")
    data = json.loads(result.out)
    assert data[0]["near"] == 1 and data[0]["id"] == 2 and 0.95 <= data[0]["similarity"] < 1
    assert data[0]["duplicate"] is False
    monkeypatch.setattr(output, "is_tty", lambda stream: stream is sys.stderr)
    told = " ".join(cli("store", PAIRS[1][0], PAIRS[1][1]).err.split())  # rich wraps lines
    assert told.startswith("#4 resembles #3 (similarity 0.96") and told.count("resembles") == 1


def test_duplicates_lists_clusters_and_merges_only_on_request(memory, cli):
    ids = [s.id for s in memory.store_texts([PAIRS[1][0], PAIRS[1][1], "buy oat milk"],
                                            tags=("ops",))]
    memory.store_texts([PAIRS[1][0]], tags=("deploy",))  # an access, tags joined
    clusters = json.loads(cli("duplicates", "--json").out)
    assert [c["ids"] for c in clusters] == [[ids[0], ids[1]]]
    assert 0.95 <= clusters[0]["similarity"] < 1
    assert memory.db.count("interact") == 3  # listing merges nothing

    merged = json.loads(cli("duplicates", "--merge", f"{ids[0]},{ids[1]}", "--json").out)
    assert merged["kept"]["id"] == ids[0] and merged["trashed"] == [ids[1]]
    assert merged["kept"]["access_count"] == 1 and merged["kept"]["tags"] == ["deploy", "ops"]
    trashed = memory.trash()
    assert [(t.record.id, t.reason, t.merged_into) for t in trashed] == [
        (ids[1], "merged", ids[0])]
    assert memory.restore_from_trash([ids[1]])[0].text == PAIRS[1][1]
    findable(memory, ids[1], PAIRS[1][1])
    in_step(memory)


# -- the default layer ------------------------------------------------------------------------


@pytest.mark.parametrize("days", [2, 100])
def test_a_note_stored_the_readme_way_survives_clean(cli, monkeypatch, days):
    monkeypatch.delenv("MAGRAY_DEFAULT_LAYER")  # the shipped default
    assert cli("store", "use rg -uu to search files that .gitignore hides").code == 0
    monkeypatch.setenv("MAGRAY_NOW", clock.iso(clock.now() + timedelta(days=days)))
    assert cli("clean").code == 0
    hit = json.loads(cli("search", "grep through ignored files", "--json").out)[0]
    assert (hit["id"], hit["layer"]) == (1, "assets")
    assert json.loads(cli("trash", "list", "--json").out) == []


def test_import_without_layer_uses_the_default_layer(cli, monkeypatch, tmp_path):
    monkeypatch.delenv("MAGRAY_DEFAULT_LAYER")
    export = tmp_path / "in.jsonl"
    export.write_text(json.dumps({"text": "a note without a layer"}) + "\n")
    assert cli("import", str(export)).code == 0
    assert json.loads(cli("list", "--json").out)[0]["layer"] == "assets"


# -- the trash ---------------------------------------------------------------------------------


def snapshot(memory, record_id: int) -> tuple:
    row = memory.db.conn.execute("SELECT * FROM records WHERE id = ?", (record_id,)).fetchone()
    assert row is not None
    return row


def test_forget_expiry_and_eviction_go_to_the_trash_and_come_back_whole(home, real_embedder,
                                                                        monkeypatch):
    settings = config.defaults().replace(capacity_insights=1, clean_promotes=False)
    now = clock.now()
    with Memory.open(home, settings=settings, embedder=real_embedder) as m:
        ids = [s.id for s in m.store([
            NewRecord("the wifi password for the guest network is on the fridge",
                      layer="assets"),
            NewRecord("standup moved to 10:30 for this sprint", layer="interact",
                      created_at=clock.iso(now - timedelta(days=3))),
            NewRecord("kubernetes pods restart when the liveness probe fails",
                      layer="insights", tags=("k8s",), project="infra"),
            NewRecord("the printer on floor two needs toner", layer="insights")])]
        before = {i: snapshot(m, i) for i in ids}
        m.forget([ids[0]])
        report = m.clean()
        assert (report.count("expired"), report.count("evicted")) == (1, 1)
        trashed = {t.record.id: t.reason for t in m.trash()}
        evicted = next(i for i in ids[2:] if i in trashed)
        assert trashed == {ids[0]: "forgotten", ids[1]: "expired", evicted: "evicted"}
        for i in trashed:
            text = m.trash([i])[0].record.text
            assert m.get(i) is None and all(
                i not in [h.record.id for h in m.search(text, mode=mode, track=False)]
                for mode in ("vector", "keyword", "hybrid"))
        in_step(m)

        asked = clock.now_iso()
        restored = m.restore_from_trash(sorted(trashed))
        assert sorted(r.id for r in restored) == sorted(trashed) and m.trash() == []
        for i in ids:  # same id, text, metadata, layer, vector; a restore is a use
            last = 9  # last_access
            row = snapshot(m, i)
            assert row[:last] + row[last + 1:] == before[i][:last] + before[i][last + 1:]
            assert row[last] >= asked if i in trashed else row[last] == before[i][last]
            findable(m, i, m.get(i).text)
        in_step(m)


def test_trash_cli_list_restore_empty_and_forget_safety(cli, fake_model):
    cli("store", "alpha note about wifi", "beta note about printers", "gamma note")
    assert cli("forget", "1", "2", "--dry-run").out.splitlines()[0].startswith("1\t")
    assert len(json.loads(cli("list", "--json").out)) == 3  # a dry run changes nothing
    declined = cli("forget", "1", "2", stdin=None, tty=True)  # a terminal, no answer
    assert declined.code == 1 and len(json.loads(cli("list", "--json").out)) == 3
    assert cli("forget", "1", "2", "--yes").out.split() == ["1", "2"]
    listed = json.loads(cli("trash", "list", "--json").out)
    assert {e["id"] for e in listed} == {1, 2} and {e["reason"] for e in listed} == {"forgotten"}
    assert json.loads(cli("status", "--json").out)["trash"] == {"records": 2}
    assert json.loads(cli("search", "wifi", "--mode", "keyword", "--json").out) == []
    assert cli("trash", "restore", "1").out.split() == ["1"]
    assert json.loads(cli("search", "wifi", "--mode", "keyword", "--json").out)[0]["id"] == 1
    again = cli("trash", "restore", "1")  # not in the trash any more
    assert again.code == 1 and again.err.startswith("error: no record with id 1 in the trash")
    assert cli("trash", "empty", "--dry-run").out.startswith("2\t")
    assert cli("store", "epsilon note").code == 0 and cli("forget", "4").code == 0
    declined = cli("trash", "empty", stdin=None, tty=True)  # a terminal, no answer
    assert declined.code == 1 and "nothing was destroyed" in declined.err
    assert len(json.loads(cli("trash", "list", "--json").out)) == 2
    assert cli("trash", "empty", "4", stdin=None, tty=True).code == 0  # one: not asked
    assert cli("trash", "empty", "--yes", stdin=None, tty=True).code == 0
    assert json.loads(cli("trash", "list", "--json").out) == []
    assert cli("forget", "3", "--purge").code == 0
    assert json.loads(cli("trash", "list", "--json").out) == []
    assert cli("store", "delta note").out.split() == ["5"]  # trashed ids are never reissued


def test_clean_purges_only_trash_older_than_trash_days(fake_memory, monkeypatch, cli):
    ids = [s.id for s in fake_memory.store_texts(["old scratch", "new scratch"],
                                                 layer="assets")]
    fake_memory.forget([ids[0]])
    monkeypatch.setenv("MAGRAY_NOW", clock.iso(clock.now() + timedelta(days=20)))
    fake_memory.forget([ids[1]])
    monkeypatch.setenv("MAGRAY_NOW", clock.iso(clock.now() + timedelta(days=11)))
    assert fake_memory.clean(dry_run=True).purged == 1 and len(fake_memory.trash()) == 2
    assert cli("clean", "--dry-run").out.splitlines()[:-1] == [
        f"purge\t{ids[0]}\tassets\told scratch"]
    assert fake_memory.clean().purged == 1
    assert [t.record.id for t in fake_memory.trash()] == [ids[1]]


def test_backup_and_restore_keep_the_trash(fake_memory):
    ids = [s.id for s in fake_memory.store_texts(["keep me", "trash me"])]
    fake_memory.forget([ids[1]])
    archive = fake_memory.backup().archive.path
    fake_memory.empty_trash()
    fake_memory.restore(archive, replace=True)
    assert [t.record.text for t in fake_memory.trash()] == ["trash me"]
    assert fake_memory.restore_from_trash([ids[1]])[0].id == ids[1]


# -- accesses -------------------------------------------------------------------------------


def test_unrelated_searches_do_not_count_as_accesses(memory):
    note = memory.store_texts(["Security: rotate the AWS access keys"])[0].id
    memory.store_texts(["buy oat milk", "the cat sleeps all day", "water the plants"])
    for query in ["pasta recipe", "football results", "how tall is everest", "jazz albums",
                  "train timetable", "weather tomorrow", "birthday gift ideas", "knitting",
                  "python list comprehension", "movie night"]:
        memory.search(query)
    assert memory.get(note).access_count == 0
    memory.search("rotate AWS keys")
    assert memory.get(note).access_count == 1
    assert memory.show(note).access_count == 2


# -- the migration ------------------------------------------------------------------------------


def test_an_old_database_migrates_without_touching_records_or_indexes(home):
    from fakes import FakeEmbedder
    from magray.db import migrations

    embedder = FakeEmbedder()
    with Memory.open(home, embedder=embedder) as m:
        m.store_texts(["first old note", "second old note"], layer="assets")
        m.sync()
        path, index_file = m.paths.database, m.index("assets").path
    # Back to the schema before the trash (and passages), exactly as m001-m003 make it.
    conn = sqlite3.connect(path)
    conn.executescript("DROP TRIGGER records_parts_delete; DROP TRIGGER records_parts_text; "
                       "DROP TABLE passages; DROP TABLE sources; DROP TABLE trash; "
                       "DELETE FROM _sqlite_migrations WHERE name IN "
                       "('m004_trash', 'm005_repair_text', 'm006_passages');")
    old = sqlite3.connect(":memory:")
    migrations.apply(old, stop_before="m004_trash")
    schema = ("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
              "ORDER BY name")
    assert conn.execute(schema).fetchall() == old.execute(schema).fetchall()
    rows = conn.execute("SELECT * FROM records ORDER BY id").fetchall()
    conn.close()
    digest = hashlib.sha256(index_file.read_bytes()).hexdigest()
    calls = embedder.calls

    with Memory.open(home, embedder=embedder) as m:
        assert m.db.conn.execute("SELECT * FROM records ORDER BY id").fetchall() == rows
        assert [h.record.text for h in m.search("second", mode="keyword")] == ["second old note"]
        assert m.trash() == [] and embedder.calls == calls  # nothing re-embedded
        in_step(m)
    assert hashlib.sha256(index_file.read_bytes()).hexdigest() == digest


def test_a_promotion_that_meets_its_twin_trashes_the_moved_copy(fake_memory):
    low = fake_memory.store_texts(["rotate the api keys"], layer="interact", tags=("a",))[0].id
    high = fake_memory.store_texts(["rotate the api keys"], layer="insights")[0].id
    report = fake_memory.promote(ids=[low], threshold=0)
    assert [(d.outcome, d.merged_into) for d in report.decisions] == [("merged", high)]
    assert [(t.record.id, t.reason, t.merged_into) for t in fake_memory.trash()] == [
        (low, "merged", high)]
    assert fake_memory.get(high).tags == ("a",)


def _files_hold(home, needle: str) -> list[str]:
    return [str(p) for p in home.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_purged_text_leaves_no_bytes_in_the_files(cli, home, fake_model):
    word, other = "zorblatquux" + "7731", "quimbletorf" + "5512"  # as FTS5 keeps words
    cli("store", f"pasted {word} by mistake", f"also {other} by mistake", "a kept note")
    assert _files_hold(home, word) and _files_hold(home, other)
    assert cli("forget", "1", "--purge").code == 0
    assert _files_hold(home, word) == []
    assert cli("forget", "2").code == 0 and cli("trash", "empty", "--yes").code == 0
    assert _files_hold(home, other) == []
    assert [r["text"] for r in json.loads(cli("list", "--json").out)] == ["a kept note"]


def test_clean_never_purges_a_record_trashed_again_meanwhile(fake_memory, home, monkeypatch):
    from fakes import FakeEmbedder

    m = fake_memory
    rid = m.store_texts(["scratch to keep"], layer="assets")[0].id
    m.forget([rid])
    monkeypatch.setenv("MAGRAY_NOW", clock.iso(clock.now() + timedelta(days=31)))
    read, raced = m.db.trashed, []

    def racing(ids=None):
        found = read(ids)
        if not m.db.conn.in_transaction:  # another process can act before the purge
            with Memory.open(home, embedder=FakeEmbedder()) as other:
                other.restore_from_trash([rid])
                other.forget([rid])  # trashed now: kept trash_days from today
            raced.append(rid)
        return found

    monkeypatch.setattr(m.db, "trashed", racing)
    m.clean()
    monkeypatch.setattr(m.db, "trashed", read)
    # Trashed again in between: kept. Nobody could act in between: purged, being old.
    assert [t.record.id for t in m.trash()] == raced


def test_clean_never_purges_merged_texts_only_trash_empty_does(fake_memory, monkeypatch):
    ids = [s.id for s in fake_memory.store_texts(["deploy notes v1", "deploy notes v2",
                                                  "scratch"], layer="assets")]
    fake_memory.merge_duplicates(ids[:2])
    fake_memory.forget([ids[2]])
    monkeypatch.setenv("MAGRAY_NOW", clock.iso(clock.now() + timedelta(days=400)))
    assert fake_memory.clean().purged == 1
    assert [(t.record.id, t.reason) for t in fake_memory.trash()] == [(ids[1], "merged")]
    assert [t.record.id for t in fake_memory.empty_trash()] == [ids[1]]


def test_a_restored_expired_record_is_not_expired_again_by_the_next_clean(fake_memory,
                                                                          monkeypatch):
    rid = fake_memory.store_texts(["short-lived context"], layer="interact")[0].id
    monkeypatch.setenv("MAGRAY_NOW", clock.iso(clock.now() + timedelta(days=3)))
    fake_memory.clean(promote=False)
    assert [(t.record.id, t.reason) for t in fake_memory.trash()] == [(rid, "expired")]
    fake_memory.restore_from_trash([rid])  # the person asked for it back: a use
    fake_memory.clean(promote=False)
    assert fake_memory.trash() == [] and fake_memory.get(rid).last_access == clock.now_iso()


def test_ctrl_c_at_the_question_exits_130_and_forgets_nothing(cli, fake_model, monkeypatch):
    import typer

    def interrupted(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise typer.Abort() from None  # what click's prompt does with ^C

    cli("store", "one note", "two note")
    monkeypatch.setattr(typer, "confirm", interrupted)
    assert cli("forget", "1", "2", stdin=None, tty=True).code == 130
    assert len(json.loads(cli("list", "--json").out)) == 2
