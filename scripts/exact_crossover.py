"""Where exact search of a layer stops being cheap: exact scan vs HNSW, by layer size.

For each size: the p50 latency of one top-10 query on a memory-mapped usearch view, as an
HNSW search and as an exact scan (``exact=True``, what magray does for layers of up to
``search.EXACT_LIMIT`` records); HNSW's recall@10 against the exact answer; and how many
queries' top-10 changed when the same vectors were indexed again in another order (what
made results depend on how an index happened to be built). Vectors are bench.py's
synthetic mixture (384 dimensions, clustered like sentence embeddings); settings are
magray's defaults (M 16, ef_construction 200, ef_search 50, f32).

    python scripts/exact_crossover.py [--sizes 1000,5000,...] [--queries 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import synthetic  # noqa: E402

from magray.index import usearch_index  # noqa: E402  (loads onnxruntime first, as magray does)


def build(vectors: np.ndarray, keys: np.ndarray, path: Path):
    Index = usearch_index()
    index = Index(ndim=vectors.shape[1], metric="ip", dtype="f32", connectivity=16,
                  expansion_add=200, expansion_search=50)
    index.add(keys, vectors[keys - 1])
    index.save(str(path))
    view = Index.restore(str(path), view=True)
    view.expansion_search = 50
    return view


def p50_ms(run, queries: np.ndarray) -> float:
    for q in queries[:20]:
        run(q)  # warm the page cache
    times = []
    for q in queries:
        start = time.perf_counter()
        run(q)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2000,5000,10000,20000,50000,100000")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    queries = synthetic(args.queries, seed=99)
    print(f"{'records':>8} {'hnsw p50':>9} {'exact p50':>10} {'exact/hnsw':>10} "
          f"{'recall@10':>9} {'top-10 changed by a rebuild':>28}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            vectors = synthetic(size, seed=7)
            keys = np.arange(1, size + 1, dtype=np.uint64)
            first = build(vectors, keys, Path(tmp) / f"a{size}.usearch")
            again = build(vectors, keys[::-1].copy(), Path(tmp) / f"b{size}.usearch")
            hnsw = p50_ms(lambda q: first.search(q, 10), queries)
            exact = p50_ms(lambda q: first.search(q, 10, exact=True), queries)
            truth = first.search(queries, 10, exact=True).keys
            found = first.search(queries, 10).keys
            rebuilt = again.search(queries, 10).keys
            recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
            # as sets: magray re-scores candidates and orders them by (score, id) itself
            changed = sum(set(a) != set(b) for a, b in zip(found, rebuilt))
            exact_again = again.search(queries, 10, exact=True).keys
            exact_changed = sum(set(a) != set(b) for a, b in zip(truth, exact_again))
            print(f"{size:>8,} {hnsw:>7.3f}ms {exact:>8.3f}ms {exact / hnsw:>9.1f}x "
                  f"{recall:>9.4f} {changed:>4}/{len(queries)} (exact: {exact_changed})",
                  flush=True)


if __name__ == "__main__":
    main()
