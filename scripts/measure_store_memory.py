#!/usr/bin/env python3
"""Peak memory of `magray store -` fed a long pipe: the real CLI and model, N generated
distinct lines, a throw-away MAGRAY_HOME. Also measures storing one line, so the difference
is what the stream itself costs on top of the model.

    python scripts/measure_store_memory.py --lines 100000

Prints, for each run: lines, wall seconds, peak RSS of the magray process (MB).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("deploy cache index query vector layer backup restore shell pipe config model token "
         "budget meeting kernel socket thread render schema migrate bastion rollout").split()


def lines(count: int, seed: int = 7):
    rng = random.Random(seed)
    for n in range(count):
        yield f"note {n}: {' '.join(rng.choices(WORDS, k=8))}\n".encode()


def run(count: int) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one `magray store -` of ``count`` lines."""
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "MAGRAY_HOME": home, "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": str(ROOT)}
        start = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "magray", "store", "-"],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
        for line in lines(count):
            process.stdin.write(line)
        process.stdin.close()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            sys.exit(f"magray store exited with {process.returncode}")
        return time.monotonic() - start, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    count = parser.parse_args().lines
    for n in (1, count):
        seconds, peak = run(n)
        print(f"{n:>8} lines  {seconds:8.1f} s  peak RSS {peak:8.1f} MB", flush=True)


if __name__ == "__main__":
    main()
