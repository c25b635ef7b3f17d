"""magray as a shell citizen: streaming stdin, plain output off a terminal, closed pipes,
completions, and the cron/systemd files. Real subprocesses where the shell is the point."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from fakes import FakeEmbedder
from magray import Memory, NewRecord
from magray.cli.completion import SHELLS, script
from shell_helpers import ROOT, env, fake_model, magray, on_a_terminal  # noqa: F401

ANSI = re.compile(rb"\x1b\[")


# -- store - streams ----------------------------------------------------------------------

def _peak_storing(cli, home: Path, lines: int) -> int:
    data = b"".join(b"line %d of a long piped input\n" % n for n in range(lines))
    tracemalloc.start()
    try:
        result = cli("--home", str(home), "store", "-", stdin=data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.code == 0 and result.out.count("\n") == lines, result
    return peak


def test_store_stdin_streams_in_bounded_memory(cli, monkeypatch, tmp_path):
    """Python-heap peak of `store -` (the model aside): far below the input's embeddings,
    and it barely grows when the input grows tenfold."""
    import magray.encoder

    dim = 1024
    monkeypatch.setattr(magray.encoder, "from_settings",
                        lambda *args, **kwargs: FakeEmbedder(dim=dim))
    monkeypatch.setenv("MAGRAY_HNSW_M", "4")  # a cheap graph: this test is about memory
    monkeypatch.setenv("MAGRAY_HNSW_EF_CONSTRUCTION", "8")
    cli("--home", str(tmp_path / "warm"), "store", "-", stdin=b"imports happen once\n")
    small = _peak_storing(cli, tmp_path / "small", 2_000)
    # 20,000 lines, not 10,000: the near-duplicate lookups add a constant of their own
    # (dedupe.REFRESH_BYTES of the call's vectors, and the index refresh that frees them).
    big = _peak_storing(cli, tmp_path / "big", 20_000)
    embeddings = 20_000 * dim * 4  # 82 MB if they were all held at once
    # What remains is a constant: one batch of 256 vectors being embedded and one chunk of
    # 1024 being added to the index (about 12 MB at 1024 dimensions), plus the printed ids.
    assert big < embeddings / 2, (small, big)
    assert big - small < (20_000 - 2_000) * dim * 4 / 8, (small, big)


def test_bad_stdin_line_stores_nothing(cli, fake_model, home):
    lines = b"".join(b"fine line %d\n" % n for n in range(600)) + b"bad \x00 line\n"
    result = cli("store", "-", stdin=lines)
    assert result.code == 2 and result.err == "error: line 601: contains a NUL byte\n"
    assert fake_model.calls == 0
    assert cli("list", "--json").out.strip() == "[]"
    leftovers = {p.name for p in (home / "data").iterdir()}  # the spool was unnamed
    assert leftovers <= {"indexes", "magray.db", "magray.db-wal", "magray.db-shm"}


# -- plain output off a terminal, no colour with NO_COLOR ---------------------------------

@pytest.fixture
def seeded(home):
    """A memory with a few hundred longish records, stored through the library (the
    subprocesses below use commands that need no model)."""
    texts = [f"record {n} " + "about the quarterly budget and its many line items " * 20
             for n in range(300)]
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        memory.store([NewRecord(t, tags=("budget",)) for t in texts])
    return home


def test_plain_output_off_a_terminal(seeded):
    for args in (["list"], ["list", "--json"], ["show", "1"], ["config"],
                 ["search", "budget", "--mode", "keyword"], ["export", "--format", "markdown"]):
        result = magray(seeded, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert not ANSI.search(result.stdout) and not ANSI.search(result.stderr), args
        assert result.stderr == b"", args  # nothing to say to a person who is not there
    listing = magray(seeded, "list", "-n", "2").stdout.decode().splitlines()
    assert [line.split("\t")[0] for line in listing] == ["300", "299"]


def test_colour_on_a_terminal_unless_no_color(seeded):
    code, coloured = on_a_terminal(seeded, "list", "-n", "3")
    assert code == 0 and ANSI.search(coloured)
    code, plain = on_a_terminal(seeded, "list", "-n", "3", NO_COLOR="1")
    assert code == 0 and not ANSI.search(plain) and b"record 299" in plain


def test_import_shows_progress_on_a_terminal_only(seeded, tmp_path):
    export = tmp_path / "all.jsonl"
    assert magray(seeded, "export", "--with-vectors", "-o", str(export)).returncode == 0
    same_model = {"MAGRAY_MODEL": "fake-bow"}  # the export's vectors are used: no model load
    code, shown = on_a_terminal(tmp_path / "a", "import", str(export), **same_model)
    assert code == 0 and b"importing" in shown and b"added 300, merged 0, unchanged 0" in shown
    quiet = magray(tmp_path / "b", "import", str(export), **same_model)
    assert quiet.returncode == 0 and quiet.stdout == b"" and quiet.stderr == b""


# -- closed pipes -------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["search", "budget", "--jsonl", "--mode", "keyword", "-k", "100"],
    ["export"],
    ["list", "--jsonl", "-n", "0"],
])
def test_reader_closing_the_pipe_is_a_quiet_exit(seeded, args):
    process = subprocess.Popen([sys.executable, "-m", "magray", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env(seeded))
    first = process.stdout.readline()  # the output is far larger than the pipe's buffer
    process.stdout.close()
    error = process.stderr.read()
    assert first.startswith(b"{")
    assert process.wait(timeout=60) == 0 and error == b""


def test_pipe_to_head_in_a_shell(seeded):
    line = (f"set -o pipefail; {sys.executable} -m magray search budget --jsonl --mode keyword "
            f"-k 100 | head -1")
    result = subprocess.run(["bash", "-c", line], capture_output=True, env=env(seeded),
                            timeout=60)
    assert result.returncode == 0 and result.stderr == b""
    assert result.stdout.count(b"\n") == 1


# -- commands that need no model never load it --------------------------------------------

def test_model_free_commands_do_not_import_torch(seeded):
    code = ("import sys\nfrom magray.cli import main\n"
            "for args in (['list'], ['show', '1'], ['export', '--with-vectors'], ['config'],\n"
            "             ['forget', '2'], ['completion', 'zsh'], ['--help']):\n"
            "    try:\n        main(args)\n    except SystemExit as exc:\n"
            "        assert not exc.code, (args, exc.code)\n"
            "heavy = {'torch', 'sentence_transformers'} & set(sys.modules)\n"
            "sys.stderr.write(repr(sorted(heavy)))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env(seeded),
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode().endswith("[]")


# -- completions --------------------------------------------------------------------------

@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_completion_scripts_are_up_to_date(shell):
    """Run `python scripts/gen_completions.py` when this fails."""
    assert (ROOT / "completions" / SHELLS[shell]).read_text() == script(shell)


def test_completion_answers_from_the_app(cli, monkeypatch):
    monkeypatch.setenv("_MAGRAY_COMPLETE", "complete_bash")
    for words, cword, expected in (("magray ex", 1, ["export"]),
                                   ("magray list --layer in", 3, ["insights", "interact"]),
                                   ("magray config set top", 3, ["top_k"]),
                                   ("magray export --format m", 3, ["markdown"])):
        monkeypatch.setenv("COMP_WORDS", words)
        monkeypatch.setenv("COMP_CWORD", str(cword))
        assert sorted(cli().out.split()) == expected, words


def test_bash_completion_end_to_end(tmp_path):
    """Source completions/magray.bash in a real bash and press Tab after `magray fo`."""
    shim = tmp_path / "magray"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m magray "$@"\n')
    shim.chmod(0o755)
    line = (f"source {ROOT / 'completions' / 'magray.bash'}; COMP_WORDS=(magray fo); "
            "COMP_CWORD=1; _magray_completion magray; echo \"${COMPREPLY[@]}\"")
    result = subprocess.run(["bash", "-c", line], capture_output=True, timeout=60,
                            env=env(tmp_path, PATH=f"{tmp_path}:{os.environ['PATH']}"))
    assert result.stdout.decode().split() == ["forget"], result.stderr


# -- cron and systemd ---------------------------------------------------------------------

def test_crontab_line_runs_backup_then_clean():
    lines = [line for line in (ROOT / "config" / "magray.crontab").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    assert fields[:2] == ["17", "3"] and fields[2:5] == ["*", "*", "*"]
    assert re.search(r"magray\" backup .*&& .*magray\" clean$", fields[5])


def test_systemd_units():
    import configparser

    units = ROOT / "config" / "systemd"
    service = (units / "magray-maintenance.service").read_text()
    assert [line.split("=", 1)[1].split()[1] for line in service.splitlines()
            if line.startswith("ExecStart=")] == ["backup", "clean"]
    assert "Type=oneshot" in service
    timer = configparser.ConfigParser()
    timer.read(units / "magray-maintenance.timer")
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"
