"""Helpers for the shell-citizen tests: a fake model behind the CLI, and real subprocesses."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from fakes import FakeEmbedder

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake_model(monkeypatch) -> FakeEmbedder:
    """Make every Memory the CLI opens use the deterministic FakeEmbedder: for CLI
    behaviour that is not about meaning, without loading the real model."""
    import magray.encoder
    import magray.memory

    embedder = FakeEmbedder()
    for module in (magray.encoder, magray.memory):  # the one loading, the one restoring
        monkeypatch.setattr(module, "from_settings", lambda *args, **kwargs: embedder)
    return embedder


def env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a real ``python -m magray`` of this worktree, off any terminal."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MAGRAY_") and k not in ("NO_COLOR", "TERM")}
    return {**clean, "PYTHONPATH": str(ROOT), "MAGRAY_HOME": str(home), "HF_HUB_OFFLINE": "1",
            **extra}


def magray(home: Path, *args: str, stdin: bytes = b"", **extra: str
           ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "magray", *args], input=stdin,
                          capture_output=True, env=env(home, **extra), timeout=120)


def on_a_terminal(home: Path, *args: str, columns: int = 120, **extra: str
                  ) -> tuple[int, bytes]:
    """Run magray with stdout and stderr on a pseudo-terminal: (exit code, what it printed)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "magray", *args], stdin=subprocess.DEVNULL,
                               stdout=follower, stderr=follower,
                               env=env(home, TERM="xterm-256color", COLUMNS=str(columns),
                                       **extra))
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        try:
            chunk = os.read(leader, 65536) if ready else b""
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(timeout=60), b"".join(chunks)
