"""The everyday commands: show, list, forget."""

from __future__ import annotations

import json

import pytest

from magray import Filters, NewRecord, NotFoundError
from magray.records import Record
from shell_helpers import fake_model  # noqa: F401  (fixture)

RECORD_KEYS = ["id", "text", "layer", "kind", "tags", "project", "session", "created_at",
               "updated_at", "last_access", "access_count", "importance", "content_hash"]


@pytest.fixture
def filled(fake_memory):
    items = [NewRecord(f"note {n}", created_at=f"2024-01-{n:02d}T00:00:00.000000+00:00",
                       project="atlas" if n % 2 else None, tags=("even",) if n % 2 == 0 else ())
             for n in range(1, 9)]
    items.append(NewRecord("an asset", layer="assets", created_at="2024-02-01T00:00:00.000000+00:00"))
    ids = [s.id for s in fake_memory.store(items)]
    return fake_memory, ids


def test_list_newest_first_with_filters_and_limit(filled):
    memory, ids = filled
    assert [r.text for r in memory.list_records(limit=3)] == ["an asset", "note 8", "note 7"]
    assert [r.text for r in memory.list_records(layers=("interact",), limit=2)] == \
        ["note 8", "note 7"]
    assert [r.id for r in memory.list_records(filters=Filters(project="atlas"), limit=None)] == \
        [ids[6], ids[4], ids[2], ids[0]]
    assert len(memory.list_records(filters=Filters(tags=("even",)), limit=None)) == 4
    since = Filters(since="2024-01-07T00:00:00.000000+00:00")
    assert [r.text for r in memory.list_records(filters=since)] == ["an asset", "note 8", "note 7"]


def test_forget_deletes_from_database_and_index(filled):
    memory, ids = filled
    forgotten = memory.forget([ids[2], ids[8]])
    assert [r.id for r in forgotten] == [ids[2], ids[8]]
    assert memory.get(ids[2]) is None and memory.db.count("assets") == 0
    for layer in ("interact", "assets"):
        index = memory.index(layer)
        assert index.staleness() == ""
        assert index.state().count == memory.db.count(layer)
    hits = memory.search("note 3", mode="vector", top_k=10, track=False)
    assert ids[2] not in [h.record.id for h in hits]
    words = memory.search("note", mode="keyword", top_k=20, track=False)
    assert len(words) == 7 and ids[2] not in [h.record.id for h in words]


def test_forget_is_all_or_nothing(filled):
    memory, ids = filled
    with pytest.raises(NotFoundError, match="no record with id 999; nothing was forgotten"):
        memory.forget([ids[0], 999])
    assert memory.get(ids[0]) is not None


def test_show_prints_every_field(cli, fake_model):
    cli("store", "--tag", "x", "--project", "p", "line one\nline two")  # one argument, one record
    result = cli("show", "1", "--json")
    record = json.loads(result.out)
    assert list(record) == RECORD_KEYS and record["tags"] == ["x"]
    assert record["access_count"] == 1  # a person asked for it: an access
    plain = cli("show", "1").out
    assert "project       p\n" in plain and plain.endswith("\n\nline one\nline two\n")
    again = json.loads(cli("show", "1", "--jsonl").out)
    assert again.pop("access_count") == 3 and again.pop("last_access") >= record["last_access"]
    assert again == {k: v for k, v in record.items() if k not in ("access_count", "last_access")}
    missing = cli("show", "42")
    assert missing.code == 1 and missing.err == "error: no record with id 42\n"
    assert cli("show", "abc").code == 2


