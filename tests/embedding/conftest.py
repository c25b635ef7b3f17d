"""Fixtures of the embedding tests: the ONNX copy of the shipped model, made once."""

from __future__ import annotations

import pytest

from magray.embedding import export


@pytest.fixture(scope="session")
def onnx_root(magray_cache, real_embedder):
    """The export in the session's cache (tests/conftest.py), made once, int8 copy too."""
    root = magray_cache / "onnx"
    directory = export.export_dir(root, real_embedder.name, real_embedder.source)
    export.export(directory, source=real_embedder.source, name=real_embedder.name, int8=True)
    return root


@pytest.fixture
def make_router(monkeypatch):
    """make_router(onnx_root, backend="onnx", device="cpu", **options) -> (Router, warnings).

    Placements made with a test's own runtime (a fake GPU) are forgotten after the test: a
    later runtime may get the same id. The real CPU model stays loaded for the session."""
    from magray.embedding import DEFAULT_RUNTIME, Router, default_model_roots, router

    real = {key: placed for key, placed in router._PLACED.items()
            if key[3] == id(DEFAULT_RUNTIME)}
    monkeypatch.setattr(router, "_PLACED", real)

    def make(root, backend="onnx", device="cpu", **options):
        warnings: list[str] = []
        embedder = Router("all-MiniLM-L6-v2", roots=default_model_roots(root), onnx_root=root,
                          backend=backend, device=device, warn=warnings.append, **options)
        return embedder, warnings
    return make
