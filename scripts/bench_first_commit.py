"""What committing a bulk store's first batch early costs: the same texts stored with the
real model into fresh memories, with the first window one batch (FIRST_WINDOW, now) and a
whole window (as before), alternated; prints the median wall time of each and their ratio.

    python scripts/bench_first_commit.py [--texts 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("bench", HERE / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # for its sentence harvest (the bulk-store texts)

    import magray.write as write_module
    from magray import Memory
    from magray.embedding import SentenceTransformerEmbedder, default_model_roots

    cache = Path(tempfile.mkdtemp(prefix="first-commit-"))
    texts = bench.harvest(cache, args.texts)
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2", roots=default_model_roots(
        Path("/nonexistent")), device="cpu")
    embedder.embed_documents(["warm up"])
    whole = write_module.WINDOW_BYTES // (4 * embedder.dim)
    times: dict[str, list[float]] = {"first batch early": [], "whole first window": []}
    for run in range(args.repeat):
        for label, first in (("first batch early", write_module.STORE_BATCH),
                             ("whole first window", whole)):
            write_module.FIRST_WINDOW = first
            with Memory.open(cache / f"{label}-{run}", embedder=embedder) as memory:
                start = time.perf_counter()
                memory.store_texts(texts)
                times[label].append(time.perf_counter() - start)
    early, before = (statistics.median(t) for t in times.values())
    print(f"{args.texts} texts, median of {args.repeat}: first batch early {early:.2f} s, "
          f"whole first window {before:.2f} s, ratio {early / before:.3f}")


if __name__ == "__main__":
    main()
