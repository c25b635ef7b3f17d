"""The rest of the Repository boundary on PostgreSQL: status figures, the lifecycle,
maintenance, redaction, passages and sources. ``PostgresStore`` takes these methods in (a
plain split of one long class: they use its ``_run``, ``write`` and helpers)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np

from ...layers import Facts, join
from ...records import Passage, Record, Source, content_hash
from ..base import SOURCES
from .connection import Vector

if TYPE_CHECKING:
    import psycopg

FACT_COLUMNS = "id, layer, text, created_at, last_access, access_count, importance"
LAST_USE = "greatest(created_at, coalesce(last_access, created_at))"


class Upkeep:
    """Methods of ``PostgresStore`` beyond records, the trash, the cache and the log."""

    # -- what magray logs about itself ------------------------------------------------------

    def add_to_meta(self, key: str, by: int) -> None:
        """Add ``by`` to the number a meta key holds (created as ``by``)."""
        with self.write() as conn:
            self._run("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET "
                      "value = (meta.value::bigint + %s)::text", (key, str(by), by), conn=conn)

    def trash_count(self) -> int:
        return self._run("SELECT count(*) FROM trash").fetchone()[0]

    def cache_entries(self) -> int:
        return self._run("SELECT count(*) FROM embed_cache").fetchone()[0]

    def cache_use(self) -> tuple[int, int, int, int]:
        """Embedding-cache (hits, misses) of the recent operations, then of all time."""
        row = self._run(
            "SELECT (SELECT coalesce(sum(cache_hits), 0) FROM ops), "
            "(SELECT coalesce(sum(cache_misses), 0) FROM ops), "
            "(SELECT coalesce(sum(cache_hits), 0) FROM op_totals), "
            "(SELECT coalesce(sum(cache_misses), 0) FROM op_totals)").fetchone()
        return tuple(int(v) for v in row)

    def operation(self, op: str) -> tuple[list[float], str | None, int, float]:
        """The recent calls' durations (ascending), when the oldest finished, and the
        all-time count and seconds of one operation."""
        seconds = sorted(row[0] for row in self._run("SELECT seconds FROM ops WHERE op = %s",
                                                     (op,)))
        since = self._run("SELECT min(finished_at) FROM ops WHERE op = %s", (op,)).fetchone()[0]
        total = self._run("SELECT count, seconds FROM op_totals WHERE op = %s", (op,)
                          ).fetchone() or (0, 0.0)
        return seconds, since, int(total[0]), float(total[1])

    def extra_passages(self, layer: str) -> int:
        """Vectors a layer's index holds beyond one per record (further passages)."""
        return self._run("SELECT count(*) FROM passages p JOIN records r ON r.id = p.record_id "
                         "WHERE p.ordinal > 0 AND r.layer = %s", (layer,)).fetchone()[0]

    # -- the lifecycle ----------------------------------------------------------------------

    def facts(self, layer: str, ids: Sequence[int] | None = None) -> list[Facts]:
        """What scoring looks at, for a layer's records (or those of ``ids``), by id."""
        if ids is None:
            rows = self._run(f"SELECT {FACT_COLUMNS} FROM records WHERE layer = %s ORDER BY id",
                             (layer,))
        else:
            rows = self._run(f"SELECT {FACT_COLUMNS} FROM records WHERE layer = %s AND "
                             f"id = ANY(%s) ORDER BY id", (layer, [int(i) for i in ids]))
        return [Facts(*row[:6], float(row[6])) for row in rows]

    def expired(self, layer: str, cutoff: str) -> list[Facts]:
        """The facts of a layer's records last used before ``cutoff``, by id."""
        rows = self._run(f"SELECT {FACT_COLUMNS} FROM records WHERE layer = %s AND "
                         f"{LAST_USE} < %s ORDER BY id", (layer, cutoff))
        return [Facts(*row[:6], float(row[6])) for row in rows]

    def count_expired(self, layer: str, cutoff: str) -> int:
        return self._run(f"SELECT count(*) FROM records WHERE layer = %s AND {LAST_USE} < %s",
                         (layer, cutoff)).fetchone()[0]

    def created_range(self, layer: str) -> tuple[str | None, str | None]:
        """When the oldest and the newest record of a layer were created."""
        return tuple(self._run("SELECT min(created_at), max(created_at) FROM records "
                               "WHERE layer = %s", (layer,)).fetchone())

    def move(self, tx: "psycopg.Connection", record_id: int, layer: str, target: str,
             when: str) -> tuple[str, int | None]:
        """Move a record up ("promoted"), into its twin there ("merged", the kept id), or
        ("changed", None): it was not in ``layer`` any more. See Store.move."""
        moved = self._one_record("records", record_id, tx, layer=layer)
        if moved is None:
            return "changed", None
        twin = self.find(tx, target, moved.content_hash)
        if twin is None:
            self._run("UPDATE records SET layer = %s, updated_at = %s WHERE id = %s",
                      (target, when, record_id), conn=tx)
            return "promoted", None
        self.update_metadata(tx, join([twin, moved], when))
        self.trash(tx, record_id, "merged", when, merged_into=twin.id)
        return "merged", twin.id

    def layer_ids(self, layer: str) -> list[int]:
        return [r[0] for r in self._run("SELECT id FROM records WHERE layer = %s ORDER BY id",
                                        (layer,))]

    def texts(self, ids: Iterable[int], layer: str | None = None) -> dict[int, str]:
        """The text of each of ``ids`` that exists (and is in ``layer``, if given)."""
        sql, params = "SELECT id, text FROM records WHERE id = ANY(%s)", [[int(i) for i in ids]]
        if layer is not None:
            sql, params = sql + " AND layer = %s", params + [layer]
        return dict(self._run(sql, params).fetchall())

    # -- the embedding cache's upkeep -------------------------------------------------------

    def prune_cache(self, limit_bytes: int, *, dry_run: bool = False) -> tuple[int, int]:
        """Drop the least recently used cache entries beyond ``limit_bytes``, counted as the
        SQLite store counts them (vector, hash and model name): (entries, bytes)."""
        size = "octet_length(vector) + octet_length(text_hash) + octet_length(model)"
        sql = (f"SELECT model, text_hash, size FROM (SELECT model, text_hash, {size} AS size, "
               f"sum({size}) OVER (ORDER BY last_used DESC, model COLLATE \"C\", text_hash) "
               f"AS kept FROM embed_cache) AS ranked WHERE kept > %s")
        if dry_run:
            rows = self._run(sql, (limit_bytes,)).fetchall()
        else:
            with self.write() as conn:
                rows = self._run(sql, (limit_bytes,), conn=conn).fetchall()
                self._run("DELETE FROM embed_cache WHERE (model, text_hash) IN "
                          "(SELECT * FROM unnest(%s::text[], %s::text[]))",
                          ([r[0] for r in rows], [r[1] for r in rows]), conn=conn)
        return len(rows), sum(int(r[2]) for r in rows)

    def keep_cache_of(self, models: Sequence[str]) -> int:
        with self.write() as conn:
            return self._run("DELETE FROM embed_cache WHERE model <> ALL(%s)", (list(models),),
                             conn=conn).rowcount

    def forget_cached_text(self, tx: "psycopg.Connection", digest: str) -> int:
        return self._run("DELETE FROM embed_cache WHERE text_hash = %s", (digest,),
                         conn=tx).rowcount

    # -- maintenance ------------------------------------------------------------------------

    def compact(self) -> None:
        """Reclaim dead rows' space and refresh the planner's statistics (VACUUM ANALYZE;
        PostgreSQL recycles its own WAL, there is nothing to checkpoint by hand)."""
        self._run("VACUUM (ANALYZE) records, trash, embed_cache, passages, index_log, ops")

    def optimize_keywords(self) -> str:
        """Check every record's keyword vector against its text (recomputing any that
        disagree, and the BM25 totals) and flush the GIN index's pending list: "optimized",
        or "rebuilt" when something had to be recomputed."""
        with self.write() as conn:
            fixed = self._run("UPDATE records SET text = text WHERE words <> magray_words(text)",
                              conn=conn).rowcount
            totals = self._run("SELECT count(*), coalesce(sum(word_count), 0) FROM records",
                               conn=conn).fetchone()
            stale = self._run("UPDATE fts_stats SET rows = %s, words = %s WHERE rows <> %s OR "
                              "words <> %s", (*totals, *totals), conn=conn).rowcount
        self._run("SELECT gin_clean_pending_list('records_words')")
        return "rebuilt" if fixed or stale else "optimized"

    def reembed_counts(self) -> tuple[int, int]:
        row = self._run("SELECT count(pending_embedding), count(*) - count(pending_embedding) "
                        "FROM records").fetchone()
        return int(row[0]), int(row[1])

    def restart_reembed(self, target: str | None) -> None:
        with self.write() as conn:
            self._run("UPDATE records SET pending_embedding = NULL "
                      "WHERE pending_embedding IS NOT NULL", conn=conn)
            if target is None:
                self._run("DELETE FROM meta WHERE key = 'reembed_target'", conn=conn)
            else:
                self.set_meta(conn, "reembed_target", target)

    def unembedded(self, limit: int) -> list[tuple[int, str]]:
        return [tuple(r) for r in self._run(
            "SELECT id, text FROM records WHERE pending_embedding IS NULL ORDER BY id LIMIT %s",
            (limit,))]

    def stage_vectors(self, rows: Sequence[tuple[int, str, np.ndarray]]) -> None:
        """Keep new vectors waiting, (id, text, vector); skipped where the text changed."""
        with self.write() as conn, self._guard(), conn.cursor() as cursor:
            cursor.executemany("UPDATE records SET pending_embedding = %s WHERE id = %s AND "
                               "text = %s", [(Vector(v), rid, text) for rid, text, v in rows])

    def switch_vectors(self, name: str, key: str, dim: int) -> bool:
        """Swap every waiting vector in and record the model, in one transaction, if no
        record lacks one (False otherwise). See Store.switch_vectors."""
        with self.write() as conn:
            if self._run("SELECT 1 FROM records WHERE pending_embedding IS NULL LIMIT 1",
                         conn=conn).fetchone():
                return False
            self.drop_vector_indexes(conn)  # built on the old vectors (db/pg/vectors.py)
            for sql in ("UPDATE records SET embedding = pending_embedding, "
                        "pending_embedding = NULL", "DELETE FROM passages",
                        "DELETE FROM meta WHERE key IN ('passages_checked', 'reembed_target')"):
                self._run(sql, conn=conn)
            for meta_key, value in (("model", name), ("model_key", key), ("dim", str(dim))):
                self.set_meta(conn, meta_key, value)
            self._run("DELETE FROM embed_cache WHERE model NOT IN (%s, %s)",
                      (f"{key}|document", f"{key}|query"), conn=conn)
        return True

    # -- redaction --------------------------------------------------------------------------

    def every_text(self, source: str, batch: int = 2000) -> Iterator[Record]:
        """Every record of a source of stored text ("records" or "trash"), by id."""
        table = _source_table(source)
        last = 0
        while rows := self._run(f"SELECT {self.RECORD_COLUMNS} FROM {table} WHERE id > %s "
                                f"ORDER BY id LIMIT %s", (last, batch)).fetchall():
            yield from (self._to_record(row) for row in rows)
            last = rows[-1][0]

    def secure_delete(self, tx: "psycopg.Connection") -> None:
        """Nothing to switch on: PostgreSQL has no secure_delete. A deleted row's bytes stay
        in the table's pages until VACUUM reuses them; ``scrub`` (VACUUM FULL) rewrites the
        tables without them."""

    def redact(self, tx: "psycopg.Connection", source: str, record: Record, changes: dict,
               vector: np.ndarray | None, when: str) -> bool:
        """Rewrite a record's redacted fields; True when it joined an equal text's record
        (deleted for good). See Store.redact."""
        table = _source_table(source)
        text = changes.get("text", record.text)
        digest = content_hash(text)
        current = self._one_record(table, record.id, tx) or record
        cleaned = replace(current, tags=tuple(changes.get("tags", current.tags)),
                          **{k: changes[k] for k in ("project", "session", "kind")
                             if k in changes})
        twin = None if source == "trash" else self._run(
            f"SELECT {self.RECORD_COLUMNS} FROM records WHERE layer = %s AND "
            f"content_hash = %s AND id <> %s", (record.layer, digest, record.id),
            conn=tx).fetchone()
        if twin is not None:
            self.update_metadata(tx, join([self._to_record(twin), cleaned], when))
            self._run("DELETE FROM records WHERE id = %s", (record.id,), conn=tx)
            return True
        sets = {"tags": self._tags(cleaned.tags), "updated_at": when,
                **{k: changes[k] for k in ("project", "session", "kind") if k in changes}}
        if "text" in changes:
            sets.update(text=text, content_hash=digest, embedding=Vector(vector))
            self._run("DELETE FROM passages WHERE record_id = %s", (record.id,), conn=tx)
        assignments = ", ".join(f"{k} = %s" for k in sets)
        self._run(f"UPDATE {table} SET {assignments} WHERE id = %s",
                  (*sets.values(), record.id), conn=tx)
        return False

    def scrub(self) -> None:
        """Leave no removed text in the tables' files: VACUUM FULL rewrites each table and
        index from the rows now live (the server's WAL still holds old pages until it
        recycles them: a backup of the WAL archive is out of magray's reach)."""
        self._run("VACUUM FULL records, trash, embed_cache, passages, sources")

    # -- passages ---------------------------------------------------------------------------

    def insert_passages(self, tx: "psycopg.Connection", record_id: int,
                        parts: Sequence[tuple[Passage, np.ndarray]], layer: str | None = None
                        ) -> None:
        """Write a record's passages (replacing any); ``layer``: log it for that index."""
        self._run("DELETE FROM passages WHERE record_id = %s", (record_id,), conn=tx)
        with self._guard(), tx.cursor() as cursor:
            cursor.executemany(
                'INSERT INTO passages (record_id, ordinal, start, "end", embedding) '
                "VALUES (%s, %s, %s, %s, %s)",
                [(record_id, p.ordinal, p.start, p.end, Vector(v)) for p, v in parts])
        if layer is not None:
            self._run("INSERT INTO index_log(layer, record_id) VALUES (%s, %s)",
                      (layer, record_id), conn=tx)

    def passage_vectors(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(record ids, vectors) of the passages after the first of these records."""
        rows = self._run("SELECT record_id, embedding FROM passages WHERE ordinal > 0 AND "
                         "record_id = ANY(%s) ORDER BY record_id, ordinal",
                         ([int(i) for i in ids],), binary=True).fetchall()
        return (np.array([r[0] for r in rows], dtype=np.int64),
                self._vectors_matrix([r[1] for r in rows], dim))

    def passages(self, ids: Iterable[int], dim: int
                 ) -> tuple[list[tuple[int, Passage]], np.ndarray]:
        """Every passage of these records: (record id, passage) and the vectors."""
        rows = self._run('SELECT record_id, ordinal, start, "end", embedding FROM passages '
                         "WHERE record_id = ANY(%s) ORDER BY record_id, ordinal",
                         ([int(i) for i in ids],), binary=True).fetchall()
        return ([(r[0], Passage(r[1], r[2], r[3])) for r in rows],
                self._vectors_matrix([r[4] for r in rows], dim))

    def unsplit(self, after: int, through: int, longer_than: int, limit: int
                ) -> list[tuple[int, str, str]]:
        """(id, text, layer) of long records in (after, through] without passages, by id."""
        return [tuple(r) for r in self._run(
            "SELECT id, text, layer FROM records WHERE id > %s AND id <= %s AND "
            "length(text) > %s AND NOT EXISTS (SELECT 1 FROM passages WHERE "
            "record_id = records.id) ORDER BY id LIMIT %s", (after, through, longer_than, limit))]

    # -- sources ----------------------------------------------------------------------------

    def sources(self, ids: Iterable[int]) -> dict[int, Source]:
        """The source of each of ``ids`` that came from a file (the first path, if several)."""
        found: dict[int, Source] = {}
        for rid, path, a, b, body_at in self._run(
                "SELECT record_id, path, line_start, line_end, body_at FROM sources WHERE "
                "record_id = ANY(%s) ORDER BY path DESC", ([int(i) for i in ids],)):
            found[rid] = Source(path, a, b, body_at)
        return found

    def file_hashes(self, paths: Sequence[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for path, digest in self._run("SELECT DISTINCT path, file_hash FROM sources "
                                      "WHERE path = ANY(%s)", (list(paths),)):
            found.setdefault(path, set()).add(digest)
        return found

    def records_from(self, path: str) -> dict[int, str]:
        return dict(self._run("SELECT r.id, r.content_hash FROM sources s JOIN records r ON "
                              "r.id = s.record_id WHERE s.path = %s", (path,)).fetchall())

    def source_paths(self, prefixes: Sequence[str]) -> list[str]:
        """Every recorded path under one of the directory ``prefixes`` (or equal to one)."""
        found: set[str] = set()
        for prefix in prefixes:
            base = prefix.rstrip("/")
            found.update(r[0] for r in self._run(
                "SELECT DISTINCT path FROM sources WHERE path = %s OR left(path, %s) = %s",
                (base, len(base) + 1, base + "/")))
        return sorted(found)

    def put_source(self, tx: "psycopg.Connection", record_id: int, source: Source,
                   file_hash: str) -> None:
        self._run(
            "INSERT INTO sources (record_id, path, line_start, line_end, body_at, file_hash) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (record_id, path) DO UPDATE SET "
            "line_start = excluded.line_start, line_end = excluded.line_end, "
            "body_at = excluded.body_at, file_hash = excluded.file_hash",
            (record_id, source.path, source.line_start, source.line_end, source.body_at,
             file_hash), conn=tx)

    def drop_sources(self, tx: "psycopg.Connection", path: str,
                     record_ids: Sequence[int] | None = None) -> None:
        if record_ids is None:
            self._run("DELETE FROM sources WHERE path = %s", (path,), conn=tx)
        else:
            self._run("DELETE FROM sources WHERE path = %s AND record_id = ANY(%s)",
                      (path, [int(i) for i in record_ids]), conn=tx)

    def still_sourced(self, ids: Sequence[int]) -> set[int]:
        return {r[0] for r in self._run("SELECT DISTINCT record_id FROM sources WHERE "
                                        "record_id = ANY(%s)", ([int(i) for i in ids],))}


def _source_table(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"no source of stored text named {source!r}")
    return source
