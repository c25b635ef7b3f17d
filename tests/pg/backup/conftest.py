"""tests/backup/conftest.py's fixtures, for the backup tests collected again on PostgreSQL."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "backup_conftest", Path(__file__).parents[2] / "backup" / "conftest.py")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
archive = _module.archive
