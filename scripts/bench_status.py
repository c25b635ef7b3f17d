#!/usr/bin/env python3
"""How fast is `magray status` on a large memory? Builds one (once) and times the CLI.

    python scripts/bench_status.py [--records 100000] [--home DIR] [--runs 5]

The memory is built through the library (``Memory.store``: database, embedding cache,
indexes and operation log, exactly as `magray store` writes them) with the tests' fake
embedder (tests/fakes.py: 384-dimensional bag-of-words vectors), so no model is loaded.
Each command then runs ``--runs`` times in a fresh interpreter; the median wall time is
printed beside ``python -c pass`` measured in the same run, which is the floor any Python
command pays.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fakes import FakeEmbedder  # noqa: E402
from magray import Memory, NewRecord  # noqa: E402

LAYER_SHARE = (("interact", 0.08), ("insights", 0.30), ("assets", 0.62))


def build(home: Path, records: int) -> None:
    with Memory.open(home, embedder=FakeEmbedder(384)) as memory:
        for layer, share in LAYER_SHARE:
            count = int(records * share)
            items = [NewRecord(text=f"{layer} note {n}: synthetic text for the status benchmark",
                               layer=layer, tags=("bench",)) for n in range(count)]
            started = time.perf_counter()
            memory.store(items)
            print(f"stored {count:,} in {layer} in {time.perf_counter() - started:.1f} s",
                  file=sys.stderr)
        for n in range(50):  # some searches, so the operation figures are not empty
            memory.search(f"note {n}", top_k=5)


def timed(argv: list[str], env: dict, runs: int) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        result = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
        code = result.returncode
    return statistics.median(times), code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--home", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="magray-bench-"))
    if not (home / "data" / "magray.db").exists():
        build(home, args.records)
    env = {**os.environ, "MAGRAY_HOME": str(home), "PYTHONPATH": str(ROOT),
           "MAGRAY_MODEL": FakeEmbedder().name}
    py = sys.executable
    print(f"home: {home}")
    for label, argv in (("python -c pass", [py, "-c", "pass"]),
                        ("python -m magray status", [py, "-m", "magray", "status"]),
                        ("python -m magray status --json", [py, "-m", "magray", "status",
                                                            "--json"]),
                        ("python -m magray status --prometheus", [py, "-m", "magray", "status",
                                                                  "--prometheus"])):
        seconds, code = timed(argv, env, args.runs)
        print(f"{label:40s} median {seconds * 1000:7.0f} ms of {args.runs} (exit {code})")
    from magray import config, health

    settings = config.load(None, environ=env)
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        health.check(home, settings=settings)
        times.append(time.perf_counter() - started)
    print(f"{'health.check() in this process':40s} median "
          f"{statistics.median(times) * 1000:7.0f} ms of {args.runs}")


if __name__ == "__main__":
    main()
