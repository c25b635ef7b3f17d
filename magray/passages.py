"""Long texts: split into overlapping passages that each fit the model's window, so that
every part of a text is embedded, not only its first 256 tokens.

A record keeps one vector per passage. Its ``embedding`` column holds the first window's
vector (what embedding the whole text gives: the model truncates), and the ``passages``
table holds every passage's span and vector (ordinal 0 repeats the record's). The layer's
usearch index holds the record id once per vector (``multi=True``), so the record stays one
record for show, forget, promote and export; a search scores a record by its best passage.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .records import Passage

if TYPE_CHECKING:
    from .db.base import Repository
    from .embedding import Embedder
    from .encoder import Encoder

OVERLAP = 48  # tokens two neighbouring passages share: a sentence cut at one edge is whole
FALLBACK_WINDOW = 256  # words and marks per passage for a model without a local tokenizer

Span = tuple[int, int]


@dataclass
class Tokens:
    """A model's tokenizer as passages need it: token character offsets, and the window."""

    window: int  # tokens a passage may hold (the model's maximum less its special tokens)
    offsets: Callable[[str], list[Span]]


def tokens_for(embedder: "Embedder") -> Tokens:
    """The embedder's own tokenizer (read from its model directory: no torch import), or a
    word counter with a conservative window for models without one (test doubles)."""
    cached = getattr(embedder, "_magray_tokens", None)
    if cached is not None:
        return cached
    tokens = _model_tokens(Path(str(getattr(embedder, "source", "") or "/nonexistent")))
    if tokens is None:
        window = int(getattr(embedder, "max_tokens", 0) or FALLBACK_WINDOW)
        tokens = Tokens(window, lambda text: [m.span() for m in re.finditer(r"\w+|[^\w\s]",
                                                                             text)])
    try:
        embedder._magray_tokens = tokens  # type: ignore[attr-defined]
    except AttributeError:
        pass
    return tokens


def _model_tokens(directory: Path) -> Tokens | None:
    tokenizer_file = directory / "tokenizer.json"
    if not tokenizer_file.is_file():
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    try:
        limit = int(json.loads((directory / "sentence_bert_config.json").read_text())
                    ["max_seq_length"])
    except (OSError, ValueError, KeyError):
        limit = 256
    special = len(tokenizer.encode("", add_special_tokens=True).ids)

    def offsets(text: str) -> list[Span]:
        return [span for span in tokenizer.encode(text, add_special_tokens=False).offsets
                if span[1] > span[0]]

    return Tokens(limit - special, offsets)


def spans(text: str, tokens: Tokens) -> list[Span]:
    """Character spans of the passages of ``text``; [] when it fits one window. Passages
    start at a word (not inside one) and overlap their neighbour by OVERLAP tokens."""
    if len(text) <= tokens.window:  # every token covers at least one character
        return []
    offsets = tokens.offsets(text)
    window = tokens.window
    if len(offsets) <= window:
        return []
    stride = max(1, window - OVERLAP)
    result: list[Span] = []
    first = 0
    while True:
        last = min(first + window, len(offsets)) - 1
        result.append((0 if not result else offsets[first][0], offsets[last][1]))
        if last == len(offsets) - 1:
            result[-1] = (result[-1][0], len(text))
            return result
        first = _word_start(text, offsets, first + stride)


def _word_start(text: str, offsets: list[Span], i: int) -> int:
    """The first token at or after ``i`` that begins a word (not a word-piece)."""
    for j in range(i, min(i + 16, len(offsets))):
        start = offsets[j][0]
        if start == 0 or not (text[start - 1].isalnum() and text[start].isalnum()):
            return j
    return i


def long_texts(texts: Iterable[str], tokens: Tokens) -> dict[str, list[Span]]:
    """The passages of each text that does not fit the window."""
    found = {}
    for text in dict.fromkeys(texts):
        if parts := spans(text, tokens):
            found[text] = parts
    return found


MIN_WINDOW = 128  # no model's window is shorter: shorter texts need no tokenizing


