"""What a killed restore or backup leaves in the data directory is removed by the next command
that opens the memory, and never what a live process is still using."""

from __future__ import annotations

import os
import subprocess
import sys

from fakes import FakeEmbedder
from magray import Memory


def test_opening_the_memory_removes_a_dead_restores_stage_but_not_a_live_ones(home):
    with Memory.open(home, embedder=FakeEmbedder()) as memory:
        data = memory.paths.data
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    gone = data / f".restore-{int(dead.stdout)}-abc"
    live = data / f".restore-{os.getppid()}-def"  # our parent: alive while we run
    for stage in (gone, live):
        (stage / "indexes").mkdir(parents=True)
        (stage / "magray.db").write_bytes(b"a staged copy")
    with Memory.open(home, embedder=FakeEmbedder()):
        pass
    assert not gone.exists()
    assert (live / "magray.db").read_bytes() == b"a staged copy"