def test_list_cli_outputs(cli, fake_model, monkeypatch):
    cli("store", "first", "second [/] with brackets")
    rows = json.loads(cli("list", "--json").out)
    assert [r["id"] for r in rows] == [2, 1]  # stored together: the higher id is newer
    assert list(rows[0]) == RECORD_KEYS
    lines = cli("list", "--jsonl").out.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [2, 1]
    plain = cli("list").out.splitlines()
    assert [line.split("\t")[0] for line in plain] == ["2", "1"]
    assert plain[0].split("\t")[2:] == ["interact", "second [/] with brackets"]
    assert cli("list", "-n", "1", "--jsonl").out.count("\n") == 1
    assert cli("list", "--layer", "attic").code == 2
    assert cli("list", "--since", "soon").code == 2
    from magray.cli import output

    monkeypatch.setattr(output, "human", lambda: True)  # the table a terminal gets
    table = cli("list")
    assert table.code == 0 and "second [/] with brackets" in table.out  # not Rich markup
    assert table.out.split()[:6] == ["id", "created", f"({output.zone()})", "layer", "text",
                                     "tags"]  # times in local time, the zone named


def test_forget_cli_with_ids_from_stdin(cli, fake_model):
    cli("store", "a", "b", "c", "d")
    result = cli("forget", "1", "3", "--json")
    assert json.loads(result.out) == [{"id": 1, "layer": "interact"},
                                      {"id": 3, "layer": "interact"}]
    ids = cli("list", "--jsonl").out
    piped = "\n".join(str(json.loads(line)["id"]) for line in ids.splitlines())
    result = cli("forget", "-", stdin=piped.encode())
    assert result.out == "4\n2\n"
    assert cli("list", "--json").out.strip() == "[]"
    missing = cli("forget", "7")
    assert missing.code == 1 and "nothing was forgotten" in missing.err
    assert cli("forget", "x1").code == 2
    empty = cli("forget", "-", stdin=b"")  # a piped search that matched nothing
    assert (empty.code, empty.out) == (0, "")
    assert cli("forget").code == 2  # no ids at all is bad usage


def test_record_type_keys_are_the_documented_ones():
    assert list(Record.__dataclass_fields__) == RECORD_KEYS


@pytest.mark.parametrize("args", [
    ("forget", "²"), ("forget", "9" * 23), ("forget", "0"), ("trash", "restore", "٣"),
    ("duplicates", "--merge", "9" * 23 + ",1"), ("list", "--limit", "9" * 20),
    ("list", "--limit", "٣"), ("show", "9" * 20), ("trash", "empty", "9" * 20)])
def test_ids_and_numbers_are_ascii_digits_within_64_bits(cli, fake_model, args):
    cli("store", "one", "two", "three")
    assert cli("forget", "3").code == 0
    result = cli(*args)
    assert result.code == 2 and result.out == "" and "Traceback" not in result.err
    assert result.err.startswith("error: ") and result.err.count("\n") == 1
    assert len(json.loads(cli("list", "--json").out)) == 2  # nothing changed
    assert len(json.loads(cli("trash", "list", "--json").out)) == 1


def test_forget_dry_run_lists_whole_texts_as_reversible_fields(cli, fake_model):
    text = "a long\tnote " + "word " * 60 + "end"
    cli("store", text)
    line = cli("forget", "1", "--dry-run").out.rstrip("\n")
    assert line == "1\tinteract\t" + text.replace("\t", "\\t")


def test_the_readme_forget_pipeline_removes_only_what_it_means(cli):
    cli("store", "old wifi notes: the router password was on the sticker under the modem",
        "rotate the AWS access keys every 90 days", "the dentist moved to Thursday")

    def forget_best(query: str):
        found = cli("search", query, "--top-k", "1", "--min-score", "0.5", "--mode", "vector",
                    "--jsonl").out
        ids = "".join(f"{json.loads(line)['id']}\n" for line in found.splitlines())
        return cli("forget", "-", stdin=ids.encode())

    gone = forget_best("old wifi notes")
    assert gone.code == 0 and gone.out.split() == ["1"]
    nothing = forget_best("how to bake sourdough bread")  # matches nothing: forgets nothing
    assert nothing.code == 0 and nothing.out == ""
    assert [r["id"] for r in json.loads(cli("list", "--json").out)] == [3, 2]
