"""``magray config``: show with sources, get, set keeping comments, unset, path."""

from __future__ import annotations

import json
import os

import pytest

from magray import config

SHOW_KEYS = ["name", "value", "source", "default", "doc"]


def test_show_every_setting_with_its_source(cli, home, monkeypatch):
    home.mkdir()
    (home / "config.toml").write_text("top_k = 7\n")
    monkeypatch.setenv("MAGRAY_DEVICE", "cpu")
    rows = json.loads(cli("config", "--json").out)
    assert [r["name"] for r in rows] == list(config.SPEC)
    assert all(list(r) == SHOW_KEYS for r in rows)
    by_name = {r["name"]: r for r in rows}
    assert by_name["top_k"]["value"] == 7 and by_name["top_k"]["default"] == 10
    assert by_name["top_k"]["source"] == str(home / "config.toml")
    assert by_name["device"]["source"] == "environment MAGRAY_DEVICE"
    assert by_name["batch_size"]["source"] == "default"
    plain = cli("config").out.splitlines()
    assert f"top_k\t7\t{home / 'config.toml'}" in plain
    assert 'device\t"cpu"\tenvironment MAGRAY_DEVICE' in plain
    assert len(cli("config", "--jsonl").out.splitlines()) == len(config.SPEC)


def test_get_and_path(cli, home):
    assert cli("config", "get", "model").out == "all-MiniLM-L6-v2\n"
    assert cli("config", "get", "busy_timeout").out == "60.0\n"
    assert cli("config", "get", "allow_download", "--json").out == "false\n"
    assert cli("config", "get", "model_roots").out == "[]\n"
    assert cli("config", "path").out == f"{home / 'config.toml'}\n"
    wrong = cli("config", "get", "topk")
    assert wrong.code == 2 and "did you mean 'top_k'" in wrong.err


def test_set_keeps_comments_and_layout(cli, home):
    home.mkdir()
    original = ("# my magray settings\n\n"
                "# fewer results, I read them all\n"
                "top_k = 5  # was 10\n"
                "\n"
                "# on the laptop\n"
                "device = \"cpu\"\n")
    (home / "config.toml").write_text(original)
    assert cli("config", "set", "top_k", "20").code == 0
    assert cli("config", "set", "model_roots", "/models,/srv/models").code == 0
    text = (home / "config.toml").read_text()
    assert text == original.replace("top_k = 5", "top_k = 20") + \
        'model_roots = ["/models", "/srv/models"]\n'
    assert config.load(home / "config.toml").top_k == 20
    assert cli("config", "unset", "device").code == 0
    assert "device" not in (home / "config.toml").read_text()
    assert "# fewer results, I read them all" in (home / "config.toml").read_text()


@pytest.mark.parametrize("name, value, message", [
    ("top_k", "500", "must be at most 100"),
    ("top_k", "ten", "must be an integer"),
    ("device", "tpu", "must be one of auto, cpu, cuda"),
    ("allow_download", "perhaps", "must be true or false"),
    ("colour", "blue", "unknown setting 'colour'"),
    ("model_roots", "[1, 2]", "must be a list of strings"),
])
def test_set_validates_and_changes_nothing(cli, home, name, value, message):
    home.mkdir()
    (home / "config.toml").write_text("# mine\ntop_k = 5\n")
    result = cli("config", "set", name, value)
    assert result.code == 2 and message in result.err and result.err.startswith("error: ")
    assert (home / "config.toml").read_text() == "# mine\ntop_k = 5\n"


def test_set_creates_the_file_and_follows_a_symlink(cli, home, tmp_path):
    assert cli("config", "set", "search_mode", "vector").code == 0
    assert (home / "config.toml").read_text() == 'search_mode = "vector"\n'
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "magray.toml").write_text("# managed in git\n")
    (home / "config.toml").unlink()
    (home / "config.toml").symlink_to(dotfiles / "magray.toml")
    assert cli("config", "set", "top_k", "3").code == 0
    assert os.path.islink(home / "config.toml")
    assert (dotfiles / "magray.toml").read_text() == "# managed in git\ntop_k = 3\n"


def test_set_warns_when_the_environment_overrides(cli, monkeypatch):
    monkeypatch.setenv("MAGRAY_TOP_K", "4")
    result = cli("config", "set", "top_k", "9")
    assert result.code == 0
    assert result.err == ("warning: MAGRAY_TOP_K is set in the environment and overrides "
                          "the config file\n")


def test_broken_toml_is_refused_not_rewritten(cli, home):
    home.mkdir()
    (home / "config.toml").write_text("top_k = \n")
    result = cli("config", "set", "top_k", "3")
    assert result.code == 2 and "invalid TOML" in result.err
    assert (home / "config.toml").read_text() == "top_k = \n"


def test_config_never_opens_the_database(cli, home):
    cli("config")
    cli("config", "set", "top_k", "3")
    assert not (home / "data").exists()
