"""Embedding on ONNX Runtime with the model's own fast tokenizer: no torch in the process.

The session is the slow part of a cold start (the weights are mapped, the graph optimised),
and it releases the GIL while it loads, so ``start()`` begins it on a thread and the caller
does its other work (opening indexes, keyword search) meanwhile.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import Embedder, normalise, usable_cores

TOKENS_PER_TEXT = 48  # padded tokens a batch may hold, per text of the batch size


class OnnxEmbedder(Embedder):
    """An exported model (see ``export``): documents and queries in, vectors out."""

    def __init__(self, directory: Path, manifest: dict, *, name: str, truncate_dim: int = 0,
                 threads: int = 0, batch_size: int = 64, model_file: Path | None = None,
                 bulk: bool = False):
        self.name = name
        self.directory = directory
        self.manifest = manifest
        self.truncate_dim = truncate_dim or None
        self.threads = threads or usable_cores()
        self.batch_size = batch_size
        self.model_file = model_file or directory / "model.onnx"
        self.bulk = bulk  # made for many documents rather than one query
        self._session: Any = None
        self._tokenizer: Any = None
        self._error: BaseException | None = None
        self._loader: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return int(self.truncate_dim or self.manifest["dim"])

    # -- loading --------------------------------------------------------------------------

    def start(self) -> None:
        """Begin loading the tokenizer and session on a thread; ``encode`` waits for it."""
        with self._lock:
            if self._loader is None and self._session is None:
                self._loader = threading.Thread(target=self._load_guarded, name="magray-onnx")
                self._loader.start()

    def _load_guarded(self) -> None:
        try:
            self.load()
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits
            self._error = exc

    def load(self) -> None:
        """Load the tokenizer and the session now, on this thread."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        m = self.manifest
        tokenizer = Tokenizer.from_file(str(self.directory / "tokenizer.json"))
        tokenizer.no_padding()  # batches are padded here, after sorting by length
        tokenizer.enable_truncation(m["max_length"], strategy="longest_first",
                                    direction=m.get("truncation_side", "right"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: nothing on a user's stderr
        # Copies optimised when they were made keep their weights in a side file; an int8
        # copy from before that is optimised here, at every start.
        ready = m.get("optimised") and self.model_file.with_name(
            self.model_file.name + ".data").exists()
        options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if ready
                                            else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
        if not self.bulk:
            # Pre-packed weights make fp32 bulk encoding ~7% faster but a query session's
            # start ~40 ms slower.
            options.add_session_config_entry("session.disable_prepacking", "1")
        self._session = ort.InferenceSession(str(self.model_file), options,
                                             providers=["CPUExecutionProvider"])
        self._tokenizer = tokenizer

    def _ready(self) -> None:
        if self._session is None:
            self.start()
            assert self._loader is not None
            self._loader.join()
            if self._error is not None:
                raise self._error

    # -- encoding -------------------------------------------------------------------------

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._truncated(self.encode(list(texts), "document"))

    def embed_query(self, text: str) -> np.ndarray:
        return self._truncated(self.encode([text], "query"))[0]

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text: a caller that splits work into chunks sorts by these, so that a
        text long in tokens but short in characters does not widen a batch of short ones
        (sorting 1,000 docstrings by characters padded 17% more)."""
        self._ready()
        prompt = self.manifest["prompts"].get("document", "")
        return [len(e.ids) for e in self._tokenizer.encode_batch([prompt + t for t in texts])]

    def _truncated(self, vectors: np.ndarray) -> np.ndarray:
        return normalise(vectors[:, :self.truncate_dim]) if self.truncate_dim else vectors

    def encode(self, texts: list[str], role: str) -> np.ndarray:
        """Normalised full-size vectors, in the order of ``texts``; batches are made of
        texts of similar length, as sentence-transformers does, to waste little padding."""
        if not texts:
            return np.zeros((0, self.manifest["dim"]), dtype=np.float32)
        self._ready()
        prompt = self.manifest["prompts"].get(role, "")
        encodings = self._tokenizer.encode_batch([prompt + t for t in texts])
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        out: np.ndarray | None = None
        start = 0
        while start < len(order):
            # Longest first; a batch of long texts is cut short, so one long text does not
            # make a whole batch of short ones pay for its padding.
            width = len(encodings[order[start]].ids)
            size = max(1, min(self.batch_size, self.batch_size * TOKENS_PER_TEXT // width))
            rows = order[start:start + size]
            vectors = self._session.run(None, self._feed([encodings[i] for i in rows]))[0]
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
            start += size
        return normalise(out)

    def _feed(self, encodings: list[Any]) -> dict[str, np.ndarray]:
        m = self.manifest
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), m["pad_id"], dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.full_like(ids, m.get("pad_type_id", 0))
        left = m.get("padding_side") == "left"
        for row, e in enumerate(encodings):
            span = slice(width - len(e.ids), width) if left else slice(0, len(e.ids))
            ids[row, span] = e.ids
            mask[row, span] = e.attention_mask
            types[row, span] = e.type_ids
        columns = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: columns[name] for name in m["inputs"]}
