from pathlib import Path

import pytest
import tomlkit

from magray import config, paths
from magray.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_home_puts_everything_under_one_directory(home):
    where = paths.resolve()
    assert where.data == home / "data"
    assert where.config_file == home / "config.toml"
    assert where.backups == home / "backups"
    assert paths.resolve(home / "other").database == home / "other" / "data" / "magray.db"


def test_platformdirs_used_without_home(monkeypatch, tmp_path):
    monkeypatch.delenv("MAGRAY_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    where = paths.resolve()
    assert where.data == tmp_path / "xdg-data" / "magray"
    assert where.config_file == tmp_path / "xdg-config" / "magray" / "config.toml"


def test_precedence_defaults_file_env_flags(home, monkeypatch):
    home.mkdir()
    (home / "config.toml").write_text("# mine\ntop_k = 7\nhnsw_ef_search = 80\n")
    monkeypatch.setenv("MAGRAY_HNSW_EF_SEARCH", "90")
    settings = config.load(home / "config.toml")
    assert settings.top_k == 7 and settings.sources["top_k"].endswith("config.toml")
    assert settings.hnsw_ef_search == 90
    assert settings.sources["hnsw_ef_search"] == "environment MAGRAY_HNSW_EF_SEARCH"
    assert settings.batch_size == 64 and settings.sources["batch_size"] == "default"
    flagged = settings.replace(top_k=3, device=None)
    assert flagged.top_k == 3 and flagged.sources["top_k"] == "flag"
    assert flagged.device == "auto"


@pytest.mark.parametrize("text, message", [
    ("colour = 'blue'\n", "unknown setting 'colour'"),
    ("top_k = 'ten'\n", "setting 'top_k' must be an integer"),
    ("top_k = 500\n", "setting 'top_k' must be at most 100"),
    ("device = 'tpu'\n", "setting 'device' must be one of auto, cpu, cuda"),
    ("allow_download = 1\n", "setting 'allow_download' must be true or false"),
    ("model_roots = 'x'\n", "setting 'model_roots' must be a list of strings"),
    ("top_k = \n", "invalid TOML"),
])
def test_bad_config_file_names_the_key(home, text, message):
    home.mkdir()
    (home / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        config.load(home / "config.toml")


def test_oversized_config_refused(home):
    home.mkdir()
    (home / "config.toml").write_text("# " + "x" * config.MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError, match="too large"):
        config.load(home / "config.toml")


def test_bad_environment_value(monkeypatch):
    monkeypatch.setenv("MAGRAY_BATCH_SIZE", "lots")
    with pytest.raises(ConfigError, match="MAGRAY_BATCH_SIZE.*must be an integer"):
        config.load(None)


def test_shipped_config_documents_every_setting_with_its_default():
    document = tomlkit.parse((REPO / "config" / "magray.toml").read_text()).unwrap()
    assert set(document) == set(config.SPEC)
    for name, setting in config.SPEC.items():
        assert document[name] == setting.default, name
    text = (REPO / "config" / "magray.toml").read_text()
    for name in config.SPEC:  # a comment line precedes each setting
        before = text.split(f"\n{name} =")[0].rstrip().splitlines()[-1]
        assert before.startswith("#"), name
