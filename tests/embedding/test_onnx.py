"""The ONNX Runtime copy of the model: agreement with torch, fallbacks, and a cold search
that never imports torch."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import magray.embedding as embedding
import magray.onnx_export as onnx_export
from corpus import FILLER, IDENTIFIED, NOTES
from magray import Memory
from magray.embedding import ConfiguredEmbedder, default_model_roots, normalise
from magray.onnx_embedder import OnnxEmbedder

REPO = Path(__file__).resolve().parents[2]
TEXTS = ([n for n, _ in NOTES] + [q for _, q in NOTES] + [n for n, _ in IDENTIFIED]
         + FILLER[:40] + ["  padded with spaces  ", "Ünïcödé 漢字 🙂", "x",
                          "a long note that runs past the model's window: " + "words " * 400])


@pytest.fixture(scope="session")
def onnx_root(magray_cache, real_embedder):
    """The export in the session's cache (tests/conftest.py), made once, int8 copy too."""
    root = magray_cache / "onnx"
    directory = onnx_export.export_dir(root, real_embedder.name, real_embedder.source)
    onnx_export.export(directory, source=real_embedder.source, name=real_embedder.name,
                       int8=True)
    return root


def configured(root: Path, backend: str = "onnx", **options) -> tuple[ConfiguredEmbedder, list]:
    warnings: list[str] = []
    embedder = ConfiguredEmbedder("all-MiniLM-L6-v2", roots=default_model_roots(root),
                                  onnx_root=root, backend=backend, device="cpu",
                                  warn=warnings.append, **options)
    return embedder, warnings


def torch_documents(real_embedder, texts: list[str]) -> np.ndarray:
    """The reference vectors; the long text alone, so short ones are not padded to it."""
    return np.vstack([real_embedder.embed_documents(texts[:-1]),
                      real_embedder.embed_documents(texts[-1:])])


def test_export_is_checked_and_complete(onnx_root):
    (directory,) = [p for p in onnx_root.iterdir() if p.is_dir()]
    manifest = onnx_export.read_manifest(directory)
    assert manifest["dim"] == 384 and manifest["agreement"] >= 0.999
    assert manifest["inputs"][:2] == ["input_ids", "attention_mask"]
    assert {"model.onnx", "model.onnx.data", "tokenizer.json"} <= {p.name for p in
                                                                  directory.iterdir()}
    assert not list(onnx_root.glob(".*tmp-*"))


def test_onnx_vectors_agree_with_torch(onnx_root, real_embedder):
    embedder, warnings = configured(onnx_root)
    documents = embedder.embed_documents(TEXTS)
    reference = torch_documents(real_embedder, TEXTS)
    assert documents.shape == reference.shape == (len(TEXTS), 384)
    assert (documents * reference).sum(axis=1).min() >= 0.999
    for text in TEXTS[:20]:
        assert float(embedder.embed_query(text) @ real_embedder.embed_query(text)) >= 0.999
    assert embedder._model is None and not warnings  # torch was never needed


def test_matryoshka_truncation_matches_torch(onnx_root, real_embedder):
    embedder, _ = configured(onnx_root, truncate_dim=128)
    assert embedder.dim == 128
    mine = embedder.embed_documents(TEXTS[:10])
    reference = normalise(real_embedder.embed_documents(TEXTS[:10])[:, :128])
    assert mine.shape == (10, 128) and (mine * reference).sum(axis=1).min() >= 0.999


def test_threads_setting_reaches_onnx_runtime(onnx_root):
    (directory,) = [p for p in onnx_root.iterdir() if p.is_dir()]
    manifest = onnx_export.read_manifest(directory)
    one = OnnxEmbedder(directory, manifest, name="m", threads=1)
    one.embed_query("warm up")
    assert one._session.get_session_options().intra_op_num_threads == 1
    assert OnnxEmbedder(directory, manifest, name="m").threads == embedding.usable_cores()


