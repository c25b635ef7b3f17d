#!/usr/bin/env python3
"""Documents and long texts (issue 15), each figure against its baseline in the same run.

    python scripts/bench_ingest.py                   # 40 files
    python scripts/bench_ingest.py --files 200       # a bigger folder

1. Ingest throughput: ``Memory.ingest`` of a folder of long Markdown files (walk, split,
   hash, embed every section and passage, write, index) against a raw ``embed_documents``
   of exactly the texts that ingest embedded (each section, and each passage after a long
   section's first window), with the model warm for both. Target: at most 1.15x.
2. Recall of facts past the model's window: long notes whose one useful fact is 1-3 KB past
   the window (tests/long_notes.py, three sizes each), among filler notes and short
   distractors; the share found in the top 3 by a paraphrase, with one vector per record
   (as before passages) and with passages, in vector and hybrid mode.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from long_notes import FACTS, FILLER, SHORT, long_note  # noqa: E402


def embedder():
    from magray.embedding import SentenceTransformerEmbedder, default_model_roots

    model = SentenceTransformerEmbedder("all-MiniLM-L6-v2", roots=default_model_roots(
        Path("/nonexistent")), device="cpu")
    model.embed_documents(["warm up"] * 8)
    return model


def folder(root: Path, files: int) -> None:
    """Markdown files of 4-8 sections each; every third section is long (several windows)."""
    for f in range(files):
        parts = [f"# Document {f}\n\nAn overview of topic {f}.\n"]
        for s in range(4 + f % 5):
            sentences = 3 if (f + s) % 3 else 28
            body = " ".join(FILLER[(f * 7 + s * 3 + n) % len(FILLER)] for n in range(sentences))
            parts.append(f"## Part {s}\n\n{body}\n")
        (root / f"doc{f:04d}.md").write_text("\n".join(parts))


def throughput(files: int, model) -> None:
    from magray import Memory

    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        folder(docs, files)
        with Memory.open(Path(tmp) / "home", embedder=model) as memory:
            start = time.perf_counter()
            report = memory.ingest([docs])
            ingest_s = time.perf_counter() - start
            texts = [r.text for r in memory.list_records(limit=None)]
            stored = {r.id: r.text for r in memory.list_records(limit=None)}
            parts, _ = memory.db.passages(list(stored), memory.dim)
            texts += [stored[rid][p.start:p.end] for rid, p in parts if p.ordinal > 0]
            start = time.perf_counter()
            again = memory.ingest([docs])
            rerun_s = time.perf_counter() - start
        start = time.perf_counter()
        model.embed_documents(texts)
        raw_s = time.perf_counter() - start
    ratio = ingest_s / raw_s
    print(f"ingest: {files} files, {report.sections_added} sections, {len(texts)} texts "
          f"embedded: {ingest_s:.2f} s; raw embed_documents of the same texts {raw_s:.2f} s; "
          f"ratio {ratio:.2f}x ({'ok' if ratio <= 1.15 else 'MISSED'} <= 1.15x)")
    print(f"re-ingest, nothing changed: {rerun_s:.2f} s ({again.files_unchanged} files "
          f"unchanged, {again.sections_added} sections embedded)")


def recall(model) -> None:
    from magray import Memory

    sizes = [(0, 2400), (1, 3400), (2, 4600)]
    found = {(mode, passages): 0 for mode in ("vector", "hybrid") for passages in (0, 1)}
    total = 0
    for variant, size in sizes:
        with tempfile.TemporaryDirectory() as tmp, \
                Memory.open(Path(tmp), embedder=model) as memory:
            notes = {query: long_note(fact, size, 3 * i + variant)
                     for i, (fact, query, _) in enumerate(FACTS)}
            filler = [long_note("", size, 11 * n + variant) for n in range(15)]
            ids = {s.id: text for s, text in zip(
                memory.store_texts(list(notes.values()) + filler, layer="assets"),
                list(notes.values()) + filler)}
            memory.store_texts(SHORT)
            total += len(notes)
            for with_passages in (1, 0):
                if not with_passages:  # as magray stored long texts before: one vector each
                    memory.db.forget_passages()
                    memory.sync(rebuild=True)
                for mode in ("vector", "hybrid"):
                    for query, note in notes.items():
                        hits = memory.search(query, top_k=3, mode=mode, track=False)
                        found[(mode, with_passages)] += note in [ids.get(h.record.id)
                                                                 for h in hits]
    for mode in ("vector", "hybrid"):
        print(f"recall@3 of facts past the window, {mode}: one vector per record "
              f"{found[(mode, 0)]}/{total}, with passages {found[(mode, 1)]}/{total}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    args = parser.parse_args()
    model = embedder()
    throughput(args.files, model)
    recall(model)


if __name__ == "__main__":
    main()
