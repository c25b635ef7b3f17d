"""What ``magray status`` asks of a PostgreSQL memory (issue 18, item 5): the server, its
round trip and versions, the database's size, and each layer's pgvector HNSW index as the
catalog describes it. ``PostgresStore`` takes these methods in (they use its ``_run``);
``magray.health`` judges the answers against the settings. Every query here only reads
catalogs, in the read-only session ``magray.db.pg.open_for_status`` opens.
"""

from __future__ import annotations

import re
import statistics
import time

from ...records import LAYERS
from ..base import ServerFacts, VectorIndexFacts
from . import query

# The cast an index's expression applies, as pg_get_indexdef prints it:
# ... USING hnsw (((embedding)::vector(384)) vector_ip_ops) WITH (m='16', ...)
_INDEXED_TYPE = re.compile(r"::(?:public\.)?(\w+\(\d+\))")
PINGS = 3  # round trips timed; status reports their median


class Status:
    """Methods of ``PostgresStore`` for ``magray status`` (the boundary's "status" block)."""

    def server(self) -> ServerFacts:
        """The server and database: address (no password: the URL never holds one), the
        median of three round trips, PostgreSQL's and pgvector's versions, the size."""
        self._run("SELECT 1").fetchone()  # (re)connects when needed: not part of the timing
        trips = []
        for _ in range(PINGS):
            started = time.perf_counter()
            self._run("SELECT 1").fetchone()
            trips.append(time.perf_counter() - started)
        database, user, version, installed, available, size, tables = self._run(
            "SELECT current_database(), current_user, current_setting('server_version'), "
            "(SELECT extversion FROM pg_extension WHERE extname = 'vector'), "
            "(SELECT default_version FROM pg_available_extensions WHERE name = 'vector'), "
            "pg_database_size(current_database()), "
            "to_regclass('meta') IS NOT NULL AND to_regclass('records') IS NOT NULL"
        ).fetchone()
        return ServerFacts("postgresql", self.target.host, database, user,
                           statistics.median(trips), version, installed, available, size,
                           bool(tables))

    def read_only(self) -> None:
        """From now on the server itself refuses any write this session might attempt."""
        self._run("SET default_transaction_read_only = on")

    def vector_indexes(self) -> dict[str, VectorIndexFacts]:
        """Each layer's HNSW index (``records_hnsw_<layer>``) as the catalog has it: present,
        valid (a build that failed half-way leaves an invalid one the planner skips), the
        type it indexes, its M and ef_construction, its size."""
        names = {query.index_name(layer): layer for layer in LAYERS}
        found = {}
        if self._run("SELECT to_regclass('records')").fetchone()[0] is not None:
            found = {row[0]: row[1:] for row in self._run(
                "SELECT c.relname, i.indisvalid, pg_get_indexdef(c.oid), "
                "coalesce(c.reloptions, '{}'), pg_relation_size(c.oid) "
                "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = 'records'::regclass AND c.relname = ANY(%s)",
                (list(names),))}
        out = {}
        for name, layer in names.items():
            if name not in found:
                out[layer] = VectorIndexFacts(name, present=False)
                continue
            valid, definition, options, size = found[name]
            # pgvector's defaults where the index was made without WITH (...)
            params = {"m": "16", "ef_construction": "64"}
            params.update(option.split("=", 1) for option in options)
            indexed = _INDEXED_TYPE.search(definition)
            out[layer] = VectorIndexFacts(
                name, True, bool(valid), indexed.group(1) if indexed else None,
                _int(params.get("m")), _int(params.get("ef_construction")), int(size))
        return out


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None