def test_int8_backend_is_close_and_queries_stay_fp32(onnx_root, real_embedder):
    embedder, warnings = configured(onnx_root, backend="onnx-int8")
    documents = embedder.embed_documents(TEXTS)
    reference = torch_documents(real_embedder, TEXTS)
    assert (documents * reference).sum(axis=1).mean() >= 0.95
    assert float(embedder.embed_query(TEXTS[0]) @ real_embedder.embed_query(TEXTS[0])) >= 0.999
    assert not warnings
    # optimised when it was made (weights in a side file), so a session starts without it
    import onnxruntime as ort

    int8, query = embedder._onnx["int8"].encoder, embedder._onnx["query"].encoder
    assert int8.model_file.with_name("model-int8.onnx.data").exists()
    level = int8._session.get_session_options().graph_optimization_level
    assert level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert int8.bulk and not query.bulk  # bulk sessions pre-pack weights; a query's does not


def test_auto_uses_onnx_for_queries_and_torch_stays_unloaded(onnx_root):
    embedder, warnings = configured(onnx_root, backend="auto")
    embedder.prepare_query()
    embedder.embed_query("where is the deploy script")
    embedder.embed_documents(["a small store"])
    assert embedder._model is None and not warnings
    assert embedder.dim == 384  # from the manifest, without loading torch


def test_without_onnxruntime_torch_answers_after_one_warning(tmp_path, monkeypatch,
                                                             real_embedder):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    embedder, warnings = configured(tmp_path / "onnx", backend="auto")
    first = embedder.embed_query("find my notes")
    embedder.embed_query("and again")
    embedder.embed_documents(["one document"])
    assert float(first @ real_embedder.embed_query("find my notes")) > 0.9999
    assert len(warnings) == 1 and "onnxruntime is not installed" in warnings[0]
    assert not (tmp_path / "onnx").exists()  # nothing was exported


def test_a_model_that_cannot_be_exported_leaves_a_note(tmp_path, monkeypatch):
    def broken(model, out, name):
        raise onnx_export.ExportError("this model cannot be traced")

    monkeypatch.setattr(onnx_export, "_export", broken)
    directory = tmp_path / "m-0123"
    with pytest.raises(onnx_export.ExportError, match="cannot be traced"):
        onnx_export.ensure(directory, object(), name="m")
    assert "cannot be traced" in onnx_export.failure_note(directory).read_text()
    assert not directory.exists() and not list(tmp_path.glob(".*tmp-*"))


def test_exporter_failure_reaches_the_caller(tmp_path):
    with pytest.raises(onnx_export.ExportError, match="OSError|Error"):
        onnx_export.export(tmp_path / "x-1", source=str(tmp_path / "no-such-model"), name="x",
                           timeout=300)


def test_failed_export_is_remembered_and_torch_answers(tmp_path, monkeypatch, real_embedder):
    embedder, _ = configured(tmp_path)
    note = onnx_export.failure_note(embedder.onnx_dir)
    note.parent.mkdir(parents=True, exist_ok=True)
    note.write_text('{"reason": "this model cannot be traced"}')
    monkeypatch.setattr(onnx_export, "export", lambda *a, **k: pytest.fail("tried again"))
    auto, warnings = configured(tmp_path, backend="auto")
    vector = auto.embed_query("find my notes")
    auto.embed_documents(["and a document"])
    assert float(vector @ real_embedder.embed_query("find my notes")) > 0.9999
    assert len(warnings) == 1 and "cannot be traced" in warnings[0]
    assert "failed before" in warnings[0] and "delete" in warnings[0]


def test_damaged_copy_falls_back_to_torch(tmp_path, onnx_root, real_embedder):
    shutil.copytree(onnx_root, tmp_path / "onnx")
    (data,) = (tmp_path / "onnx").glob("*/model.onnx.data")
    data.write_bytes(data.read_bytes()[:1000])
    embedder, warnings = configured(tmp_path / "onnx")
    vector = embedder.embed_query("find my notes")
    assert float(vector @ real_embedder.embed_query("find my notes")) > 0.9999
    assert len(warnings) == 1 and "to rebuild it" in warnings[0]


