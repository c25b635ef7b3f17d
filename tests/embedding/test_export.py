"""Making the ONNX copy: checked against torch, complete or absent, a failure remembered."""

from __future__ import annotations

import pytest

from magray.embedding import export


def test_export_is_checked_and_complete(onnx_root):
    (directory,) = [p for p in onnx_root.iterdir() if p.is_dir()]
    manifest = export.read_manifest(directory)
    assert manifest["dim"] == 384 and manifest["agreement"] >= 0.999
    assert manifest["inputs"][:2] == ["input_ids", "attention_mask"]
    assert {"model.onnx", "model.onnx.data", "tokenizer.json"} <= {p.name for p in
                                                                  directory.iterdir()}
    assert not list(onnx_root.glob(".*tmp-*"))


def test_a_model_that_cannot_be_exported_leaves_a_note(tmp_path, monkeypatch):
    def broken(model, out, name):
        raise export.ExportError("this model cannot be traced")

    monkeypatch.setattr(export, "_export", broken)
    directory = tmp_path / "m-0123"
    with pytest.raises(export.ExportError, match="cannot be traced"):
        export.ensure(directory, object(), name="m")
    assert "cannot be traced" in export.failure_note(directory).read_text()
    assert not directory.exists() and not list(tmp_path.glob(".*tmp-*"))


def test_exporter_failure_reaches_the_caller(tmp_path):
    with pytest.raises(export.ExportError, match="OSError|Error"):
        export.export(tmp_path / "x-1", source=str(tmp_path / "no-such-model"), name="x",
                      timeout=300)


def test_work_left_by_a_killed_export_is_removed_by_the_next(onnx_root):
    (directory,) = [p.parent for p in onnx_root.glob("*/manifest.json")]
    stale = [directory.with_name(f".{directory.name}.tmp-99999"),
             directory.with_name(f".{directory.name}.int8-x1y2")]
    for work in stale:
        work.mkdir()
        (work / "model.onnx.data").write_bytes(b"\0" * 1024)
    manifest = export.ensure(directory, model=None, name="all-MiniLM-L6-v2")
    assert manifest["dim"] == 384 and not any(work.exists() for work in stale)
    assert (directory / "model.onnx").exists()
