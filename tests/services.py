"""The services of one memory without a ``Memory``: a real repository (SQLite file), the real
layer indexes (usearch files) and an Encoder on the fake embedder, for unit tests of the
services that receive them (lifecycle, maintenance, dedupe)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Iterator

from fakes import FakeEmbedder
from magray import clock, config
from magray.db.store import Store
from magray.encoder import Encoder
from magray.index import Indexes
from magray.paths import Paths
from magray.records import NewRecord, Record


@dataclass
class Services:
    store: Store
    indexes: Indexes
    encoder: Encoder
    settings: config.Settings
    paths: Paths

    def add(self, text: str, layer: str = "interact", *, ago: timedelta = timedelta(hours=1),
            accesses: int = 0, accessed_ago: timedelta | None = None, **fields) -> int:
        """Store one text as the write path would (its model recorded with its vector),
        created ``ago`` before now, accessed ``accesses`` times, last ``accessed_ago``."""
        now = clock.now()
        vector = self.encoder.vectors([text], "document")[0]
        item = NewRecord(text=text, layer=layer, created_at=clock.iso(now - ago), **fields)
        with self.store.write() as tx:
            self.encoder.record_model(tx, len(vector), self.encoder.embedder.key)
            record_id, _ = self.store.insert(tx, item, vector, clock.iso(now - ago))
            if accesses or accessed_ago is not None:
                record = self.store.records([record_id])[record_id]
                last = clock.iso(now - accessed_ago) if accessed_ago is not None else None
                self.store.update_metadata(tx, replace(record, access_count=accesses,
                                                       last_access=last))
        return record_id

    def get(self, record_id: int) -> Record | None:
        return self.store.records([record_id]).get(record_id)

    # what tests/checks.py's in_step reads of a memory
    @property
    def db(self) -> Store:
        return self.store

    def index(self, layer: str):
        return self.indexes.layer(layer)


@contextmanager
def services(home: Path, embedder: FakeEmbedder | None = None, **settings
             ) -> Iterator[Services]:
    where = Paths(data=home / "data", config_file=home / "config.toml",
                  backups=home / "backups")
    where.ensure()
    chosen = config.defaults().replace(**settings)
    store = Store.open(where.database)
    encoder = Encoder(store, chosen, where, embedder or FakeEmbedder())
    indexes = Indexes(store, chosen, where, dim=lambda: encoder.dim)
    try:
        yield Services(store, indexes, encoder, chosen, where)
    finally:
        store.close()