def embed_long(embedder: "Embedder", texts: Sequence[str], whole: Mapping[str, np.ndarray],
               vectors: Callable[[list[str]], np.ndarray]
               ) -> dict[str, list[tuple[Passage, np.ndarray]]]:
    """``embed`` with the embedder's tokenizer, loaded only when a text might be long."""
    if not any(len(t) > MIN_WINDOW for t in texts):
        return {}
    return embed(texts, tokens_for(embedder), vectors, whole)


def embed(texts: Sequence[str], tokens: Tokens,
          vectors: Callable[[list[str]], np.ndarray],
          whole: Mapping[str, np.ndarray]) -> dict[str, list[tuple[Passage, np.ndarray]]]:
    """Passages and vectors for the long ones among ``texts``. The first passage takes the
    whole text's vector from ``whole`` (the model saw exactly that window); the others are
    embedded through ``vectors`` (the persistent cache)."""
    parts = long_texts(texts, tokens)
    rest = [text[a:b] for text, spans_ in parts.items() for a, b in spans_[1:]]
    fresh = iter(vectors(rest)) if rest else iter(())
    result: dict[str, list[tuple[Passage, np.ndarray]]] = {}
    for text, spans_ in parts.items():
        result[text] = [(Passage(n, a, b), whole[text] if n == 0 else next(fresh))
                        for n, (a, b) in enumerate(spans_)]
    return result


def best(store: "Repository", qvec: np.ndarray, ids: Iterable[int], dim: int
         ) -> dict[int, tuple[float, Passage]]:
    """For those of ``ids`` that have passages: the best passage's similarity to ``qvec``."""
    rows, matrix = store.passages(ids, dim)
    if not rows:
        return {}
    scores = (matrix @ qvec).astype(float).tolist()
    found: dict[int, tuple[float, Passage]] = {}
    for (rid, passage), score in zip(rows, scores):
        if rid not in found or score > found[rid][0]:
            found[rid] = (score, passage)
    return found


def upgrade(store: "Repository", encoder: "Encoder",
            progress: Callable[[int], None] | None = None) -> int:
    """Give passages to the long records stored before magray split texts (or imported, or
    re-embedded since): they had one vector, for their first window. Records are checked
    once; meta ``passages_checked`` holds the highest id checked. Returns records upgraded."""
    db = store
    key, dim = store.model_meta()
    if dim is None:
        return 0
    checked = int(db.meta("passages_checked") or 0)
    through = db.issued_through()
    if through <= checked:
        return 0
    if db.unsplit(checked, through, MIN_WINDOW, 1):
        # Only now is the model's tokenizer needed (lifecycle commands never load a model);
        # under another model than the recorded one, `optimize --reembed` will do this.
        if key != encoder.embedder.key:
            return 0
    upgraded = 0
    after = checked
    while batch := db.unsplit(after, through, MIN_WINDOW, 256):
        after = batch[-1][0]
        keys, whole = db.vectors([rid for rid, _, _ in batch], dim)
        by_id = dict(zip(keys.tolist(), whole))
        wanted = {text: by_id[rid] for rid, text, _ in batch if rid in by_id}
        parts = embed_long(encoder.embedder, list(wanted), wanted,
                           lambda chunk: encoder.vectors(chunk, "document"))
        with db.write() as conn:
            for rid, text, layer in batch:
                if text in parts and rid in by_id:
                    db.insert_passages(conn, rid, parts[text], layer)
                    upgraded += 1
        if progress:
            progress(len(batch))
    with db.write() as conn:
        db.set_meta(conn, "passages_checked", str(through))
    return upgraded


def recheck(store: "Repository", tx: Any, ids: Sequence[int]) -> None:
    """Have the next ``upgrade`` look at these records again (for a record brought back,
    e.g. from the trash, without its passages), inside the caller's write transaction."""
    if ids:
        checked = int(store.meta("passages_checked") or 0)
        store.set_meta(tx, "passages_checked", str(min(checked, min(ids) - 1)))
