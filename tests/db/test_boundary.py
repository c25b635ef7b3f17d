"""The storage boundary: ``Store`` implements every method of ``Repository`` (the
protocol a second engine implements), and nothing outside magray/db speaks SQL."""

import inspect
import re
from pathlib import Path

from magray.db.base import Repository
from magray.db.store import Store

ROOT = Path(__file__).resolve().parents[2]
# A statement, or a reach for the connection a statement would go through.
SQL_CALL = re.compile(r"\b(execute|executemany|executescript)\(|\.conn\b")
# A benchmark's floor (scripts/bench.py: what a hand-written sqlite3 + usearch search costs)
# is deliberately not magray code; its one statement says so on its line.
BASELINE = "# raw baseline"


def _members(cls) -> dict[str, object]:
    return {name: value for name, value in vars(cls).items() if not name.startswith("_")}


def test_store_implements_every_repository_method_with_the_same_parameters():
    members = _members(Repository)
    assert len(members) > 60  # the protocol is the whole boundary, not a sample of it
    for name, declared in members.items():
        implemented = inspect.getattr_static(Store, name, None)
        assert implemented is not None, f"Store lacks {name}"
        if isinstance(declared, property):
            assert isinstance(implemented, property), name
            continue
        if not callable(declared):
            continue
        want = list(inspect.signature(declared).parameters.values())
        have = list(inspect.signature(getattr(Store, name)).parameters.values())
        assert [(p.name, p.kind) for p in have] == [(p.name, p.kind) for p in want], name
        defaults = [(p.name, p.default) for p in want if p.default is not p.empty]
        assert defaults == [(p.name, p.default) for p in have if p.default is not p.empty], name


def test_every_repository_method_says_what_it_does():
    for name, member in _members(Repository).items():
        function = member.fget if isinstance(member, property) else member
        if callable(function):
            assert (function.__doc__ or "").strip(), f"Repository.{name} has no docstring"


def test_an_open_store_is_a_repository(tmp_path):
    store = Store.open(tmp_path / "m.db")
    try:
        assert isinstance(store, Repository)
    finally:
        store.close()


def test_no_sql_outside_the_storage_package():
    found = []
    for folder in ("magray", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name.startswith("magray/db/"):
                continue
            found += [f"{name}:{n}" for n, line in
                      enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                      if SQL_CALL.search(line) and BASELINE not in line]
    assert found == [], "SQL outside magray/db: " + ", ".join(found)
