"""Rough edges found by using magray as a new user would (issue 13): each with its test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer.main

from fakes import FakeEmbedder
from magray import Memory, NewRecord
from magray.cli import app
from magray.records import model_key
from shell_helpers import env, fake_model  # noqa: F401  (fixture)
from shell_helpers import on_a_terminal


def test_status_exits_0_when_its_reader_goes_away(home):
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        memory.store_texts(["a note"])
    process = subprocess.Popen([sys.executable, "-m", "magray", "status"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(home))
    process.stdout.close()  # like `| head -1` once it has its line: every write fails
    error = process.stderr.read()
    assert process.wait(timeout=60) == 0 and error == b""


def test_bare_magray_prints_the_help(cli):
    result = cli()
    assert result.code == 0 and result.err == ""
    assert result.out.startswith("Usage: magray") and "Commands:" in result.out


def _all_commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _all_commands(command, (*prefix, name))


def test_help_names_values_not_python_types(cli):
    for words in _all_commands(typer.main.get_command(app)):
        shown = cli(*words, "--help").out
        assert not re.search(r"<(list\[|int|str|float|path|bool)", shown, re.I), (words, shown)
    shown = cli("list", "--help").out
    assert "--tag TEXT" in shown and "--limit INTEGER" in shown
    assert "ID  Ids of the records" in cli("forget", "--help").out


def test_store_dash_on_a_terminal_says_what_it_waits_for(cli):
    typed = cli("store", "-", tty=True)
    assert typed.err.splitlines()[0].startswith("reading texts from the terminal")
    piped = cli("store", "-", stdin=b"")  # a pipe: nothing to say, just the error
    assert piped.err == "error: no text to store: the input is empty\n"


def test_config_set_errors_say_error_once(cli):
    result = cli("config", "set", "top_k", "0")
    assert result.code == 2
    assert result.err == "error: setting 'top_k' must be at least 1; got 0\n"


@pytest.mark.parametrize("shared", ["home", "config"])
def test_a_home_or_config_file_others_can_write_is_refused(cli, home, shared):
    home.mkdir()
    config = home / "config.toml"
    config.write_text("top_k = 3\n")
    os.chmod(config, 0o600)
    target = home if shared == "home" else config
    os.chmod(target, 0o777 if shared == "home" else 0o666)
    for args in (["list"], ["config"], ["status"]):
        result = cli(*args)
        assert result.code == 1, (args, result)
        assert result.err == (f"error: {target} is writable by other users; refusing to use "
                              f"it (chmod go-w {target})\n")


def test_group_writable_is_refused_only_for_a_group_others_may_be_in(cli, home):
    """umask 002 with a user private group (Debian, Ubuntu) makes a hand-written config.toml
    0664: the group is the user alone, so it is accepted; a shared group's is refused."""
    import grp
    import pwd

    user = pwd.getpwuid(os.getuid())
    own = grp.getgrgid(user.pw_gid)
    if own.gr_name != user.pw_name or set(own.gr_mem) - {user.pw_name}:
        pytest.skip("this user has no private group")
    home.mkdir()
    config = home / "config.toml"
    config.write_text("top_k = 3\n")
    os.chmod(config, 0o664)
    assert cli("config").code == 0
    shared = next((g for g in grp.getgrall() if g.gr_gid != user.pw_gid), None)
    if os.getuid() != 0 or shared is None:
        return  # only root can give the file to another group
    os.chown(config, -1, shared.gr_gid)
    result = cli("config")
    assert result.code == 1 and "is writable by other users" in result.err, result


# -- sizes and times ----------------------------------------------------------------------

def test_one_size_convention_in_every_command(cli, home):
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        memory.store_texts([f"note {n} about sizes" for n in range(50)])
        archive = memory.backup().archive.path
    shown = cli("status").out + cli("optimize").out + cli("backup", "verify", str(archive)).out
    units = set(re.findall(r"\d (\w*B)\b", shown))
    assert units and units <= {"B", "KiB", "MiB", "GiB"}, shown


