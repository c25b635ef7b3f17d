"""The Encoder on its own (a real store, the fake embedder): the embedding cache counts its
hits and misses, query vectors are kept in process, and another model is refused."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import FakeEmbedder

from magray import config, paths
from magray.encoder import Encoder
from magray.errors import ModelMismatchError
from magray.db.base import Op
from magray.db.store import Store


@pytest.fixture
def store(tmp_path):
    store = Store.open(tmp_path / "magray.db")
    yield store
    store.close()


def encoder_for(store: Store, tmp_path, embedder: FakeEmbedder | None = None) -> Encoder:
    return Encoder(store, config.load(None), paths.resolve(tmp_path), embedder or FakeEmbedder())


def test_cache_hits_and_misses_are_counted_and_misses_embedded_once(store, tmp_path):
    encoder = encoder_for(store, tmp_path)
    first = Op("store", 0.0)
    vectors = encoder.vectors(["alpha", "beta", "alpha"], "document", first)
    assert (first.cache_hits, first.cache_misses) == (0, 2)  # the same text embedded once
    assert np.allclose(vectors, encoder.embedder.embed_documents(["alpha", "beta", "alpha"]))
    assert encoder.recorded_model() == ("fake-bow", 128)  # recorded with the first vectors
    again = Op("store", 0.0)
    calls = encoder.embedder.calls
    assert np.allclose(encoder.vectors(["beta", "gamma"], "document", again)[0], vectors[1])
    assert (again.cache_hits, again.cache_misses) == (1, 1)
    assert encoder.embedder.calls == calls + 1  # gamma alone
    # A new process (a new Encoder on the same database) finds them in the cache.
    fresh = encoder_for(store, tmp_path)
    later = Op("search", 0.0)
    fresh.vectors(["alpha", "beta", "gamma"], "document", later)
    assert (later.cache_hits, later.cache_misses) == (3, 0)
    assert fresh.embedder.calls == 0


def test_a_query_vector_is_kept_in_process(store, tmp_path, monkeypatch):
    encoder = encoder_for(store, tmp_path)
    encoder.vectors(["a stored note"], "document")  # a memory with a recorded model
    vector, loading = encoder.query_vector("boats on the sea")
    assert loading  # not cached anywhere yet: the model is needed
    first = vector()
    assert np.allclose(first, encoder.embedder.embed_query("boats on the sea"))
    monkeypatch.setattr(store, "cached_vectors", lambda *a, **k: pytest.fail("SQLite read"))
    op = Op("search", 0.0)
    vector, loading = encoder.query_vector("boats on the sea", op)
    assert not loading and np.array_equal(vector(), first) and op.cache_hits == 1
    assert encoder.recent_queries() == ["boats on the sea"]
    encoder.forget_query("boats on the sea")
    monkeypatch.undo()
    vector, loading = encoder.query_vector("boats on the sea")  # from the SQLite cache now
    assert not loading and np.array_equal(vector(), first)


def test_another_model_is_refused_with_the_same_message(store, tmp_path):
    encoder_for(store, tmp_path).vectors(["made by the first model"], "document")
    other = encoder_for(store, tmp_path, FakeEmbedder(name="other-model"))
    with pytest.raises(ModelMismatchError) as refused:
        other.check_model()
    assert str(refused.value) == (
        "this memory was embedded with fake-bow (128 dimensions) but the configured model is "
        "other-model; run `magray optimize --reembed` to re-embed it, or set the model back")
    with pytest.raises(ModelMismatchError, match="meanwhile, but these vectors come from "
                       r"other-model \(64 dimensions\); nothing was stored from this batch"):
        with store.write() as tx:
            other.record_model(tx, 64, "other-model")
    narrow = encoder_for(store, tmp_path, FakeEmbedder(dim=64))
    with pytest.raises(ModelMismatchError, match="makes 64-dimensional vectors but this "
                       "memory holds 128-dimensional ones"):
        narrow.vectors(["a new text"], "document")
    assert store.model_meta() == ("fake-bow", 128)  # nothing recorded by the refused ones


def test_one_search_reads_the_recorded_model_once(store, tmp_path, monkeypatch):
    encoder = encoder_for(store, tmp_path)
    encoder.vectors(["a stored note"], "document")
    reads: list = []
    real = store.model_meta
    monkeypatch.setattr(store, "model_meta", lambda *a: reads.append(a) or real(*a))
    with encoder.pinned():
        for _ in range(3):
            assert encoder.recorded_model() == ("fake-bow", 128) and encoder.dim == 128
    assert len(reads) == 1
    encoder.recorded_model()  # unpinned again: read afresh
    assert len(reads) == 2
