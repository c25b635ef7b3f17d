"""The PostgreSQL engine (issue 18): the same memory on PostgreSQL + pgvector.

``target`` reads the ``database`` setting (no database library imported); ``PostgresStore``
(in ``store``, which imports psycopg) implements the SQLite store's methods.
"""

from .target import Postgres, parse_database

__all__ = ["Postgres", "parse_database"]
