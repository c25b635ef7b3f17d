"""Imports point one way: cli, mcp -> memory -> services -> db, index, embedding -> leaves.
Every import among magray's modules counts, at module level or inside a function, under
``if TYPE_CHECKING:`` too (a circle hidden there is still a circle in the design)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "magray"


def module_names(package: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its __init__)."""
    names = {}
    for path in package.rglob("*.py"):
        parts = ("magray",) + path.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imported(name: str, path: Path, modules: set[str]) -> set[str]:
    """The magray modules that module ``name`` imports, anywhere in its text."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(_owning(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            for alias in node.names:
                # `from . import x` names a submodule; `from .x import y` names a value in x
                # (or a submodule of x: then that one is what is imported).
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else _owning(base, modules))
    found.discard(None)
    found.discard(name)
    return found


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.split(".")
    if node.level > 1:
        base = base[:-(node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _owning(dotted: str, modules: set[str]) -> str | None:
    """The magray module that ``dotted`` is, or lies in (None: not magray's)."""
    while dotted:
        if dotted in modules:
            return dotted
        dotted = dotted.rpartition(".")[0]
    return None


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the magray modules it imports. Importing a.b.c also runs the packages
    a and a.b; those edges are left out (every module would lead to magray/__init__)."""
    names = module_names(package)
    return {name: imported(name, path, set(names)) for name, path in names.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules, as one cycle through it
    (Tarjan's algorithm, iteratively: the package is small, but recursion is not needed)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(edges.get(target, ())))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(_cycle_in(sorted(group), edges))
    return groups


def _cycle_in(group: list[str], edges: dict[str, set[str]]) -> list[str]:
    """One closed path through a strongly connected group, from its first member back to
    it (a shortest one, by breadth-first search), to name in a failure."""
    start, members = group[0], set(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(edges[node] & members):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    return group


def test_no_import_cycles_among_magray_modules():
    edges = graph()
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(_describe(c, edges) for c in found)


def _describe(cycle: list[str], edges: dict[str, set[str]]) -> str:
    """A cycle, and every import among the modules of its strongly connected group (each
    of them lies on some cycle: any one may be the one to remove)."""
    group = _group_of(cycle[0], edges)
    inside = [f"    {a} -> {b}" for a in sorted(group) for b in sorted(edges[a] & group)]
    return "  " + " -> ".join(cycle) + "\n" + "\n".join(inside)


def _group_of(start: str, edges: dict[str, set[str]]) -> set[str]:
    def reach(node: str, forward: bool) -> set[str]:
        seen, todo = {node}, [node]
        while todo:
            here = todo.pop()
            step = edges[here] if forward else {a for a, bs in edges.items() if here in bs}
            todo += [n for n in step if n not in seen]
            seen.update(step)
        return seen

    return reach(start, True) & reach(start, False)


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """Relative and absolute, module and function level, TYPE_CHECKING, `from . import x`."""
    package = tmp_path / "magray"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from typing import TYPE_CHECKING\n"
                                  "if TYPE_CHECKING:\n    from .b import B\n")
    (package / "b.py").write_text("def f():\n    from . import c\n")
    (package / "c.py").write_text("import magray.sub.d\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "d.py").write_text("from .. import a\nfrom ..sub import e\n")
    (package / "sub" / "e.py").write_text("from magray.a import thing\n")
    edges = graph(package)
    assert edges["magray.a"] == {"magray.b"}
    assert edges["magray.b"] == {"magray.c"}
    assert edges["magray.c"] == {"magray.sub.d"}
    assert edges["magray.sub.d"] == {"magray.a", "magray.sub.e"}
    assert edges["magray.sub.e"] == {"magray.a"}
    assert cycles(edges) == [["magray.a", "magray.b", "magray.c", "magray.sub.d",
                              "magray.a"]]
