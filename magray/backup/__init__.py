"""Backups and restores: one verified archive per backup, retention for cron, safe restores.

An archive (the container is described in ``archive.py``) holds, in this order::

    manifest.json                        format, versions, time, model, counts, member SHA-256s
    data/magray.db                       a consistent snapshot, a SQLite database (any engine)
    data/indexes/<layer>.usearch, .json  each layer's index and sidecar
    config.toml                          the config file, when there is one

Consistency while other processes write: every layer's index lock is held (shared) while
the database is snapshotted and the index files are copied, so no index can be saved
meanwhile and an archived index is never ahead of the archived database. After a restore,
``sync`` replays the index log for whatever an index is behind.

The modules, in the order a backup's life goes through them:

    layout.py     member names, staging paths, a layer's live index files
    archive.py    the container: tar in one zstd frame, sealed by a SHA-256 trailer
    manifest.py   the manifest and ``BackupInfo``
    create.py     ``run``: snapshot, manifest, seal, verify, apply retention
    verify.py     reading back: ``verify``, ``read_info``, ``list_archives``, ``seal_problem``
    retention.py  ``Retention``, ``select_kept``, ``prune``
    restore.py    ``restore``: unpack, check, swap in
    safety.py     the safety copy a restore makes of the data it replaces
    leftovers.py  what killed backups and restores leave behind

The SQL they need is the repository's "backup" methods (``magray/db/base.py``): SQLite's in
``magray/db/snapshot.py`` (its backup API), PostgreSQL's in ``magray/db/pg/snapshot.py`` (one
REPEATABLE READ snapshot written into a SQLite database of the same schema), so an archive is
the same whatever the engine, and restores into either. A function named like its module
(``create.create``, ``verify.verify``, ``restore.restore``) is imported from that module.
"""

from .create import BackupResult
from .layout import layer_files
from .leftovers import remove_leftovers
from .manifest import BackupInfo, Member
from .restore import RestoreResult
from .retention import Pruned, Retention, prune, select_kept
from .safety import discard_safety_copies, safety_copies
from .verify import Listing, list_archives, list_backups, read_info, seal_problem

__all__ = ["BackupInfo", "BackupResult", "Listing", "Member", "Pruned", "RestoreResult",
           "Retention", "discard_safety_copies", "layer_files", "list_archives",
           "list_backups", "prune", "read_info", "remove_leftovers", "safety_copies",
           "seal_problem", "select_kept"]
