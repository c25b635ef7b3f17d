"""Library messages name parameters; the CLI shows its flags in their place (cli/flags.py)."""

from __future__ import annotations

import pytest

from magray import Memory
from magray.backup import Retention
from magray.cli import flags
from magray.errors import InputError


@pytest.mark.parametrize("call, param", [
    (lambda m: m.search("x", top_k=0), "top_k"),
    (lambda m: m.search("x", min_score=-2), "min_score"),
    (lambda m: m.list_records(limit=0), "limit"),
    (lambda m: m.list_records(layers=["attic"]), "layers"),
    (lambda m: m.promote(layers=["assets"]), "layers"),
    (lambda m: m.merge_duplicates([1]), "ids"),
    (lambda m: Retention(daily=-1), "daily"),
])
def test_library_messages_name_parameters(fake_memory, call, param):
    with pytest.raises(InputError) as caught:
        call(fake_memory)
    assert caught.value.param == param and param in str(caught.value)
    assert "--" not in str(caught.value), caught.value


@pytest.mark.parametrize("args, shown", [
    (("search", "x", "--top-k", "0"), "error: --top-k must be from 1 to 100, got 0"),
    (("search", "x", "--min-score", "-2"), "error: --min-score must be at least -1"),
    (("list", "--layer", "attic"), "error: --layer: unknown layer 'attic'"),
    (("promote", "--from", "assets"), "error: --from: nothing is above assets"),
    (("duplicates", "--merge", "1"), "error: --merge: give at least two record ids"),
])
def test_the_cli_names_its_flags(cli, args, shown):
    result = cli(*args)
    assert result.code == 2 and result.err.startswith(shown), result


def test_backup_and_restore_name_parameters_and_flags(fake_memory, home, cli):
    fake_memory.store_texts(["a note to replace"])
    archive = fake_memory.backup().archive.path
    with pytest.raises(InputError, match=r"pass replace=True to confirm"):
        fake_memory.restore(archive)
    fake_memory.close()
    mismatch = cli("restore", str(archive))  # the CLI's config names the real model
    assert mismatch.code == 1 and "restore with --config to take" in mismatch.err, mismatch
    with Memory.open(home) as again, pytest.raises(InputError, match=r"^output .* exists"):
        again.backup(archive)
    result = cli("backup", "--output", str(archive))
    assert result.code == 2 and result.err.startswith("error: --output ") and \
        "already exists" in result.err, result


def test_flags_default_to_the_parameter_with_dashes():
    assert flags.flag("top_k") == "--top-k"
    assert flags.flag("layers") == "--layer" and flags.flag("layers", "promote") == "--from"
    assert flags.flag("daily") == "--keep-daily" and flags.flag("replace=True") == "--yes"
    assert flags.message(InputError("ok as it is")) == "ok as it is"
