"""Which model a setting names (no path outside the allowed roots), and where ONNX copies
are kept."""

from pathlib import Path

import pytest

from magray import config
from magray.embedding import from_settings, resolve_model
from magray.errors import ConfigError


def test_default_model_ships_in_the_wheel():
    path = Path(resolve_model("all-MiniLM-L6-v2", []))
    assert (path / "modules.json").exists()
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2", []) == str(path)


@pytest.mark.parametrize("spec, message", [
    ("models/../../etc", "must not contain '..'"),
    ("./x/../y", "must not contain '..'"),
    ("a\0b", "NUL byte"),
    ("/etc", "outside the allowed model roots"),
    ("not a name!", "neither a model name nor a path"),
])
def test_bad_model_specs(tmp_path, spec, message):
    with pytest.raises(ConfigError, match=message):
        resolve_model(spec, [tmp_path])


def test_symlink_escaping_its_root_is_refused(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "evil").symlink_to(outside)
    (root / "good").mkdir()
    with pytest.raises(ConfigError, match="outside the allowed model roots"):
        resolve_model(str(root / "evil"), [root])
    assert resolve_model(str(root / "good"), [root]) == str((root / "good").resolve())


def test_bad_model_path_from_config_exits_2(cli, monkeypatch):
    monkeypatch.setenv("MAGRAY_MODEL", "../../etc/passwd")
    result = cli("store", "x")
    assert result.code == 2 and "must not contain '..'" in result.err


def test_every_home_shares_one_copy_in_the_cache(tmp_path, magray_cache, monkeypatch):
    settings = config.defaults()
    first = from_settings(settings, tmp_path / "a" / "data").onnx_dir
    assert first == from_settings(settings, tmp_path / "b" / "data").onnx_dir
    assert first.parent == magray_cache / "onnx"
    (tmp_path / "a-file").write_text("")  # a cache that cannot be made: the home's own dir
    monkeypatch.setenv("MAGRAY_CACHE", str(tmp_path / "a-file" / "cache"))
    alone = from_settings(settings, tmp_path / "a" / "data").onnx_dir
    assert alone.parent == tmp_path / "a" / "data" / "models" / "onnx"
