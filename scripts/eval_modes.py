#!/usr/bin/env python3
"""Which search mode finds more? Hit@1 and MRR@10 of each mode, and of hybrid at several
weights, on paraphrased questions and exact-identifier lookups among near-twins.

    python scripts/eval_modes.py

Uses the real default model in a throw-away MAGRAY_HOME.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from corpus import FILLER, IDENTIFIED, NOTES, TWINS  # noqa: E402

import magray.search as search_module  # noqa: E402
from magray import Memory  # noqa: E402


def evaluate(memory: Memory, cases: list[tuple[str, int]], **options) -> tuple[int, float]:
    hit1, mrr = 0, 0.0
    for query, target in cases:
        ranked = [h.record.id for h in memory.search(query, top_k=10, track=False, **options)]
        hit1 += bool(ranked) and ranked[0] == target
        mrr += 1 / (ranked.index(target) + 1) if target in ranked else 0
    return hit1, mrr / len(cases)


def main() -> None:
    with tempfile.TemporaryDirectory() as home, Memory.open(home) as memory:
        memory.store_texts(FILLER + TWINS)
        cases = [(q, memory.store_texts([n])[0].id) for n, q in NOTES + IDENTIFIED]
        print(f"{len(FILLER) + len(TWINS) + len(cases)} records, {len(cases)} queries "
              f"({len(NOTES)} paraphrases, {len(IDENTIFIED)} identifiers among near-twins)")
        print(f"{'mode':<22}{'hit@1':>8}{'MRR@10':>9}")
        rows = [("vector", {}), ("keyword", {})]
        rows += [(f"hybrid alpha={a}", {"alpha": a}) for a in (0.95, 0.9, 0.85, 0.8, 0.7)]
        for label, extra in rows:
            mode = label.split()[0]
            if "alpha" in extra:
                search_module.HYBRID_ALPHA = extra["alpha"]
            hit1, mrr = evaluate(memory, cases, mode=mode)
            print(f"{label:<22}{hit1:>5}/{len(cases):<3}{mrr:>8.3f}")


if __name__ == "__main__":
    main()
