"""The real `magray` command line with the deterministic fake embedder, for the fault tests.

    fault_driver.py ARGS...     behaves as `magray ARGS...` (same output, same exit codes)

No model is loaded, so a subprocess starts in a fraction of a second and a kill lands in
magray's own work. The configured ``truncate_dim`` picks the fake model's dimension (and so
its key), so that `magray config set truncate_dim N` then `optimize --reembed` re-embeds, as
with the real model.

Kill points: every SQL statement and every os.replace, rename, link, unlink and fsync is an
event. With FAULT_KILL_AT=N the process sends itself SIGKILL just before its N-th event (a
real kill -9: no cleanup, no flush); FAULT_EVENTS=FILE writes the number of events to FILE
at a normal exit, so a test can spread its kills over a command's whole run.
"""

import atexit
import os
import signal
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes import FakeEmbedder  # noqa: E402

import magray.encoder  # noqa: E402
import magray.memory  # noqa: E402
from magray.embedding import model_key  # noqa: E402

KILL_AT = int(os.environ.get("FAULT_KILL_AT") or 0)
events = 0


def event(*_: object) -> None:
    global events
    events += 1
    if events == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


def counted(function):
    def wrapper(*args, **kwargs):
        event()
        return function(*args, **kwargs)
    return wrapper


def traced_connect(*args, **kwargs):
    conn = real_connect(*args, **kwargs)
    conn.set_trace_callback(event)
    return conn


def fake_from_settings(settings, data_dir, warn=None, **_):
    # Named as the configured model would be, so that `magray status` sees no mismatch.
    dim = settings.truncate_dim or 128
    return FakeEmbedder(dim=dim, name=model_key(settings.model, settings.truncate_dim))


def report_events(path: str) -> None:
    Path(path).write_text(str(events))


if __name__ == "__main__":
    magray.encoder.from_settings = fake_from_settings  # the one loading...
    magray.memory.from_settings = fake_from_settings  # ...and the one restoring
    real_connect = sqlite3.connect
    sqlite3.connect = traced_connect
    for name in ("replace", "rename", "link", "unlink", "fsync"):
        setattr(os, name, counted(getattr(os, name)))
    if os.environ.get("FAULT_EVENTS"):
        atexit.register(report_events, os.environ["FAULT_EVENTS"])
    from magray.cli import main

    main(sys.argv[1:])
