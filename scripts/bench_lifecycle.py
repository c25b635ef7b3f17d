#!/usr/bin/env python3
"""How long do store (with and without near-duplicate merging), promote, clean and optimize
take on a layer of N records? Sizes of the index before and after compaction.

    python scripts/bench_lifecycle.py [N]      # default 10000

Uses random 384-dimensional unit vectors (the model's speed is not what is measured) in
throw-away MAGRAY_HOMEs.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
import sys
import tempfile
import time

import numpy as np

from magray import Memory, NewRecord, config
from magray.embedding import Embedder

WORDS = ["deploy", "cache", "login", "invoice", "backup", "printer", "kafka", "vpn", "bug",
         "security", "docs", "lunch", "query", "index", "router", "token", "budget", "team"]


class RandomEmbedder(Embedder):
    """A fixed random unit vector per text: instant, and no two texts near-identical."""

    name = "random-384"
    dim = 384

    def embed_documents(self, texts):
        rows = [np.random.default_rng(int.from_bytes(hashlib.md5(t.encode()).digest()[:8],
                                                     "little")).standard_normal(self.dim)
                for t in texts]
        matrix = np.asarray(rows, dtype=np.float32)
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def timed(label: str, action):
    start = time.perf_counter()
    result = action()
    print(f"{label:<44}{time.perf_counter() - start:8.2f} s")
    return result


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rng = np.random.default_rng(7)
    items = [NewRecord(text=" ".join(rng.choice(WORDS, 8)) + f" note {i}") for i in range(n)]
    print(f"{n} records in interact")
    with tempfile.TemporaryDirectory() as home, \
            Memory.open(home, embedder=RandomEmbedder()) as memory:
        timed("store (near-duplicates looked up)", lambda: memory.store(items))
    settings = config.defaults().replace(capacity_interact=n // 2)
    with tempfile.TemporaryDirectory() as home, \
            Memory.open(home, settings=settings, embedder=RandomEmbedder()) as memory:
        memory.store(items)
        with memory.db.write() as tx:
            for record in memory.list_records(limit=None):
                memory.db.update_metadata(tx, replace(record, access_count=record.id % 7,
                                                      last_access=record.created_at))
        plan = timed("promote --dry-run", lambda: memory.promote(dry_run=True))
        timed("clean --dry-run (capacity n/2)", lambda: memory.clean(dry_run=True))
        report = timed("clean (capacity n/2)", memory.clean)
        print(f"  promoted {len(plan.moved)}, evicted {report.count('evicted')}")
        done = timed("optimize", memory.optimize)
        for c in done.indexes:
            print(f"  {c.layer:<9}{c.records:>8} records, index {c.before_bytes:>11,} -> "
                  f"{c.after_bytes:>11,} bytes")
        print(f"  database {done.database_before:,} -> {done.database_after:,} bytes")


if __name__ == "__main__":
    main()