@pytest.fixture
def india(monkeypatch):
    """Local time is UTC+05:30 (no daylight saving time): local and UTC never agree."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield "IST"
    monkeypatch.undo()
    time.tzset()


def test_times_for_people_are_local_and_name_their_zone(cli, home, india):
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        memory.store([NewRecord("made at nine, Indian time",
                                created_at="2026-01-31T03:30:00.000000+00:00")])
        memory.backup()
    shown = on_a_terminal(home, "list", columns=200)[1].decode("utf-8", "replace")
    assert "created (IST)" in shown and "2026-01-31 09:00" in shown
    # --since reads the same local time that the table shows
    assert cli("list", "--since", "2026-01-31T09:00").out.count("\n") == 1
    assert cli("list", "--since", "2026-01-31T09:01").out == ""
    status = cli("status").out
    assert re.search(r"newest \d{4}-\d\d-\d\d \d\d:\d\d IST", status), status


def test_one_duration_convention_for_ages_and_ttls(cli, home):
    from magray import units

    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        memory.store_texts(["a note to age"])
    shown = cli("status").out
    assert re.search(r"\d (ms|s|min|h|d) ago", shown), shown
    assert units.duration(86400) == "24 h"  # as status, promote --explain and alerts say it


# -- library messages name parameters, not flags ------------------------------------------

def test_library_messages_name_no_cli_flag():
    """A Python caller never used --top-k: what the library raises names its parameters (the
    CLI shows its flags in their place, cli/flags.py). A remedy that is a whole command
    (`magray optimize --reembed`) is advice anyone can follow, so it may name one."""
    import ast

    package = Path(__file__).resolve().parents[2] / "magray"
    found = []
    for path in sorted(package.rglob("*.py")):
        if "cli" in path.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                text = "".join(c.value for c in ast.walk(node.exc)
                               if isinstance(c, ast.Constant) and isinstance(c.value, str))
                if re.search(r"(?<![\w-])--[a-z]", re.sub(r"`[^`]*`", "", text)):
                    found.append(f"{path.name}:{node.lineno}: {text}")
    assert found == []


# -- backup list --------------------------------------------------------------------------

def test_backup_list_names_each_problem_file_and_flags_a_damaged_archive(cli, home):
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        memory.store_texts(["a note to keep"])
        good = memory.backup().archive.path
    damaged = good.with_name("magray-a-copy-with-a-name-much-longer-than-the-usual.tar.zst")
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the compressed body: the manifest still reads
    damaged.write_bytes(raw)
    junk = good.with_name("junk.tar.zst")
    junk.write_bytes(b"not an archive")
    result = cli("backup", "list")
    assert result.code == 0
    assert [line.split("\t")[3:] for line in result.out.splitlines()] == [
        [str(good), "ok"], [str(damaged), "damaged"]]  # same time: by name
    warnings = result.err.splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith(f"warning: {junk}: unreadable: ")
    assert warnings[1].startswith(f"warning: {damaged}: damaged, do not rely on it: ")
    listed = cli("backup", "list", "--json").out
    assert '"intact": false' in listed and '"intact": true' in listed
    # 80 columns and more: whole names
    table = on_a_terminal(home, "backup", "list", columns=200)[1].decode("utf-8", "replace")
    assert damaged.name in table and good.name in table and "DAMAGED" in table


def test_backup_list_table_fits_the_whole_name_in_80_columns(home):
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        memory.store_texts(["a note to keep"])
        archive = memory.backup().archive.path
    table = on_a_terminal(home, "backup", "list", columns=80)[1].decode("utf-8", "replace")
    lines = [line for line in table.splitlines() if archive.name in line]
    assert len(lines) == 1 and len(lines[0].rstrip()) <= 80, table


# -- restoring an archive made with a truncated model -------------------------------------

class Keyed(FakeEmbedder):
    """A fake whose key follows its settings, as a real model's does (name@truncate_dim)."""

    def __init__(self, name: str, truncate_dim: int = 0):
        super().__init__(name=name)
        self.truncate_dim = truncate_dim

    @property
    def key(self) -> str:
        return model_key(self.name, self.truncate_dim)


def test_the_fix_a_truncate_dim_mismatch_suggests_works(cli, home, tmp_path, monkeypatch):
    import magray.encoder
    import magray.memory

    with Memory.open(tmp_path / "other", embedder=Keyed("fake-bow", 64)) as other:
        other.store_texts(["made with a truncated model"])
        archive = other.backup().archive.path
    for module in (magray.encoder, magray.memory):  # the one loading, the one restoring
        monkeypatch.setattr(module, "from_settings", lambda settings, *a, **k: Keyed(
            settings.model, settings.truncate_dim))
    cli("config", "set", "model", "fake-bow")
    refused = cli("restore", "--yes", "--no-config", str(archive))
    assert refused.code == 1 and "embedded with fake-bow@64" in refused.err
    for command in re.findall(r"`magray (config set [^`]+)`", refused.err):
        assert cli(*command.split()).code == 0, command
    restored = cli("restore", "--yes", "--no-config", str(archive))
    assert restored.code == 0, restored
    assert "made with a truncated model" in cli("list").out
