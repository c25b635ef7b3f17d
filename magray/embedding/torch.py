"""The reference backend: a sentence-transformers model on torch, on one device.

Nothing here imports torch or sentence-transformers at module level; ``import magray``
stays cheap and commands that need no vectors never pay for the model. Which device a
configured model runs on, in which precision, and what happens when CUDA fails is the
router's decision (``router.TorchPlacement``); this module only does what it is told.

torch and sentence-transformers are reached only through a ``Runtime`` object, so tests
can hand the router a fake GPU and exercise every CUDA path on a machine without one.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ModelError
from ..records import model_key
from .base import Embedder, normalise, short, usable_cores
from .resolve import resolve_model

DEVICES = ("cpu", "cuda")


def gpu_present() -> bool:
    """Could torch use a GPU here? A GPU driver is present and the installed torch is a CUDA
    (or ROCm) build. Checked without importing torch (that costs seconds): a CPU-only wheel
    on a GPU host would otherwise load torch for bulk work that ONNX does faster."""
    driver = (Path("/proc/driver/nvidia/version").exists() or Path("/dev/kfd").exists()
              or any(Path("/dev").glob("nvidia[0-9]*")))
    return driver and torch_build_has_gpu()


def torch_build_has_gpu(version_file: Path | None = None) -> bool:
    """Was the installed torch built with CUDA or ROCm? (Read from ``torch/version.py``.)"""
    if version_file is None:
        try:
            spec = importlib.util.find_spec("torch")
        except (ImportError, ValueError):
            return False
        if spec is None or not spec.submodule_search_locations:
            return False
        version_file = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    try:
        text = version_file.read_text()
    except OSError:
        return False
    return bool(re.search(r"^(cuda|hip)\b[^=\n]*=\s*['\"]\d", text, re.M))


class Runtime:
    """What the torch backend needs of torch and sentence-transformers, imported on first use.

    The one seam between magray and the deep-learning stack: a test passes an object with
    the same three members (a fake GPU, one that runs out of memory...) to exercise the
    CUDA paths on any machine.
    """

    @property
    def torch(self) -> Any:
        import torch

        return torch

    def load(self, source: str, *, device: str, truncate_dim: int | None,
             local_files_only: bool) -> Any:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(source, device=device, truncate_dim=truncate_dim,
                                   local_files_only=local_files_only)

    def gpu_present(self) -> bool:
        return gpu_present()


DEFAULT_RUNTIME = Runtime()


def start_torch(runtime: Runtime, *, threads: int, allow_download: bool) -> Any:
    """torch, imported with the environment magray wants around it (offline unless
    downloads are allowed, no progress bars, quiet) and using ``threads`` CPU threads."""
    if not allow_download:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no bars on our stderr
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    torch = runtime.torch
    torch.set_num_threads(threads)
    return torch


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model on ``device`` ('cpu' or 'cuda'), loaded on first use.

    On the CPU any failure is a ModelError. On CUDA failures are raised as they come, for
    the router to back off or move the model to the CPU (``moved_to_cpu``).
    """

    def __init__(self, model: str, *, roots: Sequence[Path] = (), source: str | None = None,
                 device: str = "cpu", truncate_dim: int = 0, batch_size: int = 64,
                 threads: int = 0, allow_download: bool = False,
                 runtime: Runtime | None = None):
        if device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r} "
                             "(the router chooses one for 'auto')")
        self.name = model
        self.runtime = runtime or DEFAULT_RUNTIME
        self.source = source if source is not None else resolve_model(model, roots)
        self.device = device
        self.truncate_dim = truncate_dim or None
        self.batch_size = batch_size
        self.threads = threads or usable_cores()
        self.allow_download = allow_download
        self.precision: str | None = None  # "fp16" or "fp32", known once loaded
        self._model: Any = None

    @property
    def key(self) -> str:
        return model_key(self.name, self.truncate_dim or 0)

    @property
    def dim(self) -> int:
        model = self.model
        size = getattr(model, "get_embedding_dimension", None) or \
            model.get_sentence_embedding_dimension
        return int(self.truncate_dim or size())

    @property
    def loaded(self) -> bool:
        return self._model is not None

    # -- loading --------------------------------------------------------------------------

    @property
    def model(self) -> Any:
        if self._model is None:
            start_torch(self.runtime, threads=self.threads, allow_download=self.allow_download)
            self._model = self._load()
            self.precision = "fp32"
        return self._model

    def _load(self) -> Any:
        try:
            return self.runtime.load(self.source, device=self.device,
                                     truncate_dim=self.truncate_dim,
                                     local_files_only=not self.allow_download)
        except Exception as exc:  # noqa: BLE001 - any load failure is one clear message
            if self.device == "cuda":
                raise
            hint = "" if self.allow_download else " (downloads are off: set allow_download)"
            raise ModelError(f"cannot load the model {self.name!r}: {short(exc)}{hint}") from None

    def half(self) -> None:
        self.model.half()
        self.precision = "fp16"

    def float(self) -> None:
        self.model.float()
        self.precision = "fp32"

    def release(self) -> None:
        """Let the model go (its GPU memory back before a CPU copy is made)."""
        self._model = None
        self.empty_cuda_cache()

    def moved_to_cpu(self) -> "SentenceTransformerEmbedder":
        """This model on the CPU in fp32, as a new backend; this one lets it go."""
        cpu = SentenceTransformerEmbedder(
            self.name, source=self.source, device="cpu", truncate_dim=self.truncate_dim or 0,
            batch_size=self.batch_size, threads=self.threads,
            allow_download=self.allow_download, runtime=self.runtime)
        # Off the GPU first, then to fp32: converting on the GPU would allocate an fp32 copy
        # on the device that has just run out of memory.
        self.empty_cuda_cache()
        try:
            cpu._model = self._model.to("cpu").float()
            cpu.precision = "fp32"
        except Exception:  # noqa: BLE001 - a broken CUDA context: load afresh on the CPU
            cpu.model  # noqa: B018 - loads
        self._model = None
        return cpu

    def empty_cuda_cache(self) -> None:
        try:
            self.runtime.torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - best effort: a broken context cannot free memory
            pass

    # -- encoding -------------------------------------------------------------------------

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(list(texts), "document", self.batch_size)

    def embed_query(self, text: str) -> np.ndarray:
        return self.encode([text], "query", self.batch_size)[0]

    def encode(self, texts: list[str], role: str, batch_size: int) -> np.ndarray:
        """Normalised vectors of ``texts`` as ``role`` ('query' or 'document')."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self.model
        encode = model.encode_query if role == "query" else model.encode_document
        try:
            vectors = encode(texts, batch_size=batch_size, convert_to_numpy=True,
                             show_progress_bar=False)
        except Exception as exc:  # noqa: BLE001
            if self.device == "cuda":
                raise
            raise ModelError(f"the model failed to embed: {short(exc)}") from None
        return normalise(vectors)

    def probe(self, texts: Sequence[str]) -> np.ndarray:
        """Document vectors of ``texts`` one at a time (no padding to the longest): what
        two precisions or two backends are compared on."""
        model = self.model
        return normalise(np.vstack([
            model.encode_document([text], batch_size=1, convert_to_numpy=True,
                                  show_progress_bar=False)
            for text in texts]))
