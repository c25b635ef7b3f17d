"""The SQL that narrows and ranks on PostgreSQL: filters, keyword search (BM25 as FTS5
computes it) and nearest neighbours through pgvector's HNSW indexes."""

from __future__ import annotations

import json
import re
from typing import Sequence

from ...records import LAYERS, Filters

# FTS5's bm25() constants (https://www.sqlite.org/fts5.html#the_bm25_function)
BM25_K1, BM25_B = 1.2, 0.75
DTYPE_TYPES = {"f32": ("vector", "vector_ip_ops"), "f16": ("halfvec", "halfvec_ip_ops")}


def filter_sql(layers: Sequence[str] | None, filters: Filters, table: str = "records"
               ) -> tuple[str, list]:
    """A WHERE clause (``%s`` placeholders) and its parameters for layers (None: no layer
    condition) and filters: the same conditions as the SQLite store's ``filter_sql``."""
    t = table
    clauses, params = ["true"], []
    if layers is not None:
        clauses, params = [f"{t}.layer = ANY(%s)"], [list(layers)]
    if filters.tags:  # every tag must be there: jsonb containment, through the GIN index
        clauses.append(f"{t}.tags @> %s::jsonb")
        params.append(json.dumps(sorted(set(filters.tags))))
    for column in ("project", "session", "kind"):
        value = getattr(filters, column)
        if value is not None:
            clauses.append(f"{t}.{column} = %s")
            params.append(value)
    if filters.since:
        clauses.append(f"{t}.created_at >= %s")
        params.append(filters.since)
    if filters.until:
        clauses.append(f"{t}.created_at <= %s")
        params.append(filters.until)
    if filters.source:
        base = filters.source.rstrip("/") or "/"
        prefix = base.rstrip("/") + "/"
        clauses.append(f"EXISTS (SELECT 1 FROM sources s WHERE s.record_id = {t}.id AND "
                       f"(s.path = %s OR left(s.path, %s) = %s))")
        params += [base, len(prefix), prefix]
    return " AND ".join(clauses), params


def match_words(match: str) -> list[str]:
    """The words of an FTS5 query made by ``fts_query`` ('"a" OR "b"'), or of free text."""
    quoted = re.findall(r'"((?:[^"]|"")*)"', match)
    words = [w.replace('""', '"') for w in quoted] if quoted else re.findall(r"\w+", match)
    return [w for w in dict.fromkeys(words) if w.strip()]


def tsquery_sql(words: Sequence[str]) -> str:
    """The tsquery of the query words, as text: each word a phrase of the words the
    tokenizer makes of it ('foo_bar' -> foo <-> bar, as FTS5 reads a quoted word), OR-ed."""
    phrases = " || ".join(["phraseto_tsquery('simple', unaccent(%s))"] * len(words))
    return f"SELECT ({phrases})::text"


def keyword_sql(where: str) -> str:
    """Matching records ranked by BM25 over the whole table, as FTS5's bm25(): idf from the
    number of records holding each term, term frequency from the tsvector's positions,
    length normalised by the average word count (fts_stats). Parameters: the query words
    joined by spaces, the tsquery (``tsquery_sql``: a constant, so the planner estimates it
    and uses the GIN index), the filter's, the limit."""
    return f"""
    WITH terms AS (SELECT DISTINCT lexeme FROM unnest(magray_words(%s)) AS u(lexeme)),
    stats AS (SELECT greatest(rows, 1)::float8 AS n,
                     greatest(words::float8 / greatest(rows, 1), 1) AS avgdl FROM fts_stats),
    idf AS (
        SELECT t.lexeme, greatest(ln((s.n - d.n + 0.5) / (d.n + 0.5)), 1e-6) AS idf
        FROM terms t CROSS JOIN stats s
        CROSS JOIN LATERAL (SELECT count(*)::float8 AS n FROM records
                            WHERE words @@ to_tsquery('simple', quote_literal(t.lexeme))) d
    ),
    hits AS MATERIALIZED (SELECT r.id, r.words, r.word_count FROM records r
             WHERE r.words @@ %s::tsquery AND {where}),
    tf AS (  -- each hit's tsvector read once, for the query's terms only
        SELECT h.id, h.word_count, u.lexeme, array_length(u.positions, 1)::float8 AS n
        FROM hits h, unnest(h.words) AS u
        WHERE u.lexeme = ANY(ARRAY(SELECT lexeme FROM terms))
    )
    SELECT tf.id, sum(i.idf * tf.n * ({BM25_K1} + 1)
               / (tf.n + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * tf.word_count / s.avgdl)))
           AS relevance
    FROM tf JOIN idf i ON i.lexeme = tf.lexeme CROSS JOIN stats s
    GROUP BY tf.id ORDER BY relevance DESC, tf.id LIMIT %s
    """


def vector_type(dtype: str, dim: int) -> tuple[str, str]:
    """(the cast an index and its queries use, the operator class) for a dtype."""
    if dtype not in DTYPE_TYPES:
        raise ValueError(f"index_dtype {dtype!r} has no pgvector type (f32 or f16)")
    name, ops = DTYPE_TYPES[dtype]
    return f"{name}({int(dim)})", ops


def index_name(layer: str) -> str:
    check_layer(layer)
    return f"records_hnsw_{layer}"


def check_layer(layer: str) -> str:
    """A layer name, checked before it is written into SQL (partial indexes need literals:
    a planner proves ``layer = 'x'`` matches an index only from a constant)."""
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}")
    return layer
