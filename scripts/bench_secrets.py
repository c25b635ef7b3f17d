#!/usr/bin/env python3
"""What does the secrets guard cost a store? Stores the same N lines (default 10000, about
1 in 50 holding a credential) into fresh homes with secrets=redact and with the guard
switched off, alternating, and prints the ratio.

    python scripts/bench_secrets.py [N] [--real]

By default texts are embedded by an instant random embedder, so the ratio shows the guard
against everything else a store does (SQLite, indexes, dedupe): the worst case. ``--real``
uses the configured model, where embedding dominates.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakes import FakeEmbedder  # noqa: E402

from magray import Memory, NewRecord, config  # noqa: E402
from magray.write import Writer  # noqa: E402
from tests.corpus import FILLER  # noqa: E402
from tests.secrets_corpus import LOOKALIKES, SECRETS  # noqa: E402


def lines(n: int) -> list[str]:
    notes = [f"{FILLER[i % len(FILLER)]} (note {i})" if i % 3 else
             f"{LOOKALIKES[i % len(LOOKALIKES)]} #{i}" for i in range(n)]
    for i in range(0, n, 50):
        notes[i] = f"{SECRETS[(i // 50) % len(SECRETS)][1]} #{i}"
    return notes


def run(texts: list[str], guard: bool, real: bool) -> float:
    original = Writer._screened
    if not guard:
        Writer._screened = lambda self, items, noun, redacted: items  # type: ignore
    try:
        with tempfile.TemporaryDirectory() as home:
            settings = config.load(None).replace(secrets="redact", near_duplicate_merge=False)
            embedder = None if real else FakeEmbedder(384)
            with Memory.open(home, settings=settings, embedder=embedder) as memory:
                items = [NewRecord(text=t) for t in texts]
                started = time.perf_counter()
                memory.store(items)
                return time.perf_counter() - started
    finally:
        Writer._screened = original


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    real = "--real" in sys.argv
    n = int(args[0]) if args else 10_000
    texts = lines(n)
    on, off = [], []
    for _ in range(2 if real else 3):
        off.append(run(texts, False, real))
        on.append(run(texts, True, real))
    print(f"store of {n} lines ({'configured model' if real else 'random embedder'}): "
          f"guard off {min(off):.2f} s, secrets=redact {min(on):.2f} s, "
          f"ratio {min(on) / min(off):.2f}")


if __name__ == "__main__":
    main()
