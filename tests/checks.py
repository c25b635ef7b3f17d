"""Assertions shared by tests in several folders."""

from magray.index import EngineIndex
from magray.records import LAYERS


def in_step(memory):
    """Every index agrees with the database without a repair (an empty layer may have none).
    An engine's own index (pgvector) holds what the database holds by construction: it
    only has to exist with the configured settings."""
    for layer in LAYERS:
        index = memory.index(layer)
        if isinstance(index, EngineIndex):
            assert index.staleness() == "" or memory.db.count(layer) == 0, layer
            continue
        if index.state() is None and memory.db.count(layer) == 0:
            continue
        assert index.staleness() == "", layer
        assert index.state().count == memory.db.count(layer), layer
