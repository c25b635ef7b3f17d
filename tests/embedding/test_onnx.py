"""The ONNX Runtime backend: agreement with torch, the int8 copy, and a cold search that
never imports torch. (Its fallbacks to torch are the router's: test_router.py.)"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np

from corpus import FILLER, IDENTIFIED, NOTES
from magray import Memory
from magray.embedding import export, normalise, usable_cores
from magray.embedding.onnx import OnnxEmbedder

REPO = Path(__file__).resolve().parents[2]
TEXTS = ([n for n, _ in NOTES] + [q for _, q in NOTES] + [n for n, _ in IDENTIFIED]
         + FILLER[:40] + ["  padded with spaces  ", "Ünïcödé 漢字 🙂", "x",
                          "a long note that runs past the model's window: " + "words " * 400])


def torch_documents(real_embedder, texts: list[str]) -> np.ndarray:
    """The reference vectors; the long text alone, so short ones are not padded to it."""
    return np.vstack([real_embedder.embed_documents(texts[:-1]),
                      real_embedder.embed_documents(texts[-1:])])


def test_onnx_vectors_agree_with_torch(make_router, onnx_root, real_embedder):
    embedder, warnings = make_router(onnx_root)
    documents = embedder.embed_documents(TEXTS)
    reference = torch_documents(real_embedder, TEXTS)
    assert documents.shape == reference.shape == (len(TEXTS), 384)
    assert (documents * reference).sum(axis=1).min() >= 0.999
    for text in TEXTS[:20]:
        assert float(embedder.embed_query(text) @ real_embedder.embed_query(text)) >= 0.999
    assert not embedder.torch.loaded and not warnings  # torch was never needed


def test_matryoshka_truncation_matches_torch(make_router, onnx_root, real_embedder):
    embedder, _ = make_router(onnx_root, truncate_dim=128)
    assert embedder.dim == 128
    mine = embedder.embed_documents(TEXTS[:10])
    reference = normalise(real_embedder.embed_documents(TEXTS[:10])[:, :128])
    assert mine.shape == (10, 128) and (mine * reference).sum(axis=1).min() >= 0.999


def test_threads_setting_reaches_onnx_runtime(onnx_root):
    (directory,) = [p for p in onnx_root.iterdir() if p.is_dir()]
    manifest = export.read_manifest(directory)
    one = OnnxEmbedder(directory, manifest, name="m", threads=1)
    one.embed_query("warm up")
    assert one._session.get_session_options().intra_op_num_threads == 1
    assert OnnxEmbedder(directory, manifest, name="m").threads == usable_cores()


def test_int8_backend_is_close_and_queries_stay_fp32(make_router, onnx_root, real_embedder):
    embedder, warnings = make_router(onnx_root, backend="onnx-int8")
    documents = embedder.embed_documents(TEXTS)
    reference = torch_documents(real_embedder, TEXTS)
    assert (documents * reference).sum(axis=1).mean() >= 0.95
    assert float(embedder.embed_query(TEXTS[0]) @ real_embedder.embed_query(TEXTS[0])) >= 0.999
    assert not warnings
    # optimised when it was made (weights in a side file), so a session starts without it
    import onnxruntime as ort

    int8, query = embedder._onnx["int8"], embedder._onnx["query"]
    assert int8.model_file.with_name("model-int8.onnx.data").exists()
    level = int8._session.get_session_options().graph_optimization_level
    assert level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert int8.bulk and not query.bulk  # bulk sessions pre-pack weights; a query's does not


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


def test_the_cli_says_while_it_makes_the_copy(cli, tmp_path, monkeypatch):
    def failing_export(directory, **job):
        raise export.ExportError("stopped here")

    monkeypatch.setenv("MAGRAY_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(export, "export", failing_export)
    result = cli("store", "a note stored while no ONNX copy exists")
    assert result.code == 0, result
    assert "making a copy of the model all-MiniLM-L6-v2 for ONNX Runtime" in result.err
    assert "warning: the ONNX encoder is unavailable (stopped here)" in result.err
