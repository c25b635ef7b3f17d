"""The embedding engine: model resolution, lazy imports, and CUDA-to-CPU fallback."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_gpu import FakeCuda, FakeOutOfMemory, FakeRuntime

import magray.embedding as embedding
from magray.embedding import SentenceTransformerEmbedder, default_model_roots, resolve_model
from magray.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.fixture
def fake_gpu(fresh, real_embedder):
    """fake_gpu(**runtime options) -> (embedder, warnings, runtime) on a fake CUDA host."""
    def make(device="auto", **options):
        runtime = FakeRuntime(real_embedder.model, **options)
        embedder, warnings = fresh(device=device, runtime=runtime)
        return embedder, warnings, runtime
    return make


def test_cuda_is_used_in_fp16_when_its_vectors_agree(fake_gpu, real_embedder):
    embedder, warnings, runtime = fake_gpu()
    vectors = embedder.embed_documents(TEXTS)
    assert (embedder.device, embedder.precision, runtime.loads) == ("cuda", "fp16", ["cuda"])
    assert warnings == [] and "half" in runtime.ops
    agreement = (vectors * real_embedder.embed_documents(TEXTS)).sum(axis=1)
    assert agreement.min() >= 0.999  # the vector space the recorded model names


def test_fp16_that_disagrees_with_fp32_keeps_cuda_in_fp32(fake_gpu, real_embedder):
    embedder, warnings, runtime = fake_gpu(fp16_noise=0.02)
    vectors = embedder.embed_documents(TEXTS)
    assert (embedder.device, embedder.precision) == ("cuda", "fp32")
    assert runtime.ops == ["half", "float on cuda"]
    assert len(warnings) == 1 and "embedding in fp32 on CUDA" in warnings[0]
    assert np.allclose(vectors, real_embedder.embed_documents(TEXTS), atol=1e-5)


def test_cuda_probe_waits_for_its_kernel(fake_gpu):
    cuda = FakeCuda(kernel_error="CUDA error: no kernel image is available for execution")
    embedder, warnings, runtime = fake_gpu(cuda=cuda)
    assert embedder.embed_documents(TEXTS).shape == (3, 384)
    assert embedder.device == "cpu" and runtime.loads == ["cpu"]
    assert len(warnings) == 1 and "CUDA is present but does not work" in warnings[0]


def test_cuda_present_but_unavailable_falls_back(fake_gpu):
    embedder, warnings, runtime = fake_gpu(device="cuda", cuda=FakeCuda(available=False))
    embedder.embed_documents(TEXTS)
    assert embedder.device == "cpu" and runtime.loads == ["cpu"]
    assert len(warnings) == 1 and "no CUDA device is available; using the CPU" in warnings[0]


def test_load_failure_on_cuda_falls_back(fake_gpu):
    embedder, warnings, runtime = fake_gpu(
        load_error="CUDA error: no kernel image is available for execution")
    assert embedder.embed_documents(TEXTS).shape == (3, 384)
    assert embedder.device == "cpu" and runtime.loads == ["cuda", "cpu"]
    assert len(warnings) == 1 and "loading on CUDA failed (CUDA error: no kernel" in warnings[0]


def test_encode_failure_on_cuda_falls_back_with_same_vectors(fake_gpu, real_embedder):
    embedder, warnings, runtime = fake_gpu(
        fail_with=RuntimeError("CUDA error: an illegal memory access was encountered"))
    vectors = embedder.embed_documents(TEXTS)
    again = embedder.embed_documents(TEXTS)
    assert embedder.device == "cpu" and len(warnings) == 1
    assert "embedding on CUDA failed" in warnings[0]
    assert np.allclose(vectors, real_embedder.embed_documents(TEXTS), atol=1e-5)
    assert np.allclose(again, vectors)


def test_out_of_memory_halves_the_batch(fake_gpu):
    embedder, warnings, runtime = fake_gpu(max_batch=8)
    assert embedder.embed_documents(TEXTS).shape == (3, 384)
    assert runtime.batches == [64, 32, 16, 8] and runtime.torch.cuda.emptied >= 3
    assert embedder.device == "cuda" and warnings == []


def test_out_of_memory_at_batch_one_moves_off_the_gpu_before_converting(fake_gpu, real_embedder):
    embedder, warnings, runtime = fake_gpu(max_batch=0)
    embedder.batch_size = 4
    vectors = embedder.embed_documents(TEXTS)
    assert runtime.batches == [4, 2, 1] and embedder.device == "cpu" and len(warnings) == 1
    # the fp16 model went to the CPU and became fp32 there, not on the full GPU
    assert runtime.ops[-2:] == ["to cpu", "float on cpu"] and runtime.loads == ["cuda"]
    assert np.allclose(vectors, real_embedder.embed_documents(TEXTS), atol=1e-5)


def test_torch_build_without_cuda_is_no_gpu(tmp_path):
    cpu, gpu = tmp_path / "cpu.py", tmp_path / "gpu.py"
    cpu.write_text("cuda: Optional[str] = None\nhip: Optional[str] = None\n")
    gpu.write_text("cuda: Optional[str] = '12.8'\nhip: Optional[str] = None\n")
    assert not embedding.torch_build_has_gpu(cpu) and embedding.torch_build_has_gpu(gpu)


def test_truncate_dim_changes_the_space(fresh):
    embedder, _ = fresh(device="cpu", truncate_dim=128)
    vectors = embedder.embed_documents(TEXTS)
    assert vectors.shape == (3, 128) and embedder.key == "all-MiniLM-L6-v2@128"
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
