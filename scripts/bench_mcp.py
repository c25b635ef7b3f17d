#!/usr/bin/env python3
"""``magray mcp`` speed (issue 14), each figure against its baseline in the same run.

    python scripts/bench_mcp.py                     # 20,000 records
    python scripts/bench_mcp.py --records 100000    # the issue's size

1. Start-up: wall time from spawning ``magray mcp`` to the answer of ``tools/list`` (through
   the SDK's stdio client: spawn, initialize, list), against ``python -c pass`` and
   ``magray --help``.
2. Warm recall: p50 of ``recall`` through the protocol (one server, the same queries asked
   again, so the query vectors are cached as an agent's repeated lookups would be) against
   ``Memory.search`` with the same options in this process, taken in turns. Both count
   their hits as accessed (a small commit each), as a recall does.

The fixture is a home of --records records (texts numbered, vectors synthetic: the clustered
mixture of scripts/bench.py) built once under --cache. Both sides use the torch backend, so
no ONNX export is needed; the model itself is the shipped one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
       "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1",
       "MAGRAY_BACKEND": "torch"}
QUERIES = ["how do I search files that git ignores", "rotate the database credentials",
           "why did the deploy fail last night", "connection pool size for the api",
           "which python version does the project use", "restart the message queue",
           "format a disk on linux", "the canary rollout policy", "clean docker images",
           "set up ssh keys for the build server"]


def home_of(cache: Path, n: int) -> Path:
    """A home with ``n`` records in assets and a fresh index (built once)."""
    from bench import _insert  # the insert of scripts/bench.py: synthetic clustered vectors

    from magray import Memory

    home = cache / f"mcp-home-{n}"
    if (home / "ready").exists():
        return home
    print(f"building {n:,} records in {home}...", flush=True)
    texts = [f"note {i}: {QUERIES[i % len(QUERIES)]} (variant {i // len(QUERIES)})"
             for i in range(min(n, 50_000))]
    with Memory.open(home) as memory:
        _insert(memory, texts, n, "assets")
        memory.sync()
    (home / "ready").write_text("")
    return home


def wall(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - start


async def to_tools_list(env: dict) -> float:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    params = StdioServerParameters(command=sys.executable, args=["-m", "magray", "mcp"],
                                   env=env)
    start = time.perf_counter()
    async with stdio_client(params, errlog=open(os.devnull, "w")) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            took = time.perf_counter() - start
    assert len(tools.tools) == 6
    return took


async def recall_p50s(home: Path, env: dict, rounds: int) -> tuple[float, float, int]:
    """p50 of ``recall`` through one server and of ``Memory.search`` in this process, the
    two taken in turns (each search commits its access counts: disk latency, which the
    other users of this machine move around, hits both alike); and how many queries got
    the same first hit both ways."""
    from mcp import ClientSession, StdioServerParameters, stdio_client

    from magray import Memory

    params = StdioServerParameters(command=sys.executable, args=["-m", "magray", "mcp"],
                                   env=env)
    arguments = {"top_k": 10, "mode": "vector", "layers": ["assets"]}
    timings: dict[str, list[float]] = {"mcp": [], "memory": []}
    same = 0
    async with stdio_client(params, errlog=open(os.devnull, "w")) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            with Memory.open(home) as memory:
                for round_ in range(rounds + 1):  # round 0 warms: model, index, vectors
                    for number, query in enumerate(QUERIES):
                        start = time.perf_counter()
                        result = await session.call_tool("recall", {"query": query,
                                                                    **arguments})
                        via_mcp = time.perf_counter() - start
                        assert not result.is_error, result.content[0].text
                        start = time.perf_counter()
                        hits = memory.search(query, top_k=10, mode="vector",
                                             layers=("assets",))
                        in_process = time.perf_counter() - start
                        if round_:
                            timings["mcp"].append(via_mcp)
                            timings["memory"].append(in_process)
                        if round_ == 1:
                            same += (result.structured_content["hits"][0]["id"]
                                     == hits[0].record.id)
    return statistics.median(timings["mcp"]), statistics.median(timings["memory"]), same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "magray-bench")
    parser.add_argument("--repeat", type=int, default=5, help="start-ups of each kind")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of the queries")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)

    print("1. start-up (median of %d)" % args.repeat, flush=True)
    empty = Path(tempfile.mkdtemp(prefix="magray-bench-mcp-"))
    env = {**ENV, "MAGRAY_HOME": str(empty)}
    figures: dict[str, list[float]] = {"python": [], "help": [], "mcp": []}
    for _ in range(args.repeat):  # interleaved: machine load hits all three alike
        figures["python"].append(wall([sys.executable, "-c", "pass"], env))
        figures["help"].append(wall([sys.executable, "-m", "magray", "--help"], env))
        figures["mcp"].append(asyncio.run(to_tools_list(env)))
    p = {k: statistics.median(v) * 1000 for k, v in figures.items()}
    print(f"  python -c pass                          {p['python']:8.0f} ms")
    print(f"  magray --help                           {p['help']:8.0f} ms  "
          f"{p['help'] / p['python']:.1f}x python")
    print(f"  spawn magray mcp -> tools/list answered {p['mcp']:8.0f} ms  "
          f"{p['mcp'] / p['python']:.1f}x python, {p['mcp'] / p['help']:.1f}x --help")

    print(f"2. warm recall at {args.records:,} records (p50 of {args.rounds} x "
          f"{len(QUERIES)} queries)", flush=True)
    home = home_of(args.cache, args.records)
    env = {**ENV, "MAGRAY_HOME": str(home)}
    os.environ.update(MAGRAY_HOME=str(home), MAGRAY_BACKEND="torch")  # as the server's
    protocol, library, same = asyncio.run(recall_p50s(home, env, args.rounds))
    print(f"  Memory.search in process, p50           {library * 1000:8.2f} ms")
    print(f"  recall through MCP (stdio), p50         {protocol * 1000:8.2f} ms  "
          f"{protocol / library:.1f}x in process, {(protocol - library) * 1000:+.2f} ms")
    print(f"  same first hit both ways                {same}/{len(QUERIES)}")


if __name__ == "__main__":
    main()
