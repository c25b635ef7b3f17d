"""PostgresStore implements every method of the storage boundary (``Repository``) with the
parameters it declares, as tests/db/test_boundary.py checks for the SQLite ``Store``."""

import inspect

import pytest

from magray.db.base import Repository


def test_postgres_store_implements_every_repository_method_with_the_same_parameters():
    pytest.importorskip("psycopg")
    from magray.db.pg.store import PostgresStore

    members = {n: v for n, v in vars(Repository).items() if not n.startswith("_")}
    for name, declared in members.items():
        implemented = inspect.getattr_static(PostgresStore, name, None)
        assert implemented is not None, f"PostgresStore lacks {name}"
        if isinstance(declared, property) or not callable(declared):
            continue
        want = list(inspect.signature(declared).parameters.values())
        have = list(inspect.signature(getattr(PostgresStore, name)).parameters.values())
        assert [(p.name, p.kind) for p in have] == [(p.name, p.kind) for p in want], name