def test_cold_search_in_a_fresh_process_never_imports_torch(home, onnx_root, real_embedder):
    with Memory.open(home, embedder=real_embedder) as memory:
        memory.store_texts([n for n, _ in NOTES] + FILLER[:50], layer="assets")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MAGRAY_HOME": str(home),
           "MAGRAY_BACKEND": "auto", "HF_HUB_OFFLINE": "1"}
    query = "why did we pick a relational store instead of a document database"
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "magray", "search", query,
                           "--top-k", "3"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[0].split("\t")[3] == NOTES[2][0]
    imported = set(re.findall(r"\|\s+(\S+)$", done.stderr, re.M))
    assert "onnxruntime" in imported
    for heavy in ("torch", "sentence_transformers", "transformers", "pydantic", "sqlite_utils",
                  "http.client", "magray.backup", "magray.dedupe", "magray.maintenance"):
        assert heavy not in imported, heavy
    with sqlite3.connect(home / "data" / "magray.db") as db:  # the query vector, cached
        (blob,) = db.execute("SELECT vector FROM embed_cache WHERE model LIKE '%|query'").fetchone()
    cached = np.frombuffer(blob, dtype=np.float32)
    assert float(cached @ real_embedder.embed_query(query)) >= 0.999


def test_usearch_first_does_not_break_onnx_runtime():
    """Loading onnxruntime's native library after usearch's crashed the process; magray
    loads usearch only through index.usearch_index(), which loads onnxruntime first."""
    code = ("from magray.index import usearch_index; usearch_index(); import onnxruntime; "
            "print(onnxruntime.get_device())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "CPU", done.stderr[-500:]


def test_work_left_by_a_killed_export_is_removed_by_the_next(onnx_root):
    (directory,) = [p.parent for p in onnx_root.glob("*/manifest.json")]
    stale = [directory.with_name(f".{directory.name}.tmp-99999"),
             directory.with_name(f".{directory.name}.int8-x1y2")]
    for work in stale:
        work.mkdir()
        (work / "model.onnx.data").write_bytes(b"\0" * 1024)
    manifest = onnx_export.ensure(directory, model=None, name="all-MiniLM-L6-v2")
    assert manifest["dim"] == 384 and not any(work.exists() for work in stale)
    assert (directory / "model.onnx").exists()


def test_nothing_is_written_outside_magrays_directories(tmp_path, home, onnx_root):
    """Everything a command writes lands under MAGRAY_HOME or MAGRAY_CACHE, never in the
    user's own ~/.cache (ONNX Runtime kept a telemetry id there)."""
    user_home = tmp_path / "user"
    user_home.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(user_home), "HF_HUB_OFFLINE": "1"}
    env.pop("XDG_CACHE_HOME", None)
    for args in (["store", "a note about sailing boats"], ["search", "boats"]):
        done = subprocess.run([sys.executable, "-m", "magray", *args], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    assert "sailing boats" in done.stdout
    assert [p for p in user_home.rglob("*")] == []


def test_every_home_shares_one_copy_in_the_cache(tmp_path, magray_cache, monkeypatch):
    from magray import config
    from magray.embedding import from_settings

    settings = config.defaults()
    first = from_settings(settings, tmp_path / "a" / "data").onnx_dir
    assert first == from_settings(settings, tmp_path / "b" / "data").onnx_dir
    assert first.parent == magray_cache / "onnx"
    (tmp_path / "a-file").write_text("")  # a cache that cannot be made: the home's own dir
    monkeypatch.setenv("MAGRAY_CACHE", str(tmp_path / "a-file" / "cache"))
    alone = from_settings(settings, tmp_path / "a" / "data").onnx_dir
    assert alone.parent == tmp_path / "a" / "data" / "models" / "onnx"


def test_making_the_copy_is_announced(tmp_path, monkeypatch, real_embedder):
    def slow_export(directory, **job):
        raise onnx_export.ExportError("stopped here")

    monkeypatch.setattr(onnx_export, "export", slow_export)
    notes: list[str] = []
    embedder, warnings = configured(tmp_path / "onnx", backend="auto", note=notes.append)
    embedder.embed_query("find my notes")
    assert len(notes) == 1 and "making a copy of the model all-MiniLM-L6-v2" in notes[0]
    assert str(tmp_path / "onnx") in notes[0] and "stopped here" in warnings[0]


def test_the_cli_says_while_it_makes_the_copy(cli, tmp_path, monkeypatch):
    def failing_export(directory, **job):
        raise onnx_export.ExportError("stopped here")

    monkeypatch.setenv("MAGRAY_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(onnx_export, "export", failing_export)
    result = cli("store", "a note stored while no ONNX copy exists")
    assert result.code == 0, result
    assert "making a copy of the model all-MiniLM-L6-v2 for ONNX Runtime" in result.err
    assert "warning: the ONNX encoder is unavailable (stopped here)" in result.err
