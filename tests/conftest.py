"""Shared fixtures: every test gets its own MAGRAY_HOME, offline, with no stray settings."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from fakes import FakeEmbedder

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def magray_cache(tmp_path_factory) -> Path:
    """magray's cache for the whole session: the ONNX copy of the model is made once."""
    return tmp_path_factory.mktemp("magray-cache")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch, magray_cache) -> Path:
    for key in list(os.environ):
        if key.startswith("MAGRAY_") or key == "NO_COLOR":
            monkeypatch.delenv(key)
    path = tmp_path / "home"
    monkeypatch.setenv("MAGRAY_HOME", str(path))
    # The default backend (auto) is what the suite runs; tests about a backend choose it.
    monkeypatch.setenv("MAGRAY_CACHE", str(magray_cache))
    # Most tests exercise the short-lived layer's lifecycle (TTL, promotion, eviction) with
    # texts stored without a layer; the shipped default (assets, kept until removed) is
    # tested on its own, with this unset (tests/guarantees/test_nothing_lost.py).
    monkeypatch.setenv("MAGRAY_DEFAULT_LAYER", "interact")
    return path


@pytest.fixture
def fake_memory(home):
    from magray import Memory

    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        yield memory


@pytest.fixture(scope="session")
def real_embedder():
    """The shipped all-MiniLM-L6-v2, loaded once for the whole session."""
    from magray.embedding import SentenceTransformerEmbedder, default_model_roots

    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2", roots=default_model_roots(
        Path("/nonexistent")), device="cpu")
    embedder.dim  # load now
    return embedder


@pytest.fixture
def memory(home, real_embedder):
    from magray import Memory

    with Memory.open(home, embedder=real_embedder) as memory:
        yield memory


class Result:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out[:300]!r}, err={self.err[:300]!r})"


@pytest.fixture
def cli(monkeypatch):
    """Run ``magray`` in this process, as the console script does (one-line errors, exit
    codes), with bytes on stdin and text captured from stdout and stderr."""
    from magray.cli import main, output

    def run(*args: str, stdin: bytes | None = None, tty: bool = False) -> Result:
        out, err = io.StringIO(), io.StringIO()
        fake_in = io.TextIOWrapper(io.BytesIO(stdin or b""), encoding="utf-8")
        fake_in.isatty = lambda: stdin is None and tty  # type: ignore[method-assign]
        monkeypatch.setattr(sys, "stdin", fake_in)
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        output._console.cache_clear()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            output._console.cache_clear()
        return Result(code, out.getvalue(), err.getvalue())

    return run
