"""magray/maintenance.py as a service: optimize and re-embed against a real repository and
real indexes, without a Memory (the CLI and Memory paths are tested in test_lifecycle.py)."""

from fakes import FakeEmbedder
from magray import maintenance
from magray.encoder import Encoder
from services import services


def test_optimize_rebuilds_the_indexes_prunes_orphans_and_keeps_every_record(tmp_path):
    with services(tmp_path) as s:
        ids = [s.add(f"note {n} about the printer on floor {n % 3}") for n in range(30)]
        s.indexes.sync()
        with s.store.write() as tx:
            s.store.delete(tx, ids[:10])
        s.indexes.sync()
        vector = s.encoder.vectors(["x"], "document")[0]
        with s.store.write() as tx:  # a foreign model's cached vector can never be read
            s.store.cache_vectors(tx, "other|document", [("h", vector)],
                                  "2030-01-01T00:00:00.000000Z")
        report = maintenance.optimize(s.store, s.indexes, s.encoder, s.settings)
        assert [(c.layer, c.records) for c in report.indexes] == \
            [("interact", 20), ("insights", 0), ("assets", 0)]
        assert report.orphans["index_log"] > 0 and report.orphans["embed_cache"] == 1
        assert report.fts == "optimized"
        assert sorted(s.store.records(ids)) == ids[10:]
        assert s.indexes.layer("interact").open_view().contains(ids[10])
        in_step(s)


def test_reembed_switches_every_vector_to_the_new_model_at_once(tmp_path):
    with services(tmp_path, embedder=FakeEmbedder(dim=64, name="old")) as s:
        ids = [s.add(f"note {n} about cables") for n in range(7)]
        new = Encoder(s.store, s.settings, s.paths, FakeEmbedder(dim=32, name="new"))
        assert maintenance.pending_reembed(s.store, new) == 7
        report = maintenance.reembed_all(s.store, new)
        assert (report.embedded, report.resumed, report.dim, report.previous_dim) == (7, 0, 32, 64)
        assert s.store.model_meta() == (new.embedder.key, 32)
        keys, vectors = s.store.vectors(ids, 32)
        assert sorted(keys.tolist()) == ids and vectors.shape == (7, 32)
        assert maintenance.pending_reembed(s.store, new) == 0


def test_an_interrupted_reembed_resumes_where_it_stopped(tmp_path, monkeypatch):
    with services(tmp_path, embedder=FakeEmbedder(dim=64, name="old")) as s:
        for n in range(5):
            s.add(f"note {n} about cables")
        new = Encoder(s.store, s.settings, s.paths, FakeEmbedder(dim=32, name="new"))
        monkeypatch.setattr(maintenance, "REEMBED_BATCH", 2)

        def killed(count):
            raise KeyboardInterrupt

        try:
            maintenance.reembed_all(s.store, new, progress=killed)
        except KeyboardInterrupt:
            pass
        assert s.store.model_meta()[0] == s.encoder.embedder.key  # not switched yet
        assert maintenance.pending_reembed(s.store, new) == 3
        report = maintenance.reembed_all(s.store, new)
        assert (report.embedded, report.resumed) == (3, 2)
        assert s.store.model_meta() == (new.embedder.key, 32)


def in_step(s):
    from checks import in_step as check

    check(s)
