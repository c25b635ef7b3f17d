"""The configured model: which backend embeds what, and on which device.

``Router`` holds the backends and sends each call to one of them; no backend knows of
another. torch (``torch.SentenceTransformerEmbedder``) is the reference and the GPU path.
An ONNX copy of the same model (``export``, made once, checked against torch) embeds
without importing torch (``onnx.OnnxEmbedder``). Backend ``auto`` uses it for queries, for
small batches, and for bulk work when no GPU is present (same vectors, faster); ``onnx``
for everything; ``onnx-int8`` embeds documents with a dynamically quantised copy (faster
again, slightly less exact; queries stay fp32); ``torch`` never uses it. If ONNX Runtime is
missing or the copy cannot be made or run, torch does the work after one warning.

``TorchPlacement`` puts the torch backend on a device. Device ``auto`` uses CUDA when a
real allocation and kernel on it complete, else the CPU. On CUDA the model runs in fp16
only where its vectors agree with fp32 on probe texts (cosine >= 0.999, the bar the ONNX
copy meets), so documents embedded on a GPU and queries embedded on the CPU share one
vector space and one recorded model; otherwise it stays fp32. Any CUDA failure while
loading or encoding falls back to the CPU with a single warning; a CUDA out-of-memory
first halves the batch size and retries.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ModelError
from ..records import model_key
from .base import Embedder, Warn, short, usable_cores
from .resolve import default_model_roots, onnx_root, resolve_model
from .torch import DEFAULT_RUNTIME, Runtime, SentenceTransformerEmbedder, start_torch

SMALL_BATCH = 16  # backend auto: up to this many texts are embedded without torch


def _quiet(message: str) -> None:
    pass


def from_settings(settings: Any, data_dir: Path, warn: Warn | None = None, *,
                  note: Warn | None = None, runtime: Runtime | None = None) -> "Router":
    """The configured model behind the configured backend (not loaded yet)."""
    s = settings
    roots = default_model_roots(data_dir) + [Path(r) for r in s.model_roots]
    return Router(
        s.model, roots=roots, onnx_root=onnx_root(data_dir), backend=s.backend,
        device=s.device, truncate_dim=s.truncate_dim, batch_size=s.batch_size,
        threads=s.threads, allow_download=s.allow_download, warn=warn, note=note,
        runtime=runtime)


# Where each configuration's torch backend was placed, for this process: a library user
# (or a test suite) that opens many Memory objects loads the model, probes the GPU and
# warns once. (source, truncate_dim, requested device, runtime) -> (backend, reason)
_PLACED: dict[tuple, tuple[SentenceTransformerEmbedder, str | None]] = {}


class TorchPlacement(Embedder):
    """The torch backend on the device that works, loaded on first use (see the module)."""

    def __init__(self, model: str, *, source: str, device: str = "auto",
                 truncate_dim: int = 0, batch_size: int = 64, threads: int = 0,
                 allow_download: bool = False, warn: Warn | None = None,
                 runtime: Runtime | None = None):
        self.name, self.source = model, source
        self.requested_device = device
        self.truncate_dim = truncate_dim or None
        self.batch_size = batch_size
        self.threads = threads or usable_cores()
        self.allow_download = allow_download
        self.warn = warn or _quiet
        self.runtime = runtime or DEFAULT_RUNTIME
        self.fallback_reason: str | None = None
        self.backend: SentenceTransformerEmbedder | None = None  # once placed

    @property
    def key(self) -> str:
        return model_key(self.name, self.truncate_dim or 0)

    @property
    def dim(self) -> int:
        return self.placed().dim

    @property
    def loaded(self) -> bool:
        return self.backend is not None

    @property
    def device(self) -> str | None:
        return self.backend.device if self.backend else None

    @property
    def precision(self) -> str | None:
        return self.backend.precision if self.backend else None

    def placed(self) -> SentenceTransformerEmbedder:
        if self.backend is None:
            if self._cache_key not in _PLACED:
                _PLACED[self._cache_key] = (self._place(), self.fallback_reason)
            self.backend, self.fallback_reason = _PLACED[self._cache_key]
        return self.backend

    @property
    def _cache_key(self) -> tuple:
        return (self.source, self.truncate_dim, self.requested_device, id(self.runtime))

    # -- choosing the device --------------------------------------------------------------

    def _place(self) -> SentenceTransformerEmbedder:
        torch = start_torch(self.runtime, threads=self.threads,
                            allow_download=self.allow_download)
        if self._choose_device(torch) == "cuda":
            backend = self._on("cuda")
            try:
                backend.model  # noqa: B018 - loads
                self._choose_precision(backend)
                return backend
            except Exception as exc:  # noqa: BLE001 - any CUDA failure means: use the CPU
                backend.release()
                self._fall_back(f"loading on CUDA failed ({short(exc)})")
        backend = self._on("cpu")
        backend.model  # noqa: B018 - loads
        return backend

    def _on(self, device: str) -> SentenceTransformerEmbedder:
        return SentenceTransformerEmbedder(
            self.name, source=self.source, device=device, truncate_dim=self.truncate_dim or 0,
            batch_size=self.batch_size, threads=self.threads,
            allow_download=self.allow_download, runtime=self.runtime)

    def _choose_device(self, torch: Any) -> str:
        if self.requested_device == "cpu":
            return "cpu"
        available = False
        try:
            available = torch.cuda.is_available()
            if available:
                torch.ones(1, device="cuda").add_(1)  # a real allocation and kernel launch,
                torch.cuda.synchronize()  # completed: kernel errors surface only here
                return "cuda"
            reason = "no CUDA device is available"
        except Exception as exc:  # noqa: BLE001
            reason = f"CUDA is present but does not work ({short(exc)})"
        self.fallback_reason = reason
        if self.requested_device == "cuda" or available:  # surprising, so say it once
            self.warn(f"{reason}; using the CPU")
        return "cpu"

    def _choose_precision(self, backend: SentenceTransformerEmbedder) -> None:
        """fp16 (half the memory, about twice the speed) when the model's fp16 vectors agree
        with its fp32 ones on the probe texts as closely as the ONNX copy must agree with
        torch; otherwise fp32. Queries are embedded in fp32 (on the CPU, by ONNX), so this
        keeps documents made on a GPU in the vector space the recorded model names."""
        from .export import MIN_AGREEMENT, PROBES

        reference = backend.probe(PROBES)
        backend.half()
        agreement = float((reference * backend.probe(PROBES)).sum(axis=1).min())
        if agreement >= MIN_AGREEMENT:
            return
        backend.float()
        self.warn(f"fp16 vectors of {self.name} agree with fp32 only to cosine "
                  f"{agreement:.4f} on {len(PROBES)} probe texts; embedding in fp32 on CUDA")

    def _fall_back(self, reason: str) -> None:
        self.fallback_reason = reason
        self.warn(f"{reason}; falling back to the CPU")

    # -- encoding -------------------------------------------------------------------------

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(list(texts), "document")

    def embed_query(self, text: str) -> np.ndarray:
        return self._encode([text], "query")[0]

    def _encode(self, texts: list[str], role: str) -> np.ndarray:
        backend = self.placed()
        batch = self.batch_size
        while True:
            try:
                return backend.encode(texts, role, batch)
            except Exception as exc:  # noqa: BLE001
                if backend.device != "cuda":
                    raise  # the CPU backend's own ModelError
                if _is_out_of_memory(exc) and batch > 1:
                    batch //= 2
                    backend.empty_cuda_cache()
                    continue
                self._fall_back(f"embedding on CUDA failed ({short(exc)})")
                backend = self.backend = backend.moved_to_cpu()
                _PLACED[self._cache_key] = (backend, self.fallback_reason)


class Router(Embedder):
    """The configured model behind the configured backend (see the module): it holds a
    torch placement and the ONNX encoders it has opened, and delegates each call."""

    def __init__(self, model: str, *, roots: Sequence[Path], onnx_root: Path,
                 backend: str = "auto", device: str = "auto", truncate_dim: int = 0,
                 batch_size: int = 64, threads: int = 0, allow_download: bool = False,
                 warn: Warn | None = None, note: Warn | None = None,
                 runtime: Runtime | None = None, lock_timeout: float = 600.0):
        self.name = model
        self.source = resolve_model(model, roots)
        self.backend = backend
        self.requested_device = device
        self.truncate_dim = truncate_dim or None
        self.batch_size = batch_size
        self.threads = threads or usable_cores()
        self.allow_download = allow_download
        self.warn = warn or _quiet
        self.note = note or _quiet
        self.runtime = runtime or DEFAULT_RUNTIME
        self.onnx_root = onnx_root
        self.lock_timeout = lock_timeout
        self.torch = TorchPlacement(model, source=self.source, device=device,
                                    truncate_dim=truncate_dim, batch_size=batch_size,
                                    threads=self.threads, allow_download=allow_download,
                                    warn=self.warn, runtime=self.runtime)
        self._onnx: dict[str, Any] = {}  # variant -> OnnxEmbedder, or None when unavailable
        self._onnx_dir: Path | None = None
        self._known_manifest: dict | None = None
        self._problem_told = False

    @property
    def key(self) -> str:
        return model_key(self.name, self.truncate_dim or 0)

    @property
    def dim(self) -> int:
        if self.truncate_dim:
            return int(self.truncate_dim)
        if not self.torch.loaded and (manifest := self._manifest()) is not None:
            return int(manifest["dim"])  # known without loading torch
        return self.torch.dim

    # What the torch backend reports (None until torch is loaded): health shows them.
    @property
    def device(self) -> str | None:
        return self.torch.device

    @property
    def precision(self) -> str | None:
        return self.torch.precision

    @property
    def fallback_reason(self) -> str | None:
        return self.torch.fallback_reason

    @property
    def onnx_dir(self) -> Path:
        """Where this model's ONNX copy lives (or will)."""
        if self._onnx_dir is None:
            from .export import export_dir

            self._onnx_dir = export_dir(self.onnx_root, self.name, self.source)
        return self._onnx_dir

    # -- delegating -----------------------------------------------------------------------

    def embed_query(self, text: str) -> np.ndarray:
        onnx = self._onnx_for("query") if self.backend != "torch" else None
        if onnx is not None:
            try:
                return onnx.embed_query(text)
            except Exception as exc:  # noqa: BLE001 - a damaged copy: torch answers
                self._drop(onnx, exc)
        return self.torch.embed_query(text)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        onnx = self._for_documents(len(texts))
        if onnx is not None:
            try:
                return onnx.embed_documents(texts)
            except Exception as exc:  # noqa: BLE001 - a damaged copy: torch answers
                self._drop(onnx, exc)
        return self.torch.embed_documents(texts)

    def lengths(self, texts: Sequence[str]) -> list[int]:
        onnx = self._for_documents(len(texts))
        if onnx is not None:
            try:
                return onnx.lengths(texts)
            except Exception:  # noqa: BLE001 - embed_documents reports it, then falls back
                pass
        return self.torch.lengths(texts)

    def prepare_query(self) -> None:
        """Start loading the query encoder in the background, when it is an existing ONNX
        copy: a caller embedding a new query overlaps that with its other work."""
        if self.backend == "torch" or "query" in self._onnx:
            return
        if self._manifest() is not None and _onnxruntime_present():
            self._onnx_for("query")

    # -- choosing -------------------------------------------------------------------------

    def _for_documents(self, count: int) -> Any:
        return self._onnx_for(self._document_variant(count), bulk=count > SMALL_BATCH)

    def _document_variant(self, count: int) -> str | None:
        """Which ONNX copy embeds ``count`` documents ('query' is the fp32 one); None: torch.

        auto keeps torch for bulk work only where it can use a GPU: on a CPU the fp32 copy
        gives the same vectors, faster, without torch's start-up."""
        if self.backend in ("onnx", "onnx-int8"):
            return "int8" if self.backend == "onnx-int8" else "query"
        if self.backend == "torch" or self.torch.loaded:
            return None  # torch is loaded already: keep one backend per process
        if count <= SMALL_BATCH or self.requested_device == "cpu":
            return "query"
        if self.requested_device == "cuda" or self.runtime.gpu_present():
            return None
        return "query"

    def _onnx_for(self, variant: str | None, *, bulk: bool = False) -> Any:
        """The ONNX encoder of ``variant`` ('query': fp32, 'int8'), opened on first use (for
        ``bulk`` work when that first use embeds many documents); None: use torch."""
        if variant is None:
            return None
        if variant not in self._onnx:
            try:
                self._onnx[variant] = self._open_onnx(variant, bulk)
            except Exception as exc:  # noqa: BLE001 - any ONNX problem means: use torch
                self._onnx[variant] = None
                self._tell(short(exc))
        return self._onnx[variant]

    def _open_onnx(self, variant: str, bulk: bool) -> Any:
        from . import export
        from .onnx import OnnxEmbedder

        if not _onnxruntime_present():
            raise ModelError("onnxruntime is not installed")
        directory = self.onnx_dir
        manifest = export.read_manifest(directory)
        if manifest is None:
            note = export.failure_note(directory)
            if note.exists():
                raise ModelError(f"the ONNX export failed before ({_note_reason(note)}); "
                                 f"delete {note} to try again")
        model_file = directory / "model-int8.onnx" if variant == "int8" else None
        if model_file and export.failure_note(model_file).exists():
            raise ModelError(f"the int8 copy failed before "
                             f"({_note_reason(export.failure_note(model_file))})")
        if manifest is None or (model_file and not model_file.exists()):
            what = "an int8 copy" if variant == "int8" else "a copy"
            self.note(f"making {what} of the model {self.name} for ONNX Runtime in "
                      f"{directory.parent} (once per model, shared by every home; ~20 s)")
            manifest = export.export(
                directory, source=self.source, name=self.name, int8=variant == "int8",
                truncate_dim=self.truncate_dim or 0, allow_download=self.allow_download,
                timeout=self.lock_timeout)
        encoder = OnnxEmbedder(directory, manifest, name=self.name,
                               truncate_dim=self.truncate_dim or 0, threads=self.threads,
                               batch_size=self.batch_size, model_file=model_file, bulk=bulk)
        encoder.start()
        return encoder

    def _manifest(self) -> dict | None:
        if self._known_manifest is None:
            from .export import read_manifest

            self._known_manifest = read_manifest(self.onnx_dir)
        return self._known_manifest

    # -- falling back ---------------------------------------------------------------------

    def _drop(self, encoder: Any, exc: Exception) -> None:
        """An ONNX encoder failed (say, a damaged copy): torch does its work from now on."""
        for variant, opened in list(self._onnx.items()):
            if opened is encoder:
                self._onnx[variant] = None
        self._tell(f"{short(exc)}; delete {encoder.directory} to rebuild it")

    def _tell(self, problem: str) -> None:
        if not self._problem_told:
            self._problem_told = True
            self.warn(f"the ONNX encoder is unavailable ({problem}); embedding with torch "
                      "(setting backend = torch silences this)")


def _onnxruntime_present() -> bool:
    try:
        return importlib.util.find_spec("onnxruntime") is not None
    except (ImportError, ValueError):
        return False


def _note_reason(note: Path) -> str:
    import json

    try:
        return str(json.loads(note.read_text())["reason"])[:200]
    except (OSError, ValueError, KeyError, TypeError):
        return "no reason recorded"


def _is_out_of_memory(exc: Exception) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()
