"""PostgresStore implements the storage boundary: every method of ``Repository``
(magray/db/base.py), with the same parameters, so nothing above magray.db can tell the
engines apart."""

import inspect

import pytest

pytest.importorskip("psycopg")


def test_every_repository_method_with_the_same_parameters():
    from magray.db.base import Repository
    from magray.db.pg.store import PostgresStore

    wanted = {name: member for name, member in inspect.getmembers(Repository)
              if not name.startswith("_") and callable(member)}
    missing = sorted(set(wanted) - set(dir(PostgresStore)))
    assert missing == []
    differ = {name: (list(inspect.signature(member).parameters),
                     list(inspect.signature(getattr(PostgresStore, name)).parameters))
              for name, member in wanted.items()
              if list(inspect.signature(member).parameters)
              != list(inspect.signature(getattr(PostgresStore, name)).parameters)}
    assert differ == {}
    from magray.db.pg import parse_database

    unopened = PostgresStore(parse_database("postgresql://db.example/memory"))  # no connection
    assert unopened.path == "db.example" and unopened.busy_timeout == 60.0
