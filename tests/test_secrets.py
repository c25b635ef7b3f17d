"""Credentials never enter memory: detection (magray/secrets.py), the write-path guard,
`magray scan`, and the bytes left in the home directory."""

import json
import sqlite3
from pathlib import Path

import pytest

from magray import paths, secrets
from tests.secrets_corpus import LOOKALIKES, SECRETS

# One or two of every kind: the pinned subset of the labelled set.
PINNED = [entry for n, entry in enumerate(SECRETS)
          if entry[0] != SECRETS[n - 1][0] or n % 3 == 0]


@pytest.mark.parametrize("kind,text,secret", PINNED, ids=lambda v: str(v)[:20])
def test_credentials_are_found_and_redacted_by_kind(kind, text, secret):
    findings = secrets.find(text)
    redacted = secrets.redact(text, findings)
    assert secret not in redacted
    assert f"[redacted: {kind}]" in redacted


def test_no_lookalike_is_redacted():
    flagged = [text for text in LOOKALIKES if secrets.find(text)]
    assert flagged == []


def test_the_rest_of_the_text_is_kept():
    text = "deploy with GITHUB_TOKEN=ghp_" + "a1B2" * 9 + " then restart nginx"
    assert secrets.redact(text, secrets.find(text)) == \
        "deploy with GITHUB_TOKEN=[redacted: github-token] then restart nginx"


