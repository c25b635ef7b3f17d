"""Vector search on PostgreSQL through pgvector's HNSW indexes: the engine's own index of
each layer (``index.EngineIndex``), so a client needs no local index file and sees every
committed record at once.

* ``VectorIndexes`` (a part of ``PostgresStore``) holds the SQL: the nearest records of a
  layer, a record scoring as its best passage (a long record's further passages have their
  own HNSW index); exact or through the index; many queries in one round trip; the
  passages' index next to the layers' (``ensure_vector_index``); REINDEX for ``optimize``.
* ``PgLayerIndex`` is what ``Indexes.layer`` hands the services on PostgreSQL.

Exact and approximate, as on SQLite: a layer of at most ``exact_up_to`` vectors (search.py's
EXACT_LIMIT) is scanned in full. The exact query orders by the stored float32 column itself
(``embedding <#> q``), an expression no index matches, so PostgreSQL scans and sorts: the
answer depends on the vectors only, as usearch's exact scan does. The approximate one
orders by the indexed expression (``embedding::vector(d)`` or ``::halfvec(d)`` for f16) and,
with ``hnsw.iterative_scan`` on (set per session), keeps scanning until enough pass the
filters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...index import EngineIndex, IndexSpec, PRUNE_EVERY, SyncReport
from ...records import LAYERS, Filters
from . import query
from .connection import Vector

PASSAGES_INDEX = "passages_hnsw"


class VectorIndexes:
    """The vector-search SQL of ``PostgresStore`` (a mixin: ``self`` is the store, whose
    ``_run``, ``meta``, ``set_meta``, ``write`` and ``_index_spec`` it uses)."""

    _index_spec: str | None

    def layer_index(self, layer: str, spec: IndexSpec, *, ef_search: int) -> "PgLayerIndex":
        """pgvector's HNSW index of the layer (the Repository boundary's engine index)."""
        return PgLayerIndex(self, query.check_layer(layer), spec, ef_search)

    def index_cast(self) -> str | None:
        """The type the layers' HNSW indexes are built on ('vector(384)', 'halfvec(384)');
        None before any. Read again by ``refresh_index_cast`` (another client may rebuild)."""
        if self._index_spec is None:
            self._index_spec = self.meta("vector_index")
        return self._index_spec.split()[0] if self._index_spec else None

    def refresh_index_cast(self) -> None:
        self._index_spec = None

    def nearest_records(self, layer: str, vectors: np.ndarray, k: int, *, exact: bool,
                        filters: Filters = Filters()) -> list[list[tuple[int, float]]]:
        """For each row of ``vectors``: the ``k`` records of ``layer`` nearest it that pass
        ``filters``, (id, inner product) best first, each record once at its best vector
        (its own or a further passage's). One statement for all the rows."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if not len(vectors) or k <= 0:
            return [[] for _ in range(len(vectors))]
        cast = None if exact else self.index_cast()
        where_r, params_r = query.filter_sql(None, filters, table="r")
        if len(vectors) == 1:
            sql, params = _one_sql(layer, cast, where_r), [Vector(vectors[0])]
        else:
            sql, params = _many_sql(layer, cast, where_r), [[_text(v) for v in vectors]]
        rows = self._run(sql, (*params, *params_r, k, *params_r, k, k)).fetchall()
        found: list[list[tuple[int, float]]] = [[] for _ in range(len(vectors))]
        for n, record_id, similarity in rows:
            found[n - 1].append((record_id, float(similarity)))
        return found

    def ensure_passage_index(self, spec: IndexSpec) -> bool:
        """The HNSW index of further passages (ordinal > 0; all layers: a passage has no
        layer of its own, the join to its record filters), built like the layers'; True
        when it was (re)built."""
        cast, ops = query.vector_type(spec.dtype, spec.dim)
        wanted = f"{cast} m={int(spec.m)} ef_construction={int(spec.ef_construction)}"
        if self.meta("passages_index") == wanted:
            return False
        with self.write() as conn:
            self._run("SET LOCAL maintenance_work_mem = '256MB'", conn=conn)
            self._run(f"DROP INDEX IF EXISTS {PASSAGES_INDEX}", conn=conn)
            self._run(f"CREATE INDEX {PASSAGES_INDEX} ON passages USING hnsw "
                      f"((embedding::{cast}) {ops}) WITH (m = {int(spec.m)}, ef_construction "
                      f"= {int(spec.ef_construction)}) WHERE ordinal > 0", conn=conn)
            self.set_meta(conn, "passages_index", wanted)
        return True

    def drop_vector_indexes(self, tx: Any) -> None:
        """Inside a write transaction: drop the HNSW indexes (vectors of another model,
        perhaps of another dimension, which the indexed expression would refuse, are about
        to replace the stored ones); the next ``sync`` builds them anew."""
        for layer in LAYERS:
            self._run(f"DROP INDEX IF EXISTS {query.index_name(layer)}", conn=tx)
        self._run(f"DROP INDEX IF EXISTS {PASSAGES_INDEX}", conn=tx)
        self._run("DELETE FROM meta WHERE key IN ('vector_index', 'passages_index')", conn=tx)
        self._index_spec = None

    def vector_index_problem(self, layer: str, spec: IndexSpec) -> str:
        """Why the layer's HNSW index cannot serve searches with these settings ('' when it
        can): missing, built for other settings, or left invalid by a failed build."""
        cast, _ = query.vector_type(spec.dtype, spec.dim)
        wanted = f"{cast} m={int(spec.m)} ef_construction={int(spec.ef_construction)}"
        built, found, valid = self._run(
            "SELECT (SELECT value FROM meta WHERE key = 'vector_index'), count(*), "
            "coalesce(bool_and(indisvalid), false) FROM pg_index WHERE indexrelid IN "
            "(to_regclass(%s), to_regclass(%s))",
            (query.index_name(layer), PASSAGES_INDEX)).fetchone()
        if built is None or found < 2:
            return "missing"
        if built != wanted:
            return f"built for other settings ({built}; configured: {wanted})"
        return "" if valid else "left invalid by an interrupted build"

    def reindex_layer(self, layer: str, *, passages: bool) -> None:
        """Rebuild the layer's HNSW index (and the passages' one) from the table, without
        stopping searches or writes (CONCURRENTLY: a new index is built beside the old)."""
        names = [query.index_name(layer)] + ([PASSAGES_INDEX] if passages else [])
        self._run("SET maintenance_work_mem = '256MB'")
        try:
            for name in names:
                self._run(f"REINDEX INDEX CONCURRENTLY {name}")
        finally:
            self._run("RESET maintenance_work_mem")

    def vector_index_bytes(self, layer: str) -> int:
        """Bytes of the layer's HNSW index on the server (0 when there is none)."""
        return self._run("SELECT coalesce(pg_relation_size(to_regclass(%s)), 0)",
                         (query.index_name(layer),)).fetchone()[0]


def _distance(column: str, cast: str | None, vector: str) -> str:
    """``column <#> vector``: through the index's expression, or (cast None) on the stored
    float32 vectors themselves, which no index matches: an exact scan."""
    if cast is None:
        return f"{column} <#> {vector}"
    return f"{column}::{cast} <#> {vector}::{cast}"


def _nearest_sql(layer: str, cast: str | None, where_r: str, vector: str) -> str:
    """The k nearest distinct records to one vector: the layer's records by their own
    vector, and by their further passages, each list ordered by an index's expression (so
    each can be an index scan), merged at each record's best. Parameters: the filter's, k,
    the filter's, k, k."""
    layer = query.check_layer(layer)
    own = _distance("r.embedding", cast, vector)
    part = _distance("p.embedding", cast, vector)
    return f"""
        SELECT u.id, -min(u.d) AS similarity FROM (
            (SELECT r.id, {own} AS d FROM records r
             WHERE r.layer = '{layer}' AND {where_r} ORDER BY {own} LIMIT %s)
            UNION ALL
            (SELECT p.record_id, {part} FROM passages p JOIN records r ON r.id = p.record_id
             WHERE p.ordinal > 0 AND r.layer = '{layer}' AND {where_r}
             ORDER BY {part} LIMIT %s)
        ) u GROUP BY u.id ORDER BY min(u.d), u.id LIMIT %s"""


def _one_sql(layer: str, cast: str | None, where_r: str) -> str:
    # the query vector is a bound parameter, written once: a CTE keeps it one
    return (f"WITH q AS (SELECT %s::vector AS v) SELECT 1, n.* FROM q, LATERAL ("
            f"{_nearest_sql(layer, cast, where_r, 'q.v')}) n ORDER BY n.similarity DESC, n.id")


def _many_sql(layer: str, cast: str | None, where_r: str) -> str:
    return (f"SELECT q.n, x.id, x.similarity FROM unnest(%s::text[]) WITH ORDINALITY AS q(t, n)"
            f" CROSS JOIN LATERAL (SELECT t::vector AS v) qv CROSS JOIN LATERAL ("
            f"{_nearest_sql(layer, cast, where_r, 'qv.v')}) x "
            f"ORDER BY q.n, x.similarity DESC, x.id")


def _text(vector: np.ndarray) -> str:
    """pgvector's text form; repr keeps each float32 exact."""
    return "[" + ",".join(map(repr, vector.astype(np.float32).tolist())) + "]"


class PgLayerIndex(EngineIndex):
    """A layer's HNSW index on the PostgreSQL server, as the services use an index."""

    def __init__(self, store: Any, layer: str, spec: IndexSpec, ef_search: int):
        # store: the PostgresStore this module is part of (not imported: a cycle)
        self.store = store
        self.layer = layer
        self.spec = spec
        self.ef_search = ef_search
        self._counted: tuple[int, int] | None = None  # (log head, vectors) when last counted
        self._ensured = False

    # -- searching ------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int, *, exact_up_to: int = 0,
               filters: Filters | None = None) -> list[tuple[int, float]]:
        self._session()
        exact = self.vector_count(fresh=False) <= exact_up_to
        return self.store.nearest_records(self.layer, query, k, exact=exact,
                                          filters=filters or Filters())[0]

    def search_many(self, vectors: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        self._session()
        return self.store.nearest_records(self.layer, vectors, k, exact=False)

    def _session(self) -> None:
        if self.store.ef_search != self.ef_search:
            self.store.set_ef_search(self.ef_search)

    @property
    def size(self) -> int:
        return self._counted[1] if self._counted else 0

    def vector_count(self, *, fresh: bool = True) -> int:
        """One per record, one per further passage. Counted again only when the layer's
        log head moved (every change to its vectors moves it): a search pays one cheap
        read for it, not a count of the layer."""
        head = self.store.log_head(self.layer)
        if fresh or self._counted is None or self._counted[0] != head:
            count = self.store.count(self.layer) + self.store.extra_passages(self.layer)
            if self._counted is not None and self._counted[0] != head:
                self.store.refresh_index_cast()  # another client may have rebuilt it
            self._counted = (head, count)
        return self._counted[1]

    # -- keeping it ready -----------------------------------------------------------------

    def sync(self, *, rebuild: bool = False) -> SyncReport:
        """Make the HNSW indexes exist with these settings (the first time after the model
        is recorded, or when settings changed; once per open index otherwise); with
        ``rebuild``, REINDEX the layer's (``optimize``)."""
        store, action, reason = self.store, "fresh", ""
        if not self._ensured or rebuild or store.index_cast() is None:
            problem = store.vector_index_problem(self.layer, self.spec)
            built = store.ensure_vector_index(self.spec.dim, self.spec.dtype, self.spec.m,
                                              self.spec.ef_construction)
            built = store.ensure_passage_index(self.spec) or built
            if rebuild and not built:
                store.reindex_layer(self.layer, passages=self.layer == LAYERS[0])  # theirs: once
            if built or rebuild:
                store.refresh_index_cast()
                action = "rebuilt"
                reason = problem if built else "rebuild requested (REINDEX)"
            self._ensured = True
        head = store.log_head(self.layer)
        if head - store.log_pruned_through(self.layer) > PRUNE_EVERY:
            store.prune_log(self.layer, head)  # nobody replays it: no index file reads it
        return SyncReport(self.layer, action, self.vector_count(), reason)

    def staleness(self, state: None = None) -> str:
        return self.store.vector_index_problem(self.layer, self.spec)

    def disk_bytes(self) -> int:
        return self.store.vector_index_bytes(self.layer)
