"""Assertions shared by tests in several folders."""

from magray.records import LAYERS


def in_step(memory):
    """Every index agrees with the database without a repair (an empty layer may have none)."""
    for layer in LAYERS:
        index = memory.index(layer)
        if index.state() is None and memory.db.count(layer) == 0:
            continue
        assert index.staleness() == "", layer
        assert index.state().count == memory.db.count(layer), layer
