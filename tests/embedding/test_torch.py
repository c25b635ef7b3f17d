"""The torch backend on the CPU (the reference vectors), and torch kept out of every
process that needs no model."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from magray.embedding import (SentenceTransformerEmbedder, default_model_roots,
                              torch_build_has_gpu)

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["a note about sailing", "how to restart nginx", "tax forms are due in april"]


@pytest.mark.parametrize("argv", [
    ["-c", "import magray.cli, magray"],
    ["-c", "import magray.embedding; magray.embedding.from_settings"],
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


def cpu_embedder(**options) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder("all-MiniLM-L6-v2", roots=default_model_roots(
        Path("/nonexistent")), device="cpu", **options)


def test_cpu_path_reference():
    embedder = cpu_embedder()
    vectors = embedder.embed_documents(TEXTS)
    assert vectors.shape == (3, 384) and embedder.device == "cpu"
    assert embedder.precision == "fp32"
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_truncate_dim_changes_the_space():
    embedder = cpu_embedder(truncate_dim=128)
    vectors = embedder.embed_documents(TEXTS)
    assert vectors.shape == (3, 128) and embedder.key == "all-MiniLM-L6-v2@128"
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_the_backend_runs_where_it_is_told():
    """'auto' is the router's to resolve (router.TorchPlacement), not the backend's."""
    with pytest.raises(ValueError, match="the router chooses"):
        SentenceTransformerEmbedder("all-MiniLM-L6-v2", roots=[], device="auto")


def test_torch_build_without_cuda_is_no_gpu(tmp_path):
    cpu, gpu = tmp_path / "cpu.py", tmp_path / "gpu.py"
    cpu.write_text("cuda: Optional[str] = None\nhip: Optional[str] = None\n")
    gpu.write_text("cuda: Optional[str] = '12.8'\nhip: Optional[str] = None\n")
    assert not torch_build_has_gpu(cpu) and torch_build_has_gpu(gpu)
