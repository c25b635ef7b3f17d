#!/usr/bin/env python3
"""Start-up of two magray checkouts, interleaved: `magray --help` and a cold search of a new
query, each run alternately in random order so both see the same machine, timed as wall
clock and as the child's CPU. Issue 17's "help and cold within 10%" was measured with it:

    python scripts/compare_startup.py --runs 21 \\
        before=/path/to/old-checkout:/tmp/bench-before/home-20000-f32 \\
        after=.:/tmp/bench-main/home-20000-f32

Each checkout needs its own .venv (with magray installed from it) and compiled bytecode
(`python -m compileall -q magray`; a tree without it pays ~20% at start-up). A home is one
scripts/bench.py made (its MAGRAY_CACHE, holding the ONNX copy, is the home's parent's
magray-cache). One untimed search per side first makes that install's ONNX copy.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import time
from pathlib import Path

KINDS = ("pass", "help", "cold")


def timed(argv: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def side(spec: str) -> tuple[str, Path, Path]:
    name, _, rest = spec.partition("=")
    tree, _, home = rest.partition(":")
    return name, Path(tree).resolve(), Path(home).resolve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sides", nargs=2, metavar="NAME=TREE:HOME")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    sides = [side(s) for s in args.sides]
    env_of = {name: {**os.environ, "HF_HUB_OFFLINE": "1", "MAGRAY_HOME": str(home),
                     "MAGRAY_CACHE": str(home.parent / "magray-cache")}
              for name, _, home in sides}
    nonce = time.time_ns()
    for name, tree, _ in sides:  # untimed: this install's ONNX copy, the page cache
        subprocess.run([str(tree / ".venv/bin/magray"), "search", f"warm up {nonce}"],
                       env=env_of[name], stdout=subprocess.DEVNULL, check=True)
    figures = {(name, kind): ([], []) for name, _, _ in sides for kind in KINDS}
    for i in range(args.runs):
        for name, tree, _ in random.sample(sides, len(sides)):
            magray = str(tree / ".venv/bin/magray")
            for kind, argv in (("pass", [str(tree / ".venv/bin/python"), "-c", "pass"]),
                               ("help", [magray, "--help"]),
                               ("cold", [magray, "search", f"a new query {nonce} {i}"])):
                wall, cpu = timed(argv, env_of[name])
                figures[(name, kind)][0].append(wall)
                figures[(name, kind)][1].append(cpu)
    (first, *_), (second, *_) = sides
    for kind in KINDS:
        (w1, c1), (w2, c2) = figures[(first, kind)], figures[(second, kind)]
        w1, w2, c1, c2 = (statistics.median(v) * 1000 for v in (w1, w2, c1, c2))
        print(f"{kind:4s}  wall p50 {first} {w1:7.1f} ms  {second} {w2:7.1f} ms  "
              f"ratio {w2 / w1:.2f}   cpu p50 {first} {c1:7.1f} ms  {second} {c2:7.1f} ms  "
              f"ratio {c2 / c1:.2f}   (runs {args.runs}; pass = python -c pass)")


if __name__ == "__main__":
    main()
