"""One magray client on a shared PostgreSQL memory, with its own home (its own settings and
local index cache), as the multi-client test runs four of them at once:

    python memory_client.py URL HOME store ME     # 200 records (half shared), then searches
    python memory_client.py URL HOME clean        # a lifecycle run; prints what it removed

The ``Memory`` is built on a ``PostgresStore`` directly: the ``database`` setting does not
choose the engine yet (issue 18's next step)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the fake embedder

from fakes import FakeEmbedder  # noqa: E402
from magray import config, paths  # noqa: E402
from magray.db.pg import parse_database  # noqa: E402
from magray.db.pg.store import PostgresStore  # noqa: E402
from magray.memory import Memory  # noqa: E402


def texts(me: int) -> list[str]:
    """Odd numbers: a text every client stores; even: this client's own."""
    return [f"shared note number {n}" if n % 2 else f"client {me} private note {n}"
            for n in range(200)]


def main(url: str, home: str, action: str, me: int = 0) -> int:
    where = paths.resolve(home)
    where.ensure()
    memory = Memory(where, config.load(where.config_file),
                    PostgresStore.open(parse_database(url)), FakeEmbedder())
    with memory:
        if action == "clean":
            print(len(memory.clean().removed), flush=True)
            return 0
        mine = texts(me)
        for start in range(0, len(mine), 20):
            memory.store_texts(mine[start:start + 20], layer="interact", tags=[f"c{me}"])
        for text in mine[::37]:  # what it stored, it finds first, in every mode
            for mode in ("vector", "hybrid"):
                hits = memory.search(text, mode=mode, track=False)
                if not hits or hits[0].record.text != text:
                    print(f"{mode} search for {text!r} found {hits[:1]}", file=sys.stderr)
                    return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:])))
