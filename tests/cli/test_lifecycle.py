"""promote, clean and optimize from the command line: output, exit codes, cron safety."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from magray.locks import locked

REPO = Path(__file__).resolve().parents[2]
NOW = "2030-06-01T12:00:00+00:00"


@pytest.fixture(autouse=True)
def cpu(monkeypatch):
    monkeypatch.setenv("MAGRAY_DEVICE", "cpu")  # the configuration the session already loaded


def jsonl(*rows: dict) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


def store(cli, *rows: dict) -> list[int]:
    result = cli("store", "--jsonl", "--json", "-", stdin=jsonl(*rows))
    assert result.code == 0, result
    return [r["id"] for r in json.loads(result.out)]


def test_ttl_expiry_with_injected_timestamps(cli, monkeypatch):
    rows = [
        {"text": "scratch: the printer on floor 3 is jammed", "created_at": "2030-05-30T12:00:00Z"},
        {"text": "scratch: the guest wifi password changed", "created_at": "2030-06-01T08:00:00Z"},
        {"text": "pattern: flaky tests share a tmp dir", "layer": "insights",
         "created_at": "2030-01-01T00:00:00Z"},
        {"text": "pattern: friday deploys fail more often", "layer": "insights",
         "created_at": "2030-05-01T00:00:00Z"},
        {"text": "runbook: restore the billing database", "layer": "assets",
         "created_at": "2001-01-01T00:00:00Z"},
    ]
    monkeypatch.setenv("MAGRAY_NOW", NOW)
    ids = store(cli, *rows)

    plan = cli("clean", "--dry-run")
    assert plan.code == 0, plan
    *listed, summary = plan.out.splitlines()
    assert listed == [f"expire\t{ids[0]}\tinteract\t{rows[0]['text']}",
                      f"expire\t{ids[2]}\tinsights\t{rows[2]['text']}"]
    assert summary.startswith("clean --dry-run: would promote 0, expire 2, evict 0, prune ")

    done = cli("clean")
    assert done.code == 0 and done.err == "", done
    assert len(done.out.splitlines()) == 1  # one line for cron's mail
    assert done.out.startswith("clean: promoted 0, expired 2, evicted 0, pruned ")
    left = json.loads(cli("search", "pattern scratch runbook", "--mode", "keyword", "--top-k",
                          "10", "--no-track", "--json").out)
    assert sorted(h["id"] for h in left) == [ids[1], ids[3], ids[4]]
    assert json.loads(cli("clean", "--json").out)["expired"] == 0


def test_promote_dry_run_explain_json_and_bad_usage(cli):
    important = store(cli, {"text": "security: rotate the deploy keys", "importance": 1})[0]
    plain = store(cli, {"text": "bought oat milk"})[0]

    dry = cli("promote", "--dry-run")
    assert dry.code == 0
    record, move, score, outcome, text = dry.out.rstrip("\n").split("\t")
    assert (int(record), move, outcome) == (important, "interact -> insights", "would promote")
    assert text == "security: rotate the deploy keys"
    assert float(score) >= 0.45

    explained = cli("promote", "--dry-run", "--explain").out
    assert f"#{important} interact -> insights: score" in explained
    assert "  importance  1.000 x 0.20 = 0.200   set to 1" in explained
    assert "  words       0.900 x 0.20 = 0.180   security 0.9" in explained
    assert f"#{plain} interact -> insights: score 0.150 < 0.45, kept" in explained

    everything = cli("promote", "--from", "interact", "--threshold", "0", "--dry-run").out
    assert len(everything.splitlines()) == 2

    report = json.loads(cli("promote", "--json").out)
    assert (report["dry_run"], report["scored"], report["promoted"]) == (False, 2, 1)
    decision, other = report["decisions"]
    assert (decision["id"], decision["outcome"], decision["target"]) == (
        important, "promoted", "insights")
    assert (other["id"], other["outcome"], other["promote"]) == (plain, "kept", False)
    assert {c["feature"] for c in decision["contributions"]} == {
        "access", "recency", "age", "words", "importance", "neighbours"}

    bad = cli("promote", "--from", "assets")
    assert bad.code == 2 and bad.err.startswith("error: --from: nothing is above assets")
    assert cli("promote", "--id", "999").code == 1


def test_clean_exits_1_and_spares_a_layer_whose_index_is_locked(cli, monkeypatch, home):
    monkeypatch.setenv("MAGRAY_NOW", NOW)
    store(cli, {"text": "scratch: the printer on floor 3 is jammed",
                "created_at": "2030-05-30T12:00:00Z"},
          {"text": "pattern: flaky tests share a tmp dir", "layer": "insights",
           "created_at": "2030-01-01T00:00:00Z"})
    monkeypatch.setenv("MAGRAY_BUSY_TIMEOUT", "0.1")
    with locked(home / "data" / "indexes" / "interact.lock", timeout=1):
        result = cli("clean")
    assert result.code == 1
    assert "error: the interact index could not be brought in step" in result.err
    assert result.out.startswith("clean: promoted 0, expired 1, evicted 0")  # insights only
    monkeypatch.delenv("MAGRAY_BUSY_TIMEOUT")
    assert json.loads(cli("clean", "--json").out)["expired"] == 1  # interact, now


def test_clean_under_cron_never_loads_the_model(cli, home):
    store(cli, {"text": "scratch: the printer on floor 3 is jammed"})
    script = ("import sys\nfrom magray.cli import main\ntry:\n    main(['clean'])\n"
              "except SystemExit as exc:\n"
              "    print('exit', exc.code, 'torch' in sys.modules, file=sys.stderr)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MAGRAY_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", script], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "exit 0 False", done.stderr
    assert done.stdout.startswith("clean: promoted 0, expired 0, evicted 0, pruned ")


def test_optimize_then_reembed_from_the_command_line(cli, monkeypatch):
    store(cli, {"text": "use rg -uu to search files that .gitignore hides"},
          {"text": "kubectl rollout restart deployment/api restarts every pod of the api"})
    result = cli("optimize")
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert lines[0].startswith("interact          2 records  index ")
    assert lines[0].endswith("(was in step)") and lines[-1].startswith("database  ")

    monkeypatch.setenv("MAGRAY_TRUNCATE_DIM", "128")
    refused = cli("search", "grep through ignored files")
    assert refused.code == 1 and "magray optimize --reembed" in refused.err
    report = json.loads(cli("optimize", "--reembed", "--json").out)
    assert report["reembed"]["model_key"] == "all-MiniLM-L6-v2@128"
    assert (report["reembed"]["dim"], report["reembed"]["embedded"]) == (128, 2)
    assert [c["records"] for c in report["indexes"]] == [2, 0, 0]
    hits = json.loads(cli("search", "grep through ignored files", "--json").out)
    assert hits[0]["text"] == "use rg -uu to search files that .gitignore hides"
    assert "nothing to re-embed" in cli("optimize", "--reembed").out


def test_lifecycle_commands_are_in_the_help(cli):
    listing = cli("--help").out
    for command in ("promote", "clean", "optimize"):
        assert command in listing
        assert cli(command, "--help").code == 0
