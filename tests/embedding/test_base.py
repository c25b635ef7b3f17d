"""The package's shape: backends are siblings that know nothing of each other, the router
composes them, and no module imports in a circle (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from magray.embedding import Embedder, Router, SentenceTransformerEmbedder, TorchPlacement
from magray.embedding.onnx import OnnxEmbedder

PACKAGE = Path(__file__).resolve().parents[2] / "magray" / "embedding"


def imports(module: str) -> set[str]:
    """The magray modules ``magray.embedding.<module>`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = ["magray", "embedding"][:3 - node.level]
            target = ".".join(base + ([node.module] if node.module else []))
            names = [f"{target}.{alias.name}" for alias in node.names] if not node.module \
                else [target]
            found.update(names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""]
            found.update(n for n in names if n.startswith("magray"))
    return found


def sibling(name: str) -> str | None:
    prefix = "magray.embedding."
    return name[len(prefix):] if name.startswith(prefix) else None


def test_base_is_a_leaf():
    assert imports("base") <= {"magray.errors"}


@pytest.mark.parametrize("backend", ["torch", "onnx", "export"])
def test_backends_do_not_know_the_router_or_each_other(backend):
    siblings = {sibling(name) for name in imports(backend)} - {None}
    allowed = {"base", "resolve"} | ({"onnx"} if backend == "export" else set())
    assert siblings <= allowed, siblings


def test_no_import_circle_in_the_package():
    modules = [p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"]
    edges = {m: {sibling(n) for n in imports(m)} & set(modules) for m in modules}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join(path + (module,))
        if module not in done:
            for target in edges[module]:
                visit(target, path + (module,))
            done.add(module)

    for module in modules:
        visit(module, ())


def test_backends_are_combined_by_composition_not_inheritance():
    for cls in (SentenceTransformerEmbedder, OnnxEmbedder, TorchPlacement, Router):
        assert cls.__mro__[1:] == (Embedder, *Embedder.__mro__[1:]), cls
    with pytest.raises(TypeError):
        type("Incomplete", (Embedder,), {})()  # dim and embed_documents are required