def _files_hold(home: Path, needle: str) -> list[str]:
    return [str(p) for p in home.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


SECRET = "ghp_" + "Zx9Q" * 9
PASSWORD = "Hunter22xyz"


def test_store_redacts_warns_and_reports_without_the_value(cli, home):
    result = cli("store", "-", "--json", "--tag", "ops",
                 stdin=f"ci token {SECRET} for releases\nnothing here\n".encode())
    assert result.code == 0, result
    stored = json.loads(result.out)
    assert [s["redacted"] for s in stored] == [["github-token"], []]
    assert result.err.count("warning: line 1: redacted github-token") == 1
    assert SECRET not in result.err + result.out
    shown = cli("search", "ci token releases", "--json").out
    assert "[redacted: github-token]" in shown and SECRET not in shown
    assert cli("backup").code == 0
    assert _files_hold(home, SECRET) == []


def test_metadata_is_screened_too(cli, home):
    result = cli("store", "a note", "--project", f"proj {SECRET}", "--tag", SECRET, "--json")
    assert json.loads(result.out)[0]["redacted"] == ["github-token"]
    record = json.loads(cli("list", "--json").out)[0]
    assert record["project"] == "proj [redacted: github-token]"
    assert record["tags"] == ["[redacted: github-token]"]
    assert _files_hold(home, SECRET) == []


def test_refuse_writes_nothing_and_names_the_line(cli, home, monkeypatch):
    stdin = f"first fine line\n\npsql postgres://admin:{PASSWORD}@db/prod\n".encode()
    monkeypatch.setenv("MAGRAY_SECRETS", "refuse")
    result = cli("store", "-", stdin=stdin)
    assert result.code == 2
    assert result.err.startswith("error: line 3: holds a credential (url-password")
    assert PASSWORD not in result.err
    db = paths.resolve(home).database
    assert not db.exists() or sqlite3.connect(db).execute(
        "SELECT count(*) FROM records").fetchone()[0] == 0


def test_import_redacts_and_reembeds(cli, home, tmp_path):
    line = {"text": f"export STRIPE_SECRET_KEY=sk_live_{'q1W2e3R4' * 3}", "layer": "assets"}
    result = cli("import", "-", "--json", stdin=json.dumps(line).encode())
    assert result.code == 0, result
    assert json.loads(result.out)["redacted"] == 1
    exported = cli("export").out
    assert "[redacted: stripe-key]" in exported and "sk_live_" not in exported
    assert _files_hold(home, "q1W2e3R4") == []


def test_jsonl_metadata_is_redacted_and_import_refuses_whole(cli, home, monkeypatch):
    line = {"text": "rotate keys monthly", "tags": [f"Password={PASSWORD};"], "kind": "note"}
    result = cli("store", "--jsonl", "-", "--json", stdin=json.dumps(line).encode())
    assert json.loads(result.out)[0]["redacted"] == ["connection-string-password"]
    assert _files_hold(home, PASSWORD) == []
    monkeypatch.setenv("MAGRAY_SECRETS", "refuse")
    lines = [json.dumps({"text": "fine"}), json.dumps({"text": f"token {SECRET}"})]
    result = cli("import", "-", stdin="\n".join(lines).encode())
    assert result.code == 2 and result.err.startswith("error: line 2: holds a credential")
    assert json.loads(cli("list", "--json").out)[0]["text"] == "rotate keys monthly"


def test_scan_apply_removes_every_copy(cli, home, monkeypatch):
    monkeypatch.setenv("MAGRAY_SECRETS", "allow")
    texts = [f"psql postgres://admin:{PASSWORD}@db/prod", f"release with {SECRET} tonight",
             "an ordinary note about nginx", f"the staging deploy used {SECRET} until May"]
    assert cli("store", *texts).code == 0
    assert cli("forget", "4").code == 0  # in the trash, restorable: a copy all the same
    monkeypatch.delenv("MAGRAY_SECRETS")
    assert "secrets_stored" in {a["code"] for a in json.loads(cli("status", "--json").out)["alerts"]}
    db = paths.resolve(home).database
    digests = [r[0] for r in sqlite3.connect(db).execute(
        "SELECT content_hash FROM records ORDER BY id")]
    found = cli("scan", "--json")
    assert [(f["source"], f["kinds"]) for f in json.loads(found.out)["found"]] == [
        ("records", ["url-password"]), ("records", ["github-token"]),
        ("trash", ["github-token"])]
    assert PASSWORD not in found.out + found.err and SECRET not in found.out + found.err
    applied = json.loads(cli("scan", "--apply", "--json").out)
    assert applied["applied"] and applied["cache_removed"] == 3
    assert _files_hold(home, PASSWORD) == [] and _files_hold(home, SECRET) == []
    assert cli("search", PASSWORD, "--mode", "keyword", "--json").out.strip() == "[]"
    assert cli("search", "Zx9QZx9Q", "--mode", "keyword", "--json").out.strip() == "[]"
    cached = {r[0] for r in sqlite3.connect(db).execute("SELECT text_hash FROM embed_cache")}
    assert cached.isdisjoint(digests[:2])
    hits = json.loads(cli("search", "release tonight", "--json", "-k", "1").out)
    assert hits[0]["text"] == "release with [redacted: github-token] tonight"
    trashed = json.loads(cli("trash", "list", "--json").out)
    assert trashed[0]["text"] == "the staging deploy used [redacted: github-token] until May"
    assert all(a["code"] != "secrets_stored"
               for a in json.loads(cli("status", "--json").out)["alerts"])
    assert json.loads(cli("scan", "--json").out)["found"] == []


def test_library_store_is_guarded(fake_memory):
    stored = fake_memory.store_texts([f"token {SECRET}"])
    assert stored[0].redacted == ("github-token",)
    assert SECRET not in fake_memory.get(stored[0].id).text


def test_scan_apply_of_a_long_trashed_text_leaves_no_passage_of_the_old_text(cli, home,
                                                                            monkeypatch):
    from long_notes import notes

    note, query = notes()[0]
    monkeypatch.setenv("MAGRAY_SECRETS", "allow")
    assert cli("store", f"deploy with {SECRET}. {note}").code == 0
    monkeypatch.delenv("MAGRAY_SECRETS")
    db = paths.resolve(home).database

    def passages() -> int:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM passages WHERE record_id = 1").fetchone()[0]

    assert passages() > 1
    assert cli("forget", "1").code == 0  # the trash keeps a record's passages
    assert passages() > 1
    assert cli("scan", "--apply").code == 0
    assert passages() == 0  # their vectors were made from the text holding the credential
    assert cli("trash", "restore", "1").code == 0
    assert cli("optimize").code == 0  # splits the redacted text again
    assert passages() > 1
    hits = json.loads(cli("search", query, "--json", "-k", "3", "--mode", "vector").out)
    assert 1 in [h["id"] for h in hits]
