"""The embedding engine: model resolution, lazy imports, and CUDA-to-CPU fallback."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import magray.embedding as embedding
from magray.embedding import SentenceTransformerEmbedder, default_model_roots, resolve_model
from magray.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.mark.parametrize("argv", [
    ["-c", "import magray.cli, magray"],
    ["-m", "magray", "--help"],
    ["-m", "magray", "store", "--help"],
    ["-m", "magray", "search", "x", "--mode", "keyword"],
])
def test_no_torch_for_commands_that_need_no_model(argv, home):
    code = (f"import runpy, sys; sys.argv = {['magray'] + argv[2:]!r}; "
            "import atexit; atexit.register(lambda: print('HEAVY' if {'torch', "
            "'sentence_transformers'} & set(sys.modules) else 'LIGHT', file=sys.stderr)); ")
    if argv[0] == "-c":
        code += argv[1]
    else:
        code += "runpy.run_module('magray', run_name='__main__')"
    env = {**os.environ, "MAGRAY_HOME": str(home), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120)
    assert "LIGHT" in result.stderr, result.stderr


@pytest.fixture
def fresh(monkeypatch):
    """An embedder with no process-wide model cache, and its warnings collected."""
    monkeypatch.setattr(embedding, "_LOADED", {})
    warnings: list[str] = []

    def make(device="auto", **kw):
        return SentenceTransformerEmbedder("all-MiniLM-L6-v2", roots=default_model_roots(
            Path("/nonexistent")), device=device, warn=warnings.append, **kw), warnings
    return make


TEXTS = ["a note about sailing", "how to restart nginx", "tax forms are due in april"]


def test_cpu_path_reference(fresh):
    embedder, warnings = fresh(device="cpu")
    vectors = embedder.embed_documents(TEXTS)
    assert vectors.shape == (3, 384) and embedder.device == "cpu" and warnings == []
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_no_cuda_on_auto_is_silent(fresh):
    embedder, warnings = fresh()
    embedder.embed_documents(TEXTS)
    assert embedder.device == "cpu" and warnings == []
    assert embedder.fallback_reason == "no CUDA device is available"


def test_cuda_requested_but_absent_warns_once(fresh):
    embedder, warnings = fresh(device="cuda")
    embedder.embed_documents(TEXTS)
    embedder.embed_documents(TEXTS)
    assert embedder.device == "cpu" and len(warnings) == 1
    assert "no CUDA device is available; using the CPU" in warnings[0]


def test_cuda_present_but_broken_falls_back(fresh, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the probe then fails
    embedder, warnings = fresh()
    assert embedder.embed_documents(TEXTS).shape == (3, 384)
    assert embedder.device == "cpu" and len(warnings) == 1
    assert "CUDA is present but does not work" in warnings[0]


class FakeCudaModel:
    """Stands in for a model on a GPU: fails as told, delegates real work to the CPU model."""

    def __init__(self, cpu_model, fail_with=None, max_batch=None):
        self.cpu_model, self.fail_with, self.max_batch = cpu_model, fail_with, max_batch
        self.batches: list[int] = []

    def half(self):
        return self

    def float(self):
        return self

    def to(self, device):
        assert device == "cpu"
        return self.cpu_model

    def encode_document(self, texts, batch_size, **kw):
        import torch

        self.batches.append(batch_size)
        if self.fail_with:
            raise self.fail_with
        if self.max_batch is not None and batch_size > self.max_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.cpu_model.encode_document(texts, batch_size=batch_size, **kw)

    encode_query = encode_document


@pytest.fixture
def on_fake_gpu(fresh, monkeypatch):
    def make(**fake):
        embedder, warnings = fresh()
        real_load = SentenceTransformerEmbedder._load_model
        cpu_model = real_load(embedder, "cpu")
        gpu = FakeCudaModel(cpu_model, **fake)
        monkeypatch.setattr(embedder, "_choose_device", lambda torch: "cuda")
        monkeypatch.setattr(embedder, "_load_model",
                            lambda device: gpu if device == "cuda" else cpu_model)
        return embedder, warnings, gpu
    return make


def test_load_failure_on_cuda_falls_back(fresh, monkeypatch):
    embedder, warnings = fresh()
    real_load = embedder._load_model

    def load(device):
        if device == "cuda":
            raise RuntimeError("CUDA error: no kernel image is available for execution")
        return real_load(device)

    monkeypatch.setattr(embedder, "_choose_device", lambda torch: "cuda")
    monkeypatch.setattr(embedder, "_load_model", load)
    assert embedder.embed_documents(TEXTS).shape == (3, 384)
    assert embedder.device == "cpu"
    assert len(warnings) == 1 and "loading on CUDA failed (CUDA error: no kernel" in warnings[0]


def test_encode_failure_on_cuda_falls_back_with_same_vectors(on_fake_gpu, fresh):
    embedder, warnings, gpu = on_fake_gpu(
        fail_with=RuntimeError("CUDA error: an illegal memory access was encountered"))
    vectors = embedder.embed_documents(TEXTS)
    again = embedder.embed_documents(TEXTS)
    assert embedder.device == "cpu" and len(warnings) == 1
    assert "embedding on CUDA failed" in warnings[0]
    reference, _ = fresh(device="cpu")
    assert np.allclose(vectors, reference.embed_documents(TEXTS), atol=1e-5)
    assert np.allclose(again, vectors)


def test_out_of_memory_halves_the_batch(on_fake_gpu):
    embedder, warnings, gpu = on_fake_gpu(max_batch=8)
    assert embedder.embed_documents(TEXTS).shape == (3, 384)
    assert gpu.batches == [64, 32, 16, 8]
    assert embedder.device == "cuda" and warnings == []


def test_out_of_memory_at_batch_one_falls_back(on_fake_gpu):
    embedder, warnings, gpu = on_fake_gpu(max_batch=0)
    embedder.batch_size = 4
    assert embedder.embed_documents(TEXTS).shape == (3, 384)
    assert gpu.batches == [4, 2, 1] and embedder.device == "cpu" and len(warnings) == 1


def test_truncate_dim_changes_the_space(fresh):
    embedder, _ = fresh(device="cpu", truncate_dim=128)
    vectors = embedder.embed_documents(TEXTS)
    assert vectors.shape == (3, 128) and embedder.key == "all-MiniLM-L6-v2@128"
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
