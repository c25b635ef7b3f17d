"""`magray store` and `magray search` through the CLI: outputs, duplicates, bad input."""

import json
import sqlite3

import pytest

from magray import paths


def _count(home) -> int:
    db = paths.resolve(home).database
    if not db.exists():
        return 0
    return sqlite3.connect(db).execute("SELECT count(*) FROM records").fetchone()[0]


def test_store_prints_ids_and_search_finds(cli, home):
    result = cli("store", "use rg -uu to search ignored files", "buy oat milk", "--tag", "x")
    assert result.code == 0, result
    assert result.out.split() == ["1", "2"]
    found = cli("search", "grep", "through", "gitignored", "files", "--json")
    hits = json.loads(found.out)
    assert hits[0]["text"] == "use rg -uu to search ignored files"
    assert hits[0]["tags"] == ["x"]
    required = {"id", "score", "text", "layer", "tags", "project", "session", "kind",
                "created_at", "access_count", "similarity", "updated_at", "last_access",
                "importance", "content_hash"}
    assert set(hits[0]) == required
    lines = cli("search", "oat milk", "--jsonl", "-k", "1").out.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["text"] == "buy oat milk"


def test_plain_output_off_a_terminal(cli):
    cli("store", "restart nginx with systemctl")
    out = cli("search", "restart web server").out
    record_id, score, layer, text = out.splitlines()[0].split("\t")
    assert (record_id, layer, text) == ("1", "interact", "restart nginx with systemctl")
    assert "\x1b[" not in out


def test_stdin_lines_and_json_output(cli):
    result = cli("store", "-", "--json", "--layer", "assets", "--project", "p",
                 stdin=b"first line\n\n  \nsecond line\r\nfirst line\n")
    assert result.code == 0, result
    stored = json.loads(result.out)
    assert [(s["id"], s["layer"], s["duplicate"]) for s in stored] == [
        (1, "assets", False), (2, "assets", False), (1, "assets", True)]
    assert set(stored[0]) == {"id", "layer", "duplicate", "similarity", "near", "redacted"}


def test_piped_stdin_without_dash(cli):
    assert cli("store", stdin=b"from a pipe\n").out.split() == ["1"]


def test_jsonl_keeps_metadata(cli):
    line = {"text": "old note", "layer": "insights", "tags": ["a", "b"], "project": "atlas",
            "session": "s1", "kind": "decision", "importance": 0.7,
            "created_at": "2024-02-03T04:05:06Z"}
    assert cli("store", "--jsonl", "-", stdin=json.dumps(line).encode()).code == 0
    hit = json.loads(cli("search", "old note", "--json", "--mode", "keyword").out)[0]
    assert hit["created_at"] == "2024-02-03T04:05:06.000000+00:00"
    assert (hit["layer"], hit["tags"], hit["project"], hit["session"], hit["kind"],
            hit["importance"]) == ("insights", ["a", "b"], "atlas", "s1", "decision", 0.7)


def test_duplicate_counts_as_access_and_merges_tags(cli):
    cli("store", "the same note", "-t", "one")
    again = json.loads(cli("store", "the same note", "-t", "two", "--json").out)
    assert again == [{"id": 1, "layer": "interact", "duplicate": True, "similarity": 1.0,
                      "near": None, "redacted": []}]
    other_layer = json.loads(cli("store", "the same note", "--layer", "assets", "--json").out)
    assert other_layer[0]["duplicate"] is False and other_layer[0]["id"] == 2
    hit = json.loads(cli("search", "same note", "--json", "--layer", "interact",
                         "--no-track").out)[0]
    assert hit["access_count"] == 1 and hit["tags"] == ["one", "two"]


