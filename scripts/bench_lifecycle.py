#!/usr/bin/env python3
"""How long do store (with and without near-duplicate merging), promote, clean and optimize
take on a layer of N records? Sizes of the index before and after compaction.

    python scripts/bench_lifecycle.py [N]      # default 10000

Uses the tests' fake embedder (tests/fakes.py: deterministic 384-dimensional bag-of-words
vectors; the model's speed is not what is measured) in throw-away MAGRAY_HOMEs.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fakes import FakeEmbedder  # noqa: E402
from magray import Memory, NewRecord, config  # noqa: E402

WORDS = ["deploy", "cache", "login", "invoice", "backup", "printer", "kafka", "vpn", "bug",
         "security", "docs", "lunch", "query", "index", "router", "token", "budget", "team"]


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
            Memory.open(home, embedder=FakeEmbedder(384)) as memory:
        timed("store (near-duplicates looked up)", lambda: memory.store(items))
    settings = config.defaults().replace(capacity_interact=n // 2)
    with tempfile.TemporaryDirectory() as home, \
            Memory.open(home, settings=settings, embedder=FakeEmbedder(384)) as memory:
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
