"""Stores texts through the library in small acknowledged batches: after each batch is
committed and indexed, its ids are printed and flushed. The crash tests kill it at random
moments. Uses the deterministic fake embedder so a run costs no model load."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import FakeEmbedder  # noqa: E402

from magray import Memory  # noqa: E402


def main() -> None:
    home, count, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        for start in range(0, count, batch):
            texts = [f"crash note {start + i} about item {(start + i) % 97}" for i in range(batch)]
            for stored in memory.store_texts(texts):
                print(stored.id)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
