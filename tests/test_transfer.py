"""export and import: the JSON Lines format, round trips, merging, validation, Markdown."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

from fakes import FakeEmbedder
from magray import Filters, InputError, Memory, NewRecord
from magray.transfer import FIELDS, read, write_jsonl, write_markdown
from shell_helpers import fake_model  # noqa: F401  (fixture)

NOTES = [
    NewRecord("use rg -uu to search files that .gitignore hides", tags=("shell",),
              kind="command", importance=0.5),
    NewRecord("we chose Postgres over MySQL for row-level security", layer="insights",
              project="atlas", tags=("db", "decision"), created_at="2024-03-01T10:00:00.000000+00:00"),
    NewRecord("ssh -J bastion host\njumps through the bastion", layer="assets",
              session="s-1", tags=("ssh",)),
    NewRecord("kubectl rollout undo deployment/api", project="atlas",
              created_at="2023-12-24T08:30:00.000000+00:00"),
]


def exported(memory: Memory, **options) -> str:
    out = io.StringIO()
    write_jsonl(memory.export(**options), out)
    return out.getvalue()


def imported(memory: Memory, text: str):
    with read(io.BytesIO(text.encode()), memory.settings.max_text_bytes) as entries:
        return memory.import_records(entries)


@pytest.fixture
def source(fake_memory):
    ids = [s.id for s in fake_memory.store(NOTES)]
    fake_memory.search("bastion", mode="keyword")  # some access counts and times
    return fake_memory, ids


@pytest.fixture
def target(tmp_path):
    with Memory.open(tmp_path / "other", embedder=FakeEmbedder()) as memory:
        yield memory


def test_every_field_in_a_stable_order(source):
    memory, ids = source
    lines = exported(memory, vectors=True).splitlines()
    assert len(lines) == len(NOTES)
    first = json.loads(lines[0])
    assert list(first) == [*FIELDS, "vector_model", "vector"]
    assert FIELDS == ("id", "text", "layer", "kind", "tags", "project", "session", "created_at",
                      "updated_at", "last_access", "access_count", "importance", "content_hash")
    assert [json.loads(line)["id"] for line in lines] == ids
    assert first["vector_model"] == "fake-bow"
    assert list(json.loads(exported(memory).splitlines()[0])) == list(FIELDS)


@pytest.mark.parametrize("vectors", [True, False])
def test_export_import_export_is_identical(source, target, vectors):
    memory, _ = source
    text = exported(memory, vectors=vectors)
    report = imported(target, text)
    assert (report.added, report.merged, report.unchanged) == (len(NOTES), 0, 0)
    assert report.embedded == (0 if vectors else len(NOTES))
    assert exported(target, vectors=vectors) == text
    for record_id in range(1, len(NOTES) + 1):  # ids kept, and the vectors too
        keys, mine = memory.db.vectors([record_id], memory.dim)
        _, theirs = target.db.vectors([record_id], target.dim)
        assert np.array_equal(mine, theirs)


def test_reimport_changes_nothing(source, target):
    memory, _ = source
    text = exported(memory, vectors=True)
    imported(target, text)
    again = imported(target, text)
    assert (again.added, again.merged, again.unchanged, again.embedded) == (0, 0, len(NOTES), 0)
    assert exported(target, vectors=True) == text
    assert imported(memory, text).unchanged == len(NOTES)  # into itself: nothing either


def test_imported_records_are_searchable(source, target):
    memory, ids = source
    imported(target, exported(memory, vectors=True))
    assert [h.record.id for h in target.search("bastion", mode="keyword")] == [ids[2]]
    hit = target.search("kubectl rollout undo deployment", mode="vector", top_k=1)[0]
    assert hit.record.id == ids[3] and hit.record.project == "atlas"
    assert target.index("assets").staleness() == ""


def test_duplicates_merge_by_joining_fields(fake_memory, target):
    first = fake_memory.store([NewRecord("restart nginx", tags=("ops",), importance=0.2)])[0]
    line = json.loads(exported(fake_memory))
    target.store([NewRecord("restart nginx", tags=("web",), kind="command")])
    line.update(access_count=5, last_access="2030-01-01T00:00:00.000000+00:00",
                created_at="2001-01-01T00:00:00.000000+00:00")
    report = imported(target, json.dumps(line))
    assert (report.added, report.merged) == (0, 1)
    record = target.list_records()[0]
    assert record.tags == ("ops", "web") and record.kind == "command"
    assert record.access_count == 5 and record.importance == 0.2
    assert record.created_at.startswith("2001") and record.last_access.startswith("2030")
    assert imported(target, json.dumps(line)).unchanged == 1
    assert first.id == 1 and target.db.count("interact") == 1


def test_text_is_kept_exactly(fake_memory, target):
    snippet = "    def f():\n        return 1\n"  # the library stores text as given
    fake_memory.store([NewRecord(snippet, kind="snippet")])
    text = exported(fake_memory, vectors=True)
    assert imported(target, text).added == 1
    assert target.get(1).text == snippet and exported(target, vectors=True) == text


def test_same_text_in_another_layer_is_another_record(fake_memory, target):
    fake_memory.store([NewRecord("a note", layer="insights")])
    target.store([NewRecord("a note")])
    assert imported(target, exported(fake_memory)).added == 1
    assert sorted(r.layer for r in target.list_records()) == ["insights", "interact"]


def test_ids_kept_only_where_never_issued(source, tmp_path):
    memory, _ = source
    text = exported(memory)
    with Memory.open(tmp_path / "busy", embedder=FakeEmbedder()) as busy:
        busy.store_texts(["one", "two"])  # ids 1 and 2 are taken
        busy.forget([2])  # and 2 stays issued even when deleted
        imported(busy, text)
        ids = sorted(r.id for r in busy.list_records(limit=None))
    assert ids == [1, 3, 4, 5, 6]


def test_vectors_of_another_model_are_reembedded(source, tmp_path):
    memory, _ = source
    text = exported(memory, vectors=True)
    with Memory.open(tmp_path / "other", embedder=FakeEmbedder(dim=32, name="other")) as other:
        report = imported(other, text)
        assert report.embedded == len(NOTES) and other.recorded_model() == ("other", 32)
        keys, vectors = other.db.vectors([1], 32)
        assert np.allclose(vectors[0], other.embedder.embed_documents([NOTES[0].text])[0])


def test_filters_narrow_the_export(source):
    memory, ids = source
    def exported_ids(**options):
        return [json.loads(line)["id"] for line in exported(memory, **options).splitlines()]

    assert exported_ids(layers=("assets",)) == [ids[2]]
    assert exported_ids(filters=Filters(project="atlas")) == [ids[1], ids[3]]
    assert exported_ids(filters=Filters(tags=("db",))) == [ids[1]]
    assert exported_ids(filters=Filters(until="2024-01-01T00:00:00+00:00")) == [ids[3]]


BAD_LINES = [
    ('{"text": "x"', "malformed JSON"),
    ('["x"]', "expected a JSON object"),
    ('{"text": "x", "colour": 1}', "unknown field 'colour'"),
    ('{"layer": "assets"}', "'text' must be a string"),
    ('{"text": "x", "layer": "attic"}', "unknown layer 'attic'"),
    ('{"text": "x", "content_hash": "abc"}', "content_hash does not match"),
    ('{"text": "x", "created_at": "yesterday"}', "created_at"),
    ('{"text": "x", "access_count": -1}', "'access_count' must be a non-negative integer"),
    ('{"text": "x", "importance": 2}', "importance must be a number from 0 to 1"),
    ('{"text": "x", "id": "7"}', "'id' must be a positive integer"),
    ('{"text": "x", "tags": "a"}', "'tags' must be a list"),
    ('{"text": "x", "vector": "AAAA"}', "needs its 'vector_model'"),
    ('{"text": "x", "vector": "!!", "vector_model": "m"}', "not valid base64"),
    ('{"text": "x", "vector": "AACAPwAAAAA=", "vector_model": "m", "id": 9}', None),  # fine
    ('{"text": "x", "vector": "AAAAQA==", "vector_model": "m"}', "not a finite unit-length"),
    ('{"text": "y", "vector": "AACAPw==", "vector_model": "m"}', "earlier m vectors have 2"),
]


@pytest.mark.parametrize("bad, message", [b for b in BAD_LINES if b[1]])
def test_a_bad_line_rejects_the_whole_file(target, bad, message):
    good = json.dumps({"text": "fine"})
    vector_ok = BAD_LINES[13][0]
    text = "\n".join([good, vector_ok, "", bad, good])
    with pytest.raises(InputError, match=message) as caught:
        imported(target, text)
    assert str(caught.value).startswith("line 4: ")
    assert target.db.count("interact") == 0 and target.recorded_model() == (None, None)


def test_markdown_groups_by_layer(source):
    memory, ids = source
    out = io.StringIO()
    count = write_markdown(memory.export(by_layer=True), out)
    text = out.getvalue()
    assert count == len(NOTES)
    assert text.index("## interact") < text.index("## insights") < text.index("## assets")
    assert f"### {ids[1]} · 2024-03-01 10:00 UTC" in text
    assert "tags: `db`, `decision` · project: atlas" in text
    assert "> ssh -J bastion host\n> jumps through the bastion\n" in text
    empty = io.StringIO()
    write_markdown(memory.export(layers=("insights",), filters=Filters(kind="none")), empty)
    assert empty.getvalue() == "# magray export\n\nNo records.\n"


# -- through the command line -------------------------------------------------------------

def test_cli_round_trip_through_a_file_and_stdin(cli, fake_model, home, tmp_path):
    cli("store", "--tag", "a", "first note", "second note")
    cli("store", "--layer", "assets", "--project", "p", "third note")
    path = tmp_path / "out.jsonl"
    result = cli("export", "--with-vectors", "-o", str(path))
    assert result.code == 0 and result.out == ""
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    stdout = cli("export", "--with-vectors").out
    assert stdout == path.read_text()
    other = ["--home", str(tmp_path / "other")]
    result = cli(*other, "import", str(path), "--json")
    assert result.code == 0
    assert json.loads(result.out) == {"added": 3, "merged": 0, "unchanged": 0, "embedded": 0,
                                      "redacted": 0}
    assert cli(*other, "export", "--with-vectors").out == stdout
    again = cli(*other, "import", "-", "--json", stdin=stdout.encode())
    assert json.loads(again.out)["unchanged"] == 3
    assert cli("export", "--layer", "assets", "--project", "p").out.count("\n") == 1


def test_cli_import_bad_line_exit_2_nothing_written(cli, fake_model, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "one"}\n{"text": "two"}\nnot json\n')
    result = cli("import", str(path))
    assert result.code == 2
    assert result.err.startswith("error: line 3: malformed JSON")
    assert cli("list", "--json").out.strip() == "[]"
    assert fake_model.calls == 0


def test_cli_import_and_export_usage_errors(cli, fake_model, tmp_path):
    assert cli("import", str(tmp_path / "missing.jsonl")).code == 1
    assert cli("import", str(tmp_path)).code == 2
    result = cli("export", "--format", "markdown", "--with-vectors")
    assert result.code == 2 and "--with-vectors needs --format jsonl" in result.err
    assert cli("export", "--format", "csv").code == 2
    assert cli("import", "-", stdin=b"").err == "error: nothing to import: the input is empty\n"


def test_cli_search_output_imports(cli, fake_model, tmp_path):
    cli("store", "alpha beta", "gamma delta")
    hits = cli("search", "alpha", "--mode", "keyword", "--jsonl", "--no-track").out
    result = cli("--home", str(tmp_path / "other"), "import", "-", "--json", stdin=hits.encode())
    assert json.loads(result.out)["added"] == 1


def test_markdown_export_cli(cli, fake_model):
    cli("store", "--layer", "insights", "an insight")
    cli("store", "a scratch note")
    text = cli("export", "--format", "markdown").out
    assert text.startswith("# magray export\n")
    assert text.index("## interact") < text.index("> a scratch note") < text.index("## insights")


def test_real_model_reembeds_on_import(memory, tmp_path, real_embedder):
    """Without vectors, an import embeds the texts again: search by meaning works, and the
    vectors equal the ones the source computed."""
    memory.store_texts(["the staging database password rotates every 90 days",
                        "water the tomato plants on the balcony"])
    text = exported(memory)
    with Memory.open(tmp_path / "fresh", embedder=real_embedder) as fresh:
        assert imported(fresh, text).embedded == 2
        hit = fresh.search("how often do credentials change", mode="vector", top_k=1)[0]
        assert hit.record.text.startswith("the staging database password")
        keys, mine = memory.db.vectors([1, 2], memory.dim)  # rows in the database's order
        others, theirs = fresh.db.vectors([1, 2], fresh.dim)
        assert np.allclose(mine[np.argsort(keys)], theirs[np.argsort(others)], atol=1e-5)
