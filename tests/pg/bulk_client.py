"""A client that stores batches of records until told to stop or the server goes away:
after each committed batch it prints the batch's ids (what it was told is stored), and on a
failure it prints one line on stderr and exits with magray's code, as the CLI does.

    python bulk_client.py URL"""

from __future__ import annotations

import sys

import numpy as np

from magray.db.pg import parse_database
from magray.db.pg.store import PostgresStore
from magray.errors import MagrayError
from magray.records import NewRecord


def main(url: str) -> int:
    rng = np.random.default_rng(0)
    try:
        store = PostgresStore.open(parse_database(url), busy_timeout=5)
        for batch in range(10_000):
            vectors = rng.standard_normal((50, 8)).astype(np.float32)
            items = [(NewRecord(f"batch {batch} note {n}"), vectors[n]) for n in range(50)]
            with store.write() as tx:
                ids = [rid for rid, _ in store.insert_many(tx, items, "2026-01-01")]
            print(" ".join(map(str, ids)), flush=True)
    except MagrayError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
