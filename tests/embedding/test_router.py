"""The router: which backend embeds what (ONNX for queries, torch for bulk work on a GPU),
where torch runs (a fake CUDA GPU: tests/fake_gpu.py), and every fallback."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
from fake_gpu import FakeCuda, FakeRuntime

from magray import config
from magray.embedding import SMALL_BATCH, Router, export, from_settings

TEXTS = ["a note about sailing", "how to restart nginx", "tax forms are due in april"]
BULK = [f"bulk note {n} about the nightly deploy" for n in range(SMALL_BATCH + 1)]


def agree(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.atleast_2d(a) * np.atleast_2d(b)).sum(axis=1).min())


def no_torch_queries(monkeypatch, embedder: Router) -> None:
    monkeypatch.setattr(embedder.torch, "embed_query",
                        lambda text: pytest.fail("a query went to torch"))


# -- the default: backend auto, device auto -------------------------------------------------

def test_the_default_settings_make_an_auto_router(tmp_path):
    embedder = from_settings(config.defaults(), tmp_path / "data")
    assert isinstance(embedder, Router)
    assert (embedder.backend, embedder.requested_device) == ("auto", "auto")
    assert embedder.key == "all-MiniLM-L6-v2" and not embedder.torch.loaded
    assert embedder.device is None  # nothing loaded, nothing chosen yet


def test_auto_on_a_cpu_host_embeds_everything_with_onnx(make_router, onnx_root, real_embedder):
    runtime = FakeRuntime(real_embedder.model, gpu=False, cuda=FakeCuda(available=False))
    embedder, warnings = make_router(onnx_root, backend="auto", device="auto", runtime=runtime)
    query = embedder.embed_query(TEXTS[0])
    small, bulk = embedder.embed_documents(TEXTS), embedder.embed_documents(BULK)
    assert runtime.loads == [] and not embedder.torch.loaded and not warnings
    assert embedder.dim == 384 and embedder.device is None
    assert agree(query, real_embedder.embed_query(TEXTS[0])) >= 0.999
    assert agree(small, real_embedder.embed_documents(TEXTS)) >= 0.999
    assert agree(bulk, real_embedder.embed_documents(BULK)) >= 0.999


def test_auto_on_a_gpu_host_queries_with_onnx_and_bulk_documents_with_torch_on_cuda(
        make_router, onnx_root, real_embedder, monkeypatch):
    runtime = FakeRuntime(real_embedder.model)
    embedder, warnings = make_router(onnx_root, backend="auto", device="auto", runtime=runtime)
    embedder.embed_documents(TEXTS)  # a small batch: ONNX, torch stays unloaded
    assert runtime.loads == [] and embedder.embed_query(TEXTS[0]).shape == (384,)
    bulk = embedder.embed_documents(BULK)
    assert runtime.loads == ["cuda"] and runtime.batches == [64]
    assert (embedder.device, embedder.precision, warnings) == ("cuda", "fp16", [])
    embedder.embed_documents(TEXTS)  # torch is loaded now: one backend for documents
    assert runtime.batches == [64, 64]
    no_torch_queries(monkeypatch, embedder)
    # documents made in fp16 on the GPU and queries made by ONNX share one vector space
    assert agree(embedder.embed_query(BULK[0]), bulk[0]) >= 0.999


@pytest.mark.parametrize("device, gpu, bulk_on", [
    ("auto", False, "onnx"), ("auto", True, "torch"), ("cpu", True, "onnx"),
    ("cuda", False, "torch"),
])
def test_bulk_work_goes_to_torch_only_where_it_can_use_a_gpu(make_router, onnx_root,
                                                             real_embedder, device, gpu,
                                                             bulk_on):
    runtime = FakeRuntime(real_embedder.model, gpu=gpu)
    embedder, _ = make_router(onnx_root, backend="auto", device=device, runtime=runtime)
    embedder.embed_documents(BULK)
    assert embedder.torch.loaded == (bulk_on == "torch")
    assert runtime.loads == (["cuda"] if bulk_on == "torch" else [])


def test_backend_torch_never_opens_onnx(make_router, tmp_path, real_embedder):
    runtime = FakeRuntime(real_embedder.model)
    embedder, warnings = make_router(tmp_path / "onnx", backend="torch", device="cpu",
                                     runtime=runtime)
    embedder.prepare_query()
    vector = embedder.embed_query(TEXTS[0])
    embedder.embed_documents(TEXTS)
    assert runtime.loads == ["cpu"] and embedder._onnx == {} and not warnings
    assert not (tmp_path / "onnx").exists()
    assert agree(vector, real_embedder.embed_query(TEXTS[0])) >= 0.9999


def test_one_placement_per_process(make_router, onnx_root, real_embedder):
    """A second router of the same configuration neither reloads nor warns again."""
    runtime = FakeRuntime(real_embedder.model, load_error="CUDA error: out of resources")
    first, warnings = make_router(onnx_root, backend="torch", device="auto", runtime=runtime)
    first.embed_documents(TEXTS)
    second, again = make_router(onnx_root, backend="torch", device="auto", runtime=runtime)
    second.embed_documents(TEXTS)
    assert runtime.loads == ["cuda", "cpu"] and len(warnings) == 1 and again == []
    assert second.device == "cpu" and second.fallback_reason == first.fallback_reason


# -- ONNX fallbacks: torch answers after one warning ----------------------------------------

class BrokenOnnx:
    """An ONNX encoder whose copy is damaged: it opens, then fails on use."""

    def __init__(self, directory):
        self.directory, self.calls = directory, 0

    def embed_query(self, text):
        self.calls += 1
        raise RuntimeError("ONNXRuntimeError: [ONNXRuntimeError] : 1 : FAIL : Load model")

    embed_documents = lengths = embed_query


def test_a_failing_onnx_encoder_hands_both_roles_to_torch(make_router, tmp_path, real_embedder,
                                                           monkeypatch):
    runtime = FakeRuntime(real_embedder.model)
    embedder, warnings = make_router(tmp_path, backend="auto", device="cpu", runtime=runtime)
    opened: list[BrokenOnnx] = []
    monkeypatch.setattr(embedder, "_open_onnx",
                        lambda variant, bulk: opened.append(BrokenOnnx(tmp_path)) or opened[-1])
    assert embedder.lengths(["abc", "a"]) == [3, 1]  # characters, as torch sorts by
    vector = embedder.embed_query("find my notes")
    documents = embedder.embed_documents(TEXTS)
    embedder.embed_query("and again")
    assert len(opened) == 1 and opened[0].calls == 2  # lengths, then the query: dropped
    assert runtime.loads == ["cpu"] and embedder._onnx == {"query": None}
    assert len(warnings) == 1 and "FAIL : Load model" in warnings[0]
    assert "to rebuild it" in warnings[0]
    assert agree(vector, real_embedder.embed_query("find my notes")) >= 0.9999
    assert agree(documents, real_embedder.embed_documents(TEXTS)) >= 0.9999


def test_cuda_failure_in_bulk_work_keeps_queries_on_onnx(make_router, onnx_root, real_embedder,
                                                         monkeypatch):
    runtime = FakeRuntime(real_embedder.model,
                          fail_with=RuntimeError("CUDA error: an illegal memory access"))
    embedder, warnings = make_router(onnx_root, backend="auto", device="auto", runtime=runtime)
    bulk = embedder.embed_documents(BULK)
    assert embedder.device == "cpu" and runtime.loads == ["cuda"]
    assert len(warnings) == 1 and "embedding on CUDA failed" in warnings[0]
    assert embedder.fallback_reason.startswith("embedding on CUDA failed")
    no_torch_queries(monkeypatch, embedder)
    assert agree(embedder.embed_query(BULK[0]), bulk[0]) >= 0.999


def test_auto_uses_onnx_for_queries_and_torch_stays_unloaded(make_router, onnx_root):
    embedder, warnings = make_router(onnx_root, backend="auto")
    embedder.prepare_query()
    embedder.embed_query("where is the deploy script")
    embedder.embed_documents(["a small store"])
    assert not embedder.torch.loaded and not warnings
    assert embedder.dim == 384  # from the manifest, without loading torch


def test_without_onnxruntime_torch_answers_after_one_warning(make_router, tmp_path, monkeypatch,
                                                             real_embedder):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    embedder, warnings = make_router(tmp_path / "onnx", backend="auto")
    first = embedder.embed_query("find my notes")
    embedder.embed_query("and again")
    embedder.embed_documents(["one document"])
    assert float(first @ real_embedder.embed_query("find my notes")) > 0.9999
    assert len(warnings) == 1 and "onnxruntime is not installed" in warnings[0]
    assert not (tmp_path / "onnx").exists()  # nothing was exported


def test_failed_export_is_remembered_and_torch_answers(make_router, tmp_path, monkeypatch,
                                                       real_embedder):
    embedder, _ = make_router(tmp_path)
    note = export.failure_note(embedder.onnx_dir)
    note.parent.mkdir(parents=True, exist_ok=True)
    note.write_text('{"reason": "this model cannot be traced"}')
    monkeypatch.setattr(export, "export", lambda *a, **k: pytest.fail("tried again"))
    auto, warnings = make_router(tmp_path, backend="auto")
    vector = auto.embed_query("find my notes")
    auto.embed_documents(["and a document"])
    assert float(vector @ real_embedder.embed_query("find my notes")) > 0.9999
    assert len(warnings) == 1 and "cannot be traced" in warnings[0]
    assert "failed before" in warnings[0] and "delete" in warnings[0]


def test_damaged_copy_falls_back_to_torch(make_router, tmp_path, onnx_root, real_embedder):
    shutil.copytree(onnx_root, tmp_path / "onnx")
    (data,) = (tmp_path / "onnx").glob("*/model.onnx.data")
    data.write_bytes(data.read_bytes()[:1000])
    embedder, warnings = make_router(tmp_path / "onnx")
    vector = embedder.embed_query("find my notes")
    assert float(vector @ real_embedder.embed_query("find my notes")) > 0.9999
    assert len(warnings) == 1 and "to rebuild it" in warnings[0]


def test_making_the_copy_is_announced(make_router, tmp_path, monkeypatch):
    def slow_export(directory, **job):
        raise export.ExportError("stopped here")

    monkeypatch.setattr(export, "export", slow_export)
    notes: list[str] = []
    embedder, warnings = make_router(tmp_path / "onnx", backend="auto", note=notes.append)
    embedder.embed_query("find my notes")
    assert len(notes) == 1 and "making a copy of the model all-MiniLM-L6-v2" in notes[0]
    assert str(tmp_path / "onnx") in notes[0] and "stopped here" in warnings[0]


# -- torch's device: CUDA when it really works, the CPU after any CUDA failure --------------

@pytest.fixture
def fake_gpu(make_router, tmp_path, real_embedder):
    """fake_gpu(device, **runtime options) -> (router, warnings, runtime): backend torch on a
    fake CUDA host, so every document goes through the torch placement."""
    def make(device="auto", batch_size=64, **options):
        runtime = FakeRuntime(real_embedder.model, **options)
        embedder, warnings = make_router(tmp_path / "onnx", backend="torch", device=device,
                                         runtime=runtime, batch_size=batch_size)
        return embedder, warnings, runtime
    return make


def test_no_cuda_on_auto_is_silent(make_router, tmp_path):
    embedder, warnings = make_router(tmp_path, backend="torch", device="auto")
    embedder.embed_documents(TEXTS)
    assert embedder.device == "cpu" and warnings == []
    assert embedder.fallback_reason == "no CUDA device is available"


def test_cuda_is_used_in_fp16_when_its_vectors_agree(fake_gpu, real_embedder):
    embedder, warnings, runtime = fake_gpu()
    vectors = embedder.embed_documents(TEXTS)
    assert (embedder.device, embedder.precision, runtime.loads) == ("cuda", "fp16", ["cuda"])
    assert warnings == [] and "half" in runtime.ops
    agreement = (vectors * real_embedder.embed_documents(TEXTS)).sum(axis=1)
    assert agreement.min() >= 0.999  # the vector space the recorded model names


def test_fp16_that_disagrees_with_fp32_keeps_cuda_in_fp32(fake_gpu, real_embedder):
    embedder, warnings, runtime = fake_gpu(fp16_noise=0.02)
    vectors = embedder.embed_documents(TEXTS)
    assert (embedder.device, embedder.precision) == ("cuda", "fp32")
    assert runtime.ops == ["half", "float on cuda"]
    assert len(warnings) == 1 and "embedding in fp32 on CUDA" in warnings[0]
    assert np.allclose(vectors, real_embedder.embed_documents(TEXTS), atol=1e-5)


def test_cuda_probe_waits_for_its_kernel(fake_gpu):
    cuda = FakeCuda(kernel_error="CUDA error: no kernel image is available for execution")
    embedder, warnings, runtime = fake_gpu(cuda=cuda)
    assert embedder.embed_documents(TEXTS).shape == (3, 384)
    assert embedder.device == "cpu" and runtime.loads == ["cpu"]
    assert len(warnings) == 1 and "CUDA is present but does not work" in warnings[0]


def test_cuda_present_but_unavailable_falls_back(fake_gpu):
    embedder, warnings, runtime = fake_gpu(device="cuda", cuda=FakeCuda(available=False))
    embedder.embed_documents(TEXTS)
    assert embedder.device == "cpu" and runtime.loads == ["cpu"]
    assert len(warnings) == 1 and "no CUDA device is available; using the CPU" in warnings[0]


def test_load_failure_on_cuda_falls_back(fake_gpu):
    embedder, warnings, runtime = fake_gpu(
        load_error="CUDA error: no kernel image is available for execution")
    assert embedder.embed_documents(TEXTS).shape == (3, 384)
    assert embedder.device == "cpu" and runtime.loads == ["cuda", "cpu"]
    assert len(warnings) == 1 and "loading on CUDA failed (CUDA error: no kernel" in warnings[0]


def test_encode_failure_on_cuda_falls_back_with_same_vectors(fake_gpu, real_embedder):
    embedder, warnings, runtime = fake_gpu(
        fail_with=RuntimeError("CUDA error: an illegal memory access was encountered"))
    vectors = embedder.embed_documents(TEXTS)
    again = embedder.embed_documents(TEXTS)
    assert embedder.device == "cpu" and len(warnings) == 1
    assert "embedding on CUDA failed" in warnings[0]
    assert np.allclose(vectors, real_embedder.embed_documents(TEXTS), atol=1e-5)
    assert np.allclose(again, vectors)


def test_out_of_memory_halves_the_batch(fake_gpu):
    embedder, warnings, runtime = fake_gpu(max_batch=8)
    assert embedder.embed_documents(TEXTS).shape == (3, 384)
    assert runtime.batches == [64, 32, 16, 8] and runtime.torch.cuda.emptied >= 3
    assert embedder.device == "cuda" and warnings == []


def test_out_of_memory_at_batch_one_moves_off_the_gpu_before_converting(fake_gpu, real_embedder):
    embedder, warnings, runtime = fake_gpu(max_batch=0, batch_size=4)
    vectors = embedder.embed_documents(TEXTS)
    assert runtime.batches == [4, 2, 1] and embedder.device == "cpu" and len(warnings) == 1
    # the fp16 model went to the CPU and became fp32 there, not on the full GPU
    assert runtime.ops[-2:] == ["to cpu", "float on cpu"] and runtime.loads == ["cuda"]
    assert np.allclose(vectors, real_embedder.embed_documents(TEXTS), atol=1e-5)
