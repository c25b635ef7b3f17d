#!/usr/bin/env python3
"""The long crash and concurrency campaign: real `magray` processes, killed and crowded.

    python scripts/torture.py                 # default campaign
    python scripts/torture.py --kills 100 --writers 8 --records 200

Phase 1 kills `magray store -` with SIGKILL at random moments while it stores a large
input, then checks: PRAGMA integrity_check is ok, every acknowledged id (printed before
the kill) is present, the next command leaves every index fresh, vector search agrees
with exact search, and no temporary file is left behind.

Phase 2 runs W writers (`magray store -`, R records each), two search loops and, when the
command exists, a backup, all at once; then checks that every record is present exactly
once, every exit code is 0, no "database is locked" reached a user, and each index agrees
with the database.

It prints what it tried and what held. Uses a throw-away MAGRAY_HOME; needs no network.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAGRAY = [sys.executable, "-m", "magray"]


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "MAGRAY_HOME": str(home), "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(ROOT)}


def run(home: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(MAGRAY + list(args), input=stdin, capture_output=True,
                          env=env_for(home), timeout=900)


def check(home: Path, acknowledged: set[int]) -> list[str]:
    """The invariants after a crash; returns the ones that failed."""
    failed = []
    db_path = home / "data" / "magray.db"
    if not db_path.exists():
        return [] if not acknowledged else ["database missing but ids were acknowledged"]
    db = sqlite3.connect(db_path)
    if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
        failed.append("integrity_check")
    db.close()
    searched = run(home, "search", "note about item 7", "--mode", "vector", "--json",
                   "--no-track", "-k", "5")
    if searched.returncode != 0:
        return failed + [f"next command failed: {searched.stderr.decode()[-300:]}"]
    db = sqlite3.connect(db_path)
    present = {r[0] for r in db.execute("SELECT id FROM records")}
    if not acknowledged <= present:
        failed.append(f"{len(acknowledged - present)} acknowledged records lost")
    texts = [r[0] for r in db.execute("SELECT text FROM records")]
    if len(texts) != len(set(texts)):
        failed.append("a text stored twice")
    db.close()
    from magray import Memory

    with Memory.open(home) as memory:
        for layer in ("interact", "insights", "assets"):
            if memory.recorded_model()[1] and memory.index(layer).staleness():
                failed.append(f"{layer} index still stale: {memory.index(layer).staleness()}")
        hits = [h["id"] for h in json.loads(searched.stdout)]
        if present:
            import numpy as np

            query = memory.embedder.embed_query("note about item 7")
            keys, vectors = memory.db.vectors(sorted(present), memory.dim)
            exact = keys[np.argsort(-(vectors @ query))[:5]].tolist()
            if hits != exact:
                failed.append(f"search {hits} != exact {exact}")
    leftovers = [p.name for p in (home / "data").rglob("*tmp-*")]
    if leftovers:
        failed.append(f"temporary files left: {leftovers}")
    return failed


def with_models(home: Path, models: Path) -> Path:
    """``home`` with the prepared model copies (the ONNX export), so that a kill lands in
    the store itself, not in the one-time export that a fresh home would start with."""
    (home / "data").mkdir(mode=0o700)
    shutil.copytree(models, home / "data" / "models")
    return home


def kill_campaign(kills: int, lines: int, seed: int, models: Path) -> bool:
    rng = random.Random(seed)
    held = True
    print(f"phase 1: {kills} x kill -9 of `magray store -` with {lines} lines")
    text = "".join(f"note {i} about item {i % 97}\n" for i in range(lines)).encode()
    for run_no in range(kills):
        with tempfile.TemporaryDirectory() as tmp:
            home = with_models(Path(tmp), models)
            proc = subprocess.Popen(MAGRAY + ["store", "-"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=env_for(home))
            delay = rng.uniform(1.0, 40.0)
            try:
                proc.stdin.write(text)
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
            out = proc.stdout.read()
            proc.wait()
            acknowledged = {int(x) for x in out.split()}
            failed = check(home, acknowledged)
            state = "killed" if proc.returncode == -signal.SIGKILL else f"exit {proc.returncode}"
            print(f"  run {run_no + 1:3}: {state} after {delay:5.1f}s, "
                  f"{len(acknowledged):5} acknowledged -> {'HELD' if not failed else failed}")
            held &= not failed
    return held


def crowd_campaign(writers: int, records: int, models: Path) -> bool:
    print(f"phase 2: {writers} writers x {records} records, 2 search loops"
          + (", 1 backup" if has_backup() else ""))
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as inputs:
        home = with_models(Path(tmp), models)
        run(home, "store", "warm-up note")  # the schema exists before the crowd arrives
        procs = []
        for w in range(writers):
            data = Path(inputs) / f"writer-{w}.txt"
            data.write_text("".join(f"writer {w} note {i} about item {i % 97}\n"
                                    for i in range(records)))
            with open(data, "rb") as feed:
                procs.append(("store", subprocess.Popen(
                    MAGRAY + ["store", "-"], stdin=feed, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, env=env_for(home))))
        loop = ("for i in $(seq 10); do " + " ".join(MAGRAY) +
                " search \"note about item $i\" --json >/dev/null || exit 1; done")
        for _ in range(2):
            procs.append(("search", subprocess.Popen(["bash", "-c", loop],
                                                     stdout=subprocess.PIPE,
                                                     stderr=subprocess.PIPE, env=env_for(home))))
        if has_backup():
            time.sleep(2)
            procs.append(("backup", subprocess.Popen(MAGRAY + ["backup"], stdout=subprocess.PIPE,
                                                     stderr=subprocess.PIPE, env=env_for(home))))
        failed = []
        for name, proc in procs:
            _, err = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                failed.append(f"{name} exited {proc.returncode}: {err.decode()[-300:]}")
            if b"locked" in err:
                failed.append(f"{name} showed 'locked' to the user")
        db = sqlite3.connect(home / "data" / "magray.db")
        count, distinct = db.execute("SELECT count(*), count(DISTINCT text) FROM records").fetchone()
        db.close()
        expected = writers * records + 1
        if (count, distinct) != (expected, expected):
            failed.append(f"{count} records ({distinct} distinct), expected {expected}")
        failed += check(home, set())
        print(f"  {count} records stored by {writers} writers -> "
              f"{'HELD' if not failed else failed}")
        return not failed


def has_backup() -> bool:
    return subprocess.run(MAGRAY + ["backup", "--help"], capture_output=True,
                          env=env_for(Path(tempfile.gettempdir()))).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--lines", type=int, default=8000)  # several windows: partial commits
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as template:
        print("preparing the model copy (the ONNX export, once)...", flush=True)
        done = run(Path(template), "store", "a note that makes the model copy")
        if done.returncode:
            sys.exit(f"cannot prepare a home: {done.stderr.decode()[-500:]}")
        models = Path(template) / "data" / "models"
        ok = kill_campaign(args.kills, args.lines, args.seed, models)
        ok &= crowd_campaign(args.writers, args.records, models)
    print("ALL INVARIANTS HELD" if ok else "SOME INVARIANTS FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
