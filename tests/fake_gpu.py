"""A host with a (fake) CUDA GPU for the embedding router: torch's CUDA calls, a model that
fails as told, and the Runtime seam the router loads models through."""

from __future__ import annotations

import numpy as np


class FakeOutOfMemory(RuntimeError):
    """torch.cuda.OutOfMemoryError's stand-in (magray recognises it by name or message)."""


FakeOutOfMemory.__name__ = "OutOfMemoryError"


class FakeCuda:
    def __init__(self, available=True, kernel_error=None):
        self.available, self.kernel_error = available, kernel_error
        self.OutOfMemoryError = FakeOutOfMemory
        self.emptied = 0

    def is_available(self):
        return self.available

    def synchronize(self):
        # CUDA reports a failed kernel launch asynchronously, at the next synchronisation.
        if self.kernel_error:
            raise RuntimeError(self.kernel_error)

    def empty_cache(self):
        self.emptied += 1


class FakeTensor:
    def add_(self, other):
        return self  # launched, not finished: errors would surface at synchronize()


class FakeTorch:
    def __init__(self, cuda):
        self.cuda = cuda

    def set_num_threads(self, count):
        self.threads = count

    def ones(self, size, device):
        return FakeTensor()


class FakeModel:
    """A model "on a GPU": fails as told, and delegates the real work to the CPU model.

    fp16 is imitated by rounding the vectors to float16 (plus ``fp16_noise``); converting to
    fp32 while on the GPU allocates there, which fails when the GPU is ``full``."""

    def __init__(self, cpu_model, device, runtime):
        self.cpu_model, self.device, self.runtime = cpu_model, device, runtime
        self.dtype = "fp32"

    def half(self):
        self.runtime.ops.append("half")
        self.dtype = "fp16"
        return self

    def float(self):
        self.runtime.ops.append(f"float on {self.device}")
        if self.device == "cuda" and self.runtime.full:
            raise FakeOutOfMemory("CUDA out of memory. Tried to allocate 44.00 MiB")
        self.dtype = "fp32"
        return self

    def to(self, device):
        self.runtime.ops.append(f"to {device}")
        self.device = device
        return self

    def get_sentence_embedding_dimension(self):
        return self.cpu_model.get_sentence_embedding_dimension()

    def encode_document(self, texts, batch_size=32, **kw):
        rt = self.runtime
        if self.device == "cuda" and len(texts) > 1:  # not the one-text probes of loading
            rt.batches.append(batch_size)
            if rt.fail_with:
                raise rt.fail_with
            if rt.max_batch is not None and batch_size > rt.max_batch:
                rt.full = True
                raise FakeOutOfMemory("CUDA out of memory. Tried to allocate 2.00 GiB")
        vectors = self.cpu_model.encode_document(texts, batch_size=batch_size, **kw)
        if self.dtype == "fp16":
            noise = np.random.default_rng(0).standard_normal(vectors.shape) * rt.fp16_noise
            vectors = (vectors + noise).astype(np.float16).astype(np.float32)
        return vectors

    encode_query = encode_document


class FakeRuntime:
    """magray.embedding.Runtime for a host with a (fake) CUDA GPU: the seam tests inject."""

    def __init__(self, cpu_model, *, cuda=None, load_error=None, fail_with=None,
                 max_batch=None, fp16_noise=0.0, gpu=True):
        self.torch = FakeTorch(cuda or FakeCuda())
        self.cpu_model, self.load_error, self.gpu = cpu_model, load_error, gpu
        self.fail_with, self.max_batch, self.fp16_noise = fail_with, max_batch, fp16_noise
        self.loads: list[str] = []
        self.ops: list[str] = []
        self.batches: list[int] = []
        self.full = False

    def load(self, source, *, device, truncate_dim, local_files_only):
        self.loads.append(device)
        if device == "cuda" and self.load_error:
            raise RuntimeError(self.load_error)
        return FakeModel(self.cpu_model, device, self)

    def gpu_present(self):
        return self.gpu
