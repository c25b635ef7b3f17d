"""The embedding engine: texts in, normalised float32 vectors out, the model loaded only when
a vector is needed.

    base.py     the ``Embedder`` protocol every backend implements (a leaf)
    resolve.py  which model a setting names, and where ONNX copies are kept
    torch.py    sentence-transformers on torch, on one device: the reference backend
    onnx.py     an ONNX copy on ONNX Runtime: no torch in the process
    export.py   making and checking that copy (in a child process)
    router.py   the configured model: backend and device choice, fallbacks

Importing this package imports neither torch nor ONNX Runtime, nor ``export``/``onnx``.
"""

from ..records import model_key
from .base import Embedder, Warn, normalise, usable_cores
from .resolve import (DEFAULT_MODEL, default_model_roots, onnx_root, resolve_model,
                      shipped_model_dir)
from .router import SMALL_BATCH, Router, TorchPlacement, from_settings
from .torch import (DEFAULT_RUNTIME, Runtime, SentenceTransformerEmbedder, gpu_present,
                    torch_build_has_gpu)

__all__ = [
    "DEFAULT_MODEL", "DEFAULT_RUNTIME", "SMALL_BATCH", "Embedder", "Router", "Runtime",
    "SentenceTransformerEmbedder", "TorchPlacement", "Warn", "default_model_roots",
    "from_settings", "gpu_present", "model_key", "normalise", "onnx_root", "resolve_model",
    "shipped_model_dir", "torch_build_has_gpu", "usable_cores",
]
