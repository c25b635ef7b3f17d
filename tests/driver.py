"""Worker processes for the crash and concurrency tests, using the library with the
deterministic fake embedder (no model load, so many can run at once).

    driver.py store HOME PREFIX COUNT BATCH   store texts in acknowledged batches (ids printed)
    driver.py search HOME ROUNDS               search repeatedly, print the number of hits
    driver.py backup HOME                      write one backup archive, print its path
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes import FakeEmbedder  # noqa: E402

from magray import Memory  # noqa: E402


def store(home: str, prefix: str, count: int, batch: int) -> None:
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        for start in range(0, count, batch):
            texts = [f"{prefix} note {start + i} about item {(start + i) % 97}"
                     for i in range(min(batch, count - start))]
            for stored in memory.store_texts(texts):
                print(stored.id)
            sys.stdout.flush()


def search(home: str, rounds: int) -> None:
    for n in range(rounds):
        with Memory.open(home, embedder=FakeEmbedder()) as memory:
            print(len(memory.search(f"note about item {n % 97}", mode="vector")))


def backup(home: str) -> None:
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        print(memory.backup().archive.path)


if __name__ == "__main__":
    command, home, *rest = sys.argv[1:]
    if command == "store":
        store(home, rest[0], int(rest[1]), int(rest[2]))
    elif command == "search":
        search(home, int(rest[0]))
    else:
        backup(home)