BAD_STDIN = [
    (["-"], b"fine\nbad \xff\xfe bytes\n", "line 2: invalid UTF-8"),
    (["-"], b"fine\nnul\x00byte\n", "line 2: contains a NUL byte"),
    (["-"], b"   \n\t\n", "no text to store"),
    (["-"], b"", "no text to store"),
    (["-"], b"ok\n" + b"x" * 2000 + b"\n", "line 2: over the limit of 1024 bytes"),
    (["--jsonl", "-"], b'{"text": "ok"}\n{"text": "broken"\n', "line 2: malformed JSON"),
    (["--jsonl", "-"], b'{"text": 5}\n', "line 1: 'text' must be a string"),
    (["--jsonl", "-"], b'{"txt": "x"}\n', "line 1: unknown field 'txt'"),
    (["--jsonl", "-"], b'{"tags": []}\n', "line 1: missing field 'text'"),
    (["--jsonl", "-"], b'["text"]\n', "line 1: expected a JSON object"),
    (["--jsonl", "-"], b'{"text": "x", "layer": "attic"}\n', "unknown layer 'attic'"),
    (["--jsonl", "-"], b'{"text": "x", "created_at": "yesterday"}\n',
     "line 1: created_at: 'yesterday' is not an ISO 8601"),
    (["--jsonl", "-"], b'{"text": "x", "importance": 3}\n', "importance must be a number"),
    (["--jsonl", "-"], b'{"text": "   "}\n', "line 1: text is empty"),
]


@pytest.mark.parametrize("args, stdin, message", BAD_STDIN)
def test_bad_input_rejects_whole_batch(cli, home, monkeypatch, args, stdin, message):
    monkeypatch.setenv("MAGRAY_MAX_TEXT_BYTES", "1024")
    result = cli("store", *args, stdin=stdin)
    assert result.code == 2, result
    assert result.out == ""
    assert result.err.startswith("error: ") and message in result.err
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert _count(home) == 0


@pytest.mark.parametrize("args, message", [
    (["store", "   "], "text is empty or only whitespace"),
    (["store", "a\x00b"], "contains a NUL byte"),
    (["store", "x", "--layer", "attic"], "unknown layer 'attic'"),
    (["store", "x", "--importance", "2"], "importance must be a number from 0 to 1"),
    (["store", "x", "--tag", " "], "a tag must not be empty"),
    (["store", "x", "--jsonl"], "--jsonl reads stdin"),
    (["search", "x", "--top-k", "-1"], "--top-k must be from 1 to 100"),
    (["search", "x", "--top-k", "101"], "--top-k must be from 1 to 100"),
    (["search", "x", "--top-k", "ten"], "Invalid value for '--top-k'"),
    (["search", "x", "--since", "not-a-date"], "--since: 'not-a-date' is not an ISO 8601"),
    (["search", "x", "--layer", "attic"], "unknown layer 'attic'"),
    (["search", "x", "--mode", "psychic"], "--mode must be one of"),
    (["search", "   "], "the search query is empty"),
    (["search"], "Missing argument"),
    (["store", "x", "--bogus"], "No such option: --bogus"),
])
def test_bad_options_exit_2_with_one_line(cli, home, args, message):
    result = cli(*args)
    assert result.code == 2, result
    assert message in result.err and result.err.count("\n") == 1
    assert _count(home) == 0


def test_oversized_argument(cli, home, monkeypatch):
    monkeypatch.setenv("MAGRAY_MAX_TEXT_BYTES", "10")
    result = cli("store", "ok", "this one is too long")
    assert result.code == 2 and "argument 2: 20 bytes is over the limit of 10" in result.err
    assert _count(home) == 0


def test_ten_megabyte_line_rejected_without_reading_it_all(cli, home):
    result = cli("store", "-", stdin=b"x" * (10 * 1024 * 1024) + b"\n")
    assert result.code == 2 and "line 1: over the limit of 524288 bytes" in result.err
    assert _count(home) == 0


def test_nothing_to_store_on_a_terminal(cli):
    result = cli("store", tty=True)
    assert result.code == 2 and "nothing to store" in result.err


def test_bad_config_is_a_one_line_error(cli, home):
    home.mkdir(parents=True)
    (home / "config.toml").write_text("top_k = 'many'\n")
    result = cli("search", "x")
    assert result.code == 2 and "setting 'top_k' must be an integer" in result.err


def test_model_mismatch_refused_with_remedy(cli, monkeypatch):
    assert cli("store", "first note").code == 0
    monkeypatch.setenv("MAGRAY_TRUNCATE_DIM", "128")
    for args in (["store", "second note"], ["search", "note"]):
        result = cli(*args)
        assert result.code == 1
        assert "all-MiniLM-L6-v2@128" in result.err
        assert "magray optimize --reembed" in result.err
    assert cli("search", "note", "--mode", "keyword").code == 0  # no vectors needed
