"""`magray ingest`: files and folders as records, kept in step cheaply on re-runs."""

from __future__ import annotations

import json

import pytest

RUNBOOK = """# Runbook

How we keep the services up.

## Database

### Failover

When the primary is down, promote the replica with `pg_ctl promote` and point the
application's DATABASE_URL at it.

### Backups

Nightly dumps go to the backup bucket; keep thirty days.

## Cache

Flush the cache with `redis-cli FLUSHALL` only after warning the team.
"""

COOKING = """# Cooking

## Bread

Rye bread needs a long proof: twelve hours in the fridge.

## Soup

Lentil soup: cumin, carrots, lemon at the end.
"""


@pytest.fixture
def vault(tmp_path):
    root = tmp_path / "vault"
    (root / "notes").mkdir(parents=True)
    (root / "runbook.md").write_text(RUNBOOK)
    (root / "notes" / "cooking.md").write_text(COOKING)
    (root / "notes" / "todo.txt").write_text("Buy light bulbs.\n\nCall the plumber.\n")
    (root / ".obsidian").mkdir()
    (root / ".obsidian" / "workspace.md").write_text("# hidden settings\n")
    (root / "drafts").mkdir()
    (root / "drafts" / "secret.md").write_text("# Draft\n\nnot ready\n")
    (root / ".gitignore").write_text("drafts/\n")
    (root / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    return root


def count_embedded(memory, monkeypatch) -> list[int]:
    """Texts the encoder is given, per call."""
    calls: list[int] = []
    real = memory.embedder.embed_documents

    def counting(texts):
        calls.append(len(texts))
        return real(texts)

    monkeypatch.setattr(memory.embedder, "embed_documents", counting)
    return calls


def test_a_markdown_folder_is_ingested_at_its_structure(memory, vault):
    report = memory.ingest([vault])
    assert (report.files_added, report.sections_added) == (3, 7)
    assert [s.reason for s in report.skipped] == ["binary"]
    hits = memory.search("how do I promote the standby database", top_k=1, mode="vector",
                         track=False)
    hit = hits[0]
    assert hit.record.text.startswith("Runbook > Database > Failover\n\nWhen the primary")
    assert hit.source.path == str(vault / "runbook.md")
    assert (hit.source.line_start, hit.source.line_end) == (9, 10)
    assert hit.location == f"{vault / 'runbook.md'}:9"
    assert hit.to_dict()["source"]["line"] == 9
    texts = [r.text for r in memory.list_records(limit=None)]
    assert not any("hidden settings" in t or "not ready" in t for t in texts)
    assert {r.layer for r in memory.list_records(limit=None)} == {"assets"}


def test_reingest_embeds_only_what_changed(fake_memory, vault, monkeypatch):
    memory = fake_memory
    memory.ingest([vault])
    calls = count_embedded(memory, monkeypatch)
    again = memory.ingest([vault])
    assert calls == [] and again.files_unchanged == 3 and again.sections_added == 0

    runbook = vault / "runbook.md"
    runbook.write_text(RUNBOOK.replace("thirty days", "ninety days"))
    ids_before = {r.id for r in memory.list_records(limit=None)}
    changed = memory.ingest([vault])
    assert sum(calls) == 1  # the edited section, and nothing else
    assert (changed.files_changed, changed.sections_added, changed.sections_removed,
            changed.sections_unchanged) == (1, 1, 1, 3)
    texts = [r.text for r in memory.list_records(limit=None)]
    assert any("ninety days" in t for t in texts) and not any("thirty days" in t for t in texts)
    assert len(ids_before - {r.id for r in memory.list_records(limit=None)}) == 1


def test_a_deleted_file_is_removed_only_with_prune(fake_memory, vault):
    memory = fake_memory
    memory.ingest([vault])
    (vault / "notes" / "cooking.md").unlink()
    kept = memory.ingest([vault])
    assert kept.files_removed == 0
    assert any("Rye bread" in r.text for r in memory.list_records(limit=None))
    dry = memory.ingest([vault], prune=True, dry_run=True)
    assert (dry.files_removed, dry.sections_removed) == (1, 2)
    assert any("Rye bread" in r.text for r in memory.list_records(limit=None))
    pruned = memory.ingest([vault], prune=True)
    assert (pruned.files_removed, pruned.sections_removed) == (1, 2)
    assert not any("Rye bread" in r.text for r in memory.list_records(limit=None))
    assert memory.ingest([vault], prune=True).files_removed == 0


def test_forget_of_an_ingested_record(fake_memory, vault):
    memory = fake_memory
    memory.ingest([vault])
    record = next(r for r in memory.list_records(limit=None) if "Rye bread" in r.text)
    memory.forget([record.id])
    assert memory.get(record.id) is None
    # The file did not change: a re-run leaves the person's forget alone.
    assert memory.ingest([vault]).files_unchanged == 3
    assert memory.get(record.id) is None
    # The trash kept its file link: restored, it says where it came from again.
    memory.restore_from_trash([record.id])
    hits = memory.search("Rye bread", mode="keyword", top_k=10, track=False)
    restored = next(h for h in hits if h.record.id == record.id)
    assert restored.source is not None and restored.source.path.endswith(".md")


def test_search_by_document_and_by_source(fake_memory, vault, tmp_path):
    from magray.records import Filters

    memory = fake_memory
    memory.ingest([vault])
    memory.store_texts(["the database replica runbook lives in the wiki"])
    hits = memory.search("database", mode="keyword", top_k=10, track=False)
    docs = memory.search("database", mode="keyword", top_k=10, by_doc=True, track=False)
    paths = [h.source.path if h.source else None for h in docs]
    assert len(paths) == len(set(paths)) < len(hits)
    only = memory.search("bread soup", mode="vector", top_k=10, track=False,
                         filters=Filters(source=str(vault / "notes")))
    assert only and all(h.source.path.startswith(str(vault / "notes") + "/") for h in only)


def test_dry_run_stores_nothing(fake_memory, vault):
    report = fake_memory.ingest([vault], dry_run=True)
    assert (report.files_added, report.sections_added) == (3, 7)
    assert fake_memory.list_records(limit=None) == []


def test_cli_ingest_summary_and_search_location(cli, vault):
    result = cli("ingest", str(vault))
    assert result.code == 0, result
    assert result.out.strip() == ("ingested: files 3 added, 0 changed, 0 unchanged, 0 removed; "
                                  "sections 7 added, 0 unchanged, 0 removed; 1 skipped")
    assert "skipped" in result.err and "blob.txt: binary" in result.err
    again = cli("ingest", str(vault), "--json")
    assert json.loads(again.out)["files_unchanged"] == 3
    found = cli("search", "promote the replica", "--mode", "vector", "-k", "1")
    assert f"{vault / 'runbook.md'}:9 Runbook > Database > Failover" in found.out
    as_json = json.loads(cli("search", "promote the replica", "-k", "1", "--json").out)
    assert as_json[0]["source"]["path"] == str(vault / "runbook.md")
    missing = cli("ingest", "--layer", "nope", str(vault))
    assert missing.code == 2 and missing.err.startswith("error:")
