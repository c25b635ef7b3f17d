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

Phase 3 does to every other write path what phase 1 does to `store -`: each entry of
OPERATIONS (import, forget, promote, clean, optimize, optimize --reembed, backup, restore,
trash restore, trash empty, forget --purge) runs once to completion on a copy of a
prepared home (the reference: what the records look like after it), then --op-kills times
on fresh copies, killed with SIGKILL at a random moment of its own work. After each kill:
integrity_check is ok; every record is where it was before or where the reference put it,
exactly once, and all of a command's change or none of it where the command is
all-or-nothing; the ids it printed are kept (or gone, for forget); the next command a
person would run succeeds; `magray status --json` then reports every index in agreement
with the database; no temporary file is left.

Phase 4 fills the disk: the home on a small tmpfs (root only; skipped where mounting is
not permitted) while `store`, `import`, `backup`, `restore` and `optimize` run. The command
must succeed or fail with one `error:` line and exit 1, nothing lost; once space returns,
the next command works and the same invariants hold. Phase 5 makes the home read-only: every
command fails with one line or works, and changes nothing.

It prints what it tried and what held, and a table per command: runs, invariant checks,
failures. Uses throw-away homes; needs no network. The suite (tests/guarantees/test_faults.py) runs
the same table with the fake embedder, a few kills per command.
"""

from __future__ import annotations

import argparse
import json
import re
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Mapping, Sequence

from magray.db.store import Store
from magray.errors import MagrayError
from magray.records import LAYERS, Filters

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
    if integrity(home) != "ok":
        failed.append("integrity_check")
    searched = run(home, "search", "note about item 7", "--mode", "vector", "--json",
                   "--no-track", "-k", "5")
    if searched.returncode != 0:
        return failed + [f"next command failed: {searched.stderr.decode()[-300:]}"]
    stored = rows(home)
    present = {record_id for record_id, _, _ in stored}
    if not acknowledged <= present:
        failed.append(f"{len(acknowledged - present)} acknowledged records lost")
    texts = [text for _, text, _ in stored]
    if len(texts) != len(set(texts)):
        failed.append("a text stored twice")
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
    the store itself, not in the one-time export that a fresh home would start with. (Where
    the copy is shared in the user cache directory instead, the home needs none of its own.)"""
    (home / "data").mkdir(mode=0o700)
    if models.is_dir():
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
        texts = [text for _, text, _ in rows(home)]
        count, distinct = len(texts), len(set(texts))
        expected = writers * records + 1
        if (count, distinct) != (expected, expected):
            failed.append(f"{count} records ({distinct} distinct), expected {expected}")
        failed += check(home, set())
        print(f"  {count} records stored by {writers} writers -> "
              f"{'HELD' if not failed else failed}")
        return not failed


# -- phases 3 to 5: every write path, killed, on a full disk, on a read-only home ----------

SEARCH = ("search", "note about item 7", "--json", "-k", "5")
LEFTOVER = re.compile(r"\.tmp-\d+|^\.magray-backup-\d+|^\.restore-\d+")
Rows = list[tuple[int, str, str]]  # (id, text, layer) of every record


@dataclass(frozen=True)
class Magray:
    """How to start magray: the real command (with a prepared model copy for new homes), or,
    in the suite, the same command line with the fake embedder (tests/fault_driver.py)."""

    command: tuple[str, ...] = tuple(MAGRAY)
    models: Path | None = None

    def run(self, home: Path, *args: str, env: Mapping[str, str] | None = None,
            stdin: bytes | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([*self.command, *args], input=stdin, capture_output=True,
                              env={**env_for(home), **(env or {})}, timeout=timeout)

    def start(self, home: Path, args: Sequence[str], stdin: Path | None,
              env: Mapping[str, str]) -> subprocess.Popen:
        feed = open(stdin, "rb") if stdin else subprocess.DEVNULL
        try:
            return subprocess.Popen([*self.command, *args], stdin=feed, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env={**env_for(home), **env})
        finally:
            if stdin:
                feed.close()

    def new_home(self, home: Path) -> Path:
        home.mkdir(parents=True)
        return with_models(home, self.models) if self.models else home

    def ok(self, home: Path, *args: str, **kw) -> subprocess.CompletedProcess:
        done = self.run(home, *args, **kw)
        if done.returncode:
            raise RuntimeError(f"magray {' '.join(args)} failed while preparing: "
                               f"{done.stderr.decode()[-500:]}")
        return done


@dataclass(frozen=True)
class Operation:
    """One write path of the campaign. ``argv`` follows `magray`; "{work}" in it is the run's
    directory, which holds the home ("home") and the files ``prepare`` wrote beside it."""

    name: str
    argv: tuple[str, ...]
    prepare: Callable[[Magray, Path, int], None] | None = None
    stdin: str | None = None  # a file in the work directory, fed on stdin
    atomic: bool = False  # all or nothing: the records are as before or as after, never between
    printed: str = ""  # what the ids it prints promise: "kept" (stored) or "gone" (forgotten)
    env: Mapping[str, str] = field(default_factory=dict)
    # the next command(s) a person would run: a search, or the same command again
    after: tuple[tuple[str, ...], ...] = (SEARCH,)
    check: Callable[[Magray, "Trial"], list[str]] | None = None  # what else must hold, after
    disk: bool = False  # also run on a filling disk

    def args(self, work: Path) -> list[str]:
        return [a.replace("{work}", str(work)) for a in self.argv]


@dataclass
class Trial:
    op: Operation
    work: Path
    before: Rows
    reference: Rows
    code: int = 0
    out: str = ""
    err: str = ""
    killed: bool = False

    @property
    def home(self) -> Path:
        return self.work / "home"


VOCABULARY = ("shell git docker rust python sqlite index vector backup cron deploy kernel "
              "network cache token parser build test release branch merge commit socket "
              "thread memory disk signal queue schema query lambda config secret proxy").split()


def note(prefix: str, i: int) -> str:
    """A distinct text per i, with words enough that vectors differ by meaning."""
    words = [VOCABULARY[(i * k + k * k) % len(VOCABULARY)] for k in (1, 3, 7, 11)]
    return f"{prefix} note {i} about item {i % 97}: {' '.join(words)}"


def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def seed(magray: Magray, work: Path, size: int) -> None:
    """The memory every operation starts from: ``size`` records, two thirds in interact and
    one third in insights, imported in one go."""
    write_jsonl(work / "seed.jsonl", [{"text": note("seed", i), "tags": [f"t{i % 5}"],
                                       "layer": "insights" if i % 3 == 2 else "interact"}
                                      for i in range(size)])
    magray.ok(magray.new_home(work / "home"), "import", str(work / "seed.jsonl"))


def rows(home: Path) -> Rows:
    path = home / "data" / "magray.db"
    if not path.exists():
        return []
    db = _readonly(path)  # read-only: no checkpoint on close
    try:
        return sorted((r.id, r.text, r.layer) for r, _ in db.dump(LAYERS, Filters()))
    finally:
        db.close()


def integrity(home: Path) -> str:
    path = home / "data" / "magray.db"
    if not path.exists():
        return "ok"
    try:
        db = _readonly(path)
        try:
            return db.integrity_check()
        finally:
            db.close()
    except (sqlite3.Error, MagrayError) as exc:
        return str(exc)


def _readonly(path: Path) -> "Store":
    return Store.open_readonly(path)


def judge_records(before: Rows, reference: Rows, now: Rows, *, atomic: bool,
                  finished: bool) -> list[str]:
    """Every record is where it was before or where the reference run put it, exactly once."""
    problems = []
    twice = [t for t, n in Counter(t for _, t, _ in now).items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} text(s) stored twice, e.g. {twice[0]!r}")
    b, r, n = ({t: (i, layer) for i, t, layer in x} for x in (before, reference, now))
    lost = sorted(t for t in b.keys() & r.keys() if t not in n)
    if lost:
        problems.append(f"{len(lost)} record(s) LOST, e.g. #{b[lost[0]][0]} {lost[0]!r}")
    wrong = sorted(t for t in n if n[t] not in (b.get(t), r.get(t)))
    if wrong:
        t = wrong[0]
        problems.append(f"{len(wrong)} record(s) neither as before nor as after, e.g. {t!r}: "
                        f"{n[t]} (before {b.get(t)}, after {r.get(t)})")
    if atomic and n not in (b, r):
        problems.append(f"half applied: {len(n)} records, {len(b)} before, {len(r)} after")
    if finished and n != r and not problems:
        problems.append(f"it finished, but {len(n)} records differ from the reference's "
                        f"{len(r)}")
    return problems


def agreement(magray: Magray, home: Path) -> list[str]:
    """What `magray status --json` says about the indexes and the database."""
    done = magray.run(home, "status", "--json")
    try:
        report = json.loads(done.stdout)
    except ValueError:
        return [f"status --json exited {done.returncode}: {done.stderr.decode()[-300:]}"]
    problems = [f"{name} index: {layer['index']['problem'] or 'not fresh'}"
                for name, layer in report["layers"].items() if not layer["index"]["fresh"]]
    problems += [f"status: {a['message']}" for a in report["alerts"]
                 if a["severity"] == "error" or a["code"].startswith(("index_", "database"))]
    return problems


def leftovers(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob(".*") if LEFTOVER.search(p.name))


def one_line_error(code: int, err: str) -> list[str]:
    """A failure is told in one `error:` line with exit 1 (0 is fine too), never a traceback."""
    if "Traceback" in err:
        return [f"exit {code} with a traceback: ...{err.strip().splitlines()[-1][:200]}"]
    if code == 0:
        return []
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    problems = [] if code == 1 else [f"exit {code}, not 1"]
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines: {err.strip()[-200:]!r}")
    return [p + (f" ({errors[0][:160]})" if errors and p.startswith("exit") else "")
            for p in problems]


def verify_after(magray: Magray, trial: Trial, *, finished: bool
                 ) -> tuple[int, list[str]]:
    """The invariants after a command died (or failed); returns (checks made, failures)."""
    op, home = trial.op, trial.home
    failures: list[str] = []
    checks = 0

    def expect(problems: Sequence[str], what: str) -> None:
        nonlocal checks
        checks += 1
        failures.extend(f"{what}: {p}" for p in problems)

    found = integrity(home)
    expect([] if found == "ok" else [found[:200]], "integrity_check")
    now = rows(home)
    expect(judge_records(trial.before, trial.reference, now, atomic=op.atomic,
                         finished=finished), "records")
    if op.printed and trial.out.strip():
        printed = {int(w) for w in trial.out.split() if w.isdigit()}
        ids = {i for i, _, _ in now}
        bad = printed - ids if op.printed == "kept" else printed & ids
        expect([f"{len(bad)} printed id(s) not {op.printed}, e.g. {min(bad)}"] if bad else [],
               "printed ids")
    for argv in op.after:
        done = magray.run(home, *(a.replace("{work}", str(trial.work)) for a in argv))
        expect([f"exited {done.returncode}: {done.stderr.decode().strip()[-300:]}"]
               if done.returncode else [], f"next command `{' '.join(argv[:2])}`")
    if op.after[:1] == (op.argv,):  # run again, it finishes the job
        expect([] if rows(home) == trial.reference else ["the rerun did not finish the job"],
               "records")
    else:
        expect([] if rows(home) == now else ["the next command changed the records"],
               "records")
    if op.check:
        expect(op.check(magray, trial), "check")
    expect(agreement(magray, home), "agreement")
    expect([f"temporary files left: {leftovers(home)[:5]}"] if leftovers(home) else [],
           "leftovers")
    return checks, failures


# -- the operations ----------------------------------------------------------------------

def prepare_store(magray: Magray, work: Path, size: int) -> None:
    (work / "store.txt").write_text("".join(note("stored", i) + "\n" for i in range(size * 4)))


def prepare_import(magray: Magray, work: Path, size: int) -> None:
    fresh = [{"text": note("imported", i), "tags": ["imported"],
              "layer": ("interact", "insights", "assets")[i % 3]} for i in range(size * 2)]
    again = [{"text": note("seed", i), "tags": ["again"],  # merged into the stored copy
              "layer": "insights" if i % 3 == 2 else "interact"} for i in range(0, size, 4)]
    write_jsonl(work / "import.jsonl", fresh + again)


def prepare_forget(magray: Magray, work: Path, size: int) -> None:
    (work / "forget.txt").write_text(" ".join(str(i) for i, _, _ in rows(work / "home")[::3]))


def prepare_trash(magray: Magray, work: Path, size: int) -> None:
    """Every third record forgotten (to the trash), their ids beside the home."""
    prepare_forget(magray, work, size)
    magray.ok(work / "home", "forget", "--yes", *(work / "forget.txt").read_text().split())
    (work / "trash.txt").write_text((work / "forget.txt").read_text())


def prepare_reembed(magray: Magray, work: Path, size: int) -> None:
    magray.ok(work / "home", "config", "set", "truncate_dim", "64")


def prepare_restore(magray: Magray, work: Path, size: int) -> None:
    other = magray.new_home(work / "other")
    write_jsonl(work / "other.jsonl", [{"text": note("restored", i)} for i in range(size)])
    magray.ok(other, "import", str(work / "other.jsonl"))
    magray.ok(other, "backup", "--output", str(work / "other.tar.zst"))
    shutil.rmtree(other)


def printed_archive_verifies(magray: Magray, trial: Trial) -> list[str]:
    if trial.code != 0:
        return []
    path = json.loads(trial.out)["path"]
    done = magray.run(trial.home, "backup", "verify", path)
    return [f"the archive it reported does not verify: {done.stderr.decode()[-200:]}"] \
        if done.returncode else []


def archives_verify(magray: Magray, trial: Trial) -> list[str]:
    """After the next backup: every archive in the backups directory verifies."""
    problems = []
    for path in sorted((trial.home / "backups").glob("*.tar.zst")):
        done = magray.run(trial.home, "backup", "verify", str(path))
        if done.returncode:
            problems.append(f"{path.name} does not verify: {done.stderr.decode()[-200:]}")
    return problems


def replaced_data_is_kept(magray: Magray, trial: Trial) -> list[str]:
    """Once the archive's records replaced the old ones (and a rerun, after a kill, replaced
    them again), a safety copy still holds the old ones."""
    now = {t for _, t, _ in rows(trial.home)}
    old = {t for _, t, _ in trial.before}
    if now == old:
        return []
    copies = sorted((trial.home / "data").glob("**/*.tar.zst"))
    counts = []
    for path in copies:
        done = magray.run(trial.home, "backup", "verify", str(path), "--json")
        if done.returncode == 0:
            counts.append(json.loads(done.stdout)["records"])
    if len(old) not in counts:
        return [f"the replaced {len(old)} records are in no safety copy that verifies "
                f"(copies: {[p.name for p in copies]}, records: {counts})"]
    return []


CLEAN_NOW = (datetime.now(timezone.utc) + timedelta(days=3)).isoformat()  # interact expires

# One entry per write path.
OPERATIONS: tuple[Operation, ...] = (
    Operation("store", ("store", "-"), prepare_store, stdin="store.txt", printed="kept",
              disk=True),
    Operation("import", ("import", "{work}/import.jsonl"), prepare_import, disk=True),
    Operation("forget", ("forget", "-"), prepare_forget, stdin="forget.txt", atomic=True,
              printed="gone"),
    Operation("promote", ("promote", "--threshold", "0"), atomic=True),
    Operation("clean", ("clean", "--no-promote"), env={"MAGRAY_NOW": CLEAN_NOW}),
    Operation("optimize", ("optimize",), disk=True),
    Operation("optimize --reembed", ("optimize", "--reembed"), prepare_reembed,
              after=(("optimize", "--reembed"), SEARCH)),
    Operation("backup", ("backup", "--json"), after=(("backup", "--json"),),
              check=lambda magray, t: printed_archive_verifies(magray, t)
              + archives_verify(magray, t), disk=True),
    Operation("restore", ("restore", "{work}/other.tar.zst", "--yes"), prepare_restore,
              atomic=True, after=(("restore", "{work}/other.tar.zst", "--yes"), SEARCH),
              check=replaced_data_is_kept, disk=True),
    Operation("trash restore", ("trash", "restore", "-"), prepare_trash, stdin="trash.txt",
              atomic=True, printed="kept"),
    Operation("trash empty", ("trash", "empty"), prepare_trash, atomic=True),
    Operation("forget --purge", ("forget", "--purge", "-"), prepare_forget, stdin="forget.txt",
              atomic=True, printed="gone"),
)


# -- running them ------------------------------------------------------------------------

def copy_work(template: Path, work: Path) -> Path:
    """A copy of a prepared work directory; the model copy is hard-linked where it can be."""
    def link_or_copy(src: str, dst: str) -> None:
        if "/models/" in src:
            try:
                os.link(src, dst)
                return
            except OSError:
                pass
        shutil.copy2(src, dst)

    shutil.copytree(template, work, symlinks=True, copy_function=link_or_copy)
    return work


def prepare_templates(magray: Magray, root: Path, size: int,
                      operations: Sequence[Operation]) -> dict[str, Path]:
    """A seeded work directory, then one per operation with what it needs beside the home."""
    base = root / "base"
    base.mkdir()
    seed(magray, base, size)
    templates = {}
    for n, op in enumerate(operations):
        work = copy_work(base, root / f"op{n}")
        if op.prepare:
            op.prepare(magray, work, size)
        templates[op.name] = work
    return templates


@dataclass
class Reference:
    rows: Rows
    seconds: float  # how long the command ran, start to exit
    startup: float  # how long magray takes to start at all (when timed)
    growth: int  # bytes the work directory grew by
    database: int  # bytes of the database before: VACUUM, snapshots and restores copy it


def disk_usage(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def reference_run(magray: Magray, op: Operation, template: Path, scratch: Path,
                  env: Mapping[str, str] | None = None, timed: bool = False) -> Reference:
    """``op`` run to completion on a copy; ``timed``: also measure how long magray takes to
    start, so that kills land in the command's own work."""
    work = copy_work(template, scratch / "reference")
    size_before = disk_usage(work)
    db = work / "home" / "data" / "magray.db"
    database = db.stat().st_size if db.exists() else 0
    startup = 0.0
    if timed:
        started = time.monotonic()
        magray.run(work / "home", "--version")
        startup = time.monotonic() - started
    started = time.monotonic()
    proc = magray.start(work / "home", op.args(work), work / op.stdin if op.stdin else None,
                        {**op.env, **(env or {})})
    out, err = proc.communicate(timeout=1800)
    seconds = time.monotonic() - started
    if proc.returncode:
        raise RuntimeError(f"{op.name} failed without a fault: {err.decode()[-500:]}")
    found = Reference(rows(work / "home"), seconds, startup, disk_usage(work) - size_before,
                      database)
    shutil.rmtree(work)
    return found


def kill_trial(magray: Magray, op: Operation, template: Path, scratch: Path,
               reference: Reference, delay: float | None, env: Mapping[str, str] | None = None
               ) -> tuple[Trial, int, list[str]]:
    """Run ``op`` on a fresh copy, SIGKILL it after ``delay`` seconds (None: it is told by
    ``env`` where to kill itself, tests/fault_driver.py), then check everything."""
    work = copy_work(template, scratch / "trial")
    trial = Trial(op, work, rows(work / "home"), reference.rows)
    proc = magray.start(trial.home, op.args(work), work / op.stdin if op.stdin else None,
                        {**op.env, **(env or {})})
    try:
        proc.wait(timeout=delay if delay is not None else 1800)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    trial.out, trial.err, trial.code = out.decode(), err.decode(), proc.returncode
    trial.killed = proc.returncode == -signal.SIGKILL
    checks, failures = verify_after(magray, trial, finished=not trial.killed)
    if not trial.killed and trial.code != 0:
        failures.append(f"exited {trial.code} without a fault: {trial.err.strip()[-300:]}")
    shutil.rmtree(work)
    return trial, checks, failures


class Tally:
    """Per command: runs, kills that landed, invariant checks made, failures."""

    def __init__(self) -> None:
        self.rows: dict[str, Counter] = {}
        self.failures: list[str] = []

    def add(self, phase: str, name: str, *, killed: bool, checks: int,
            failures: Sequence[str]) -> None:
        row = self.rows.setdefault(f"{phase:<9} {name}", Counter())
        row.update(runs=1, kills=int(killed), checks=checks, failures=len(failures))
        self.failures += [f"{phase} {name}: {f}" for f in failures]

    def print(self) -> None:
        print(f"\n{'phase     command':<32} {'runs':>5} {'kills':>6} {'checks':>7} "
              f"{'failed':>7}")
        for name, c in self.rows.items():
            print(f"{name:<32} {c['runs']:>5} {c['kills']:>6} {c['checks']:>7} "
                  f"{c['failures']:>7}")


def write_path_campaign(magray: Magray, operations: Sequence[Operation], kills: int,
                        templates: dict[str, Path], scratch: Path, rng: random.Random,
                        tally: Tally) -> None:
    print(f"phase 3: {kills} x kill -9 of each write path")
    for op in operations:
        reference = reference_run(magray, op, templates[op.name], scratch, timed=True)
        print(f"  {op.name}: runs {reference.seconds:.1f}s uninterrupted "
              f"(start-up {reference.startup:.1f}s)", flush=True)
        for _ in range(kills):
            delay = rng.uniform(reference.startup * 0.8, reference.seconds * 1.05)
            trial, checks, failures = kill_trial(magray, op, templates[op.name], scratch,
                                                 reference, delay)
            state = "killed" if trial.killed else f"exit {trial.code}"
            print(f"    {state} after {delay:5.2f}s -> {'HELD' if not failures else failures}",
                  flush=True)
            tally.add("kill", op.name, killed=trial.killed, checks=checks, failures=failures)


# A full disk and a read-only home need a file system of their own: a tmpfs (root only).

def can_mount() -> bool:
    with tempfile.TemporaryDirectory() as probe:
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", probe],
                                  capture_output=True)
        except OSError:  # no mount command
            return False
        if done.returncode:
            return False
        subprocess.run(["umount", probe], check=True)
        return True


class Tmpfs:
    """A size-limited tmpfs mounted on a new directory, unmounted and removed on exit."""

    def __init__(self, size: int) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="magray-faults-"))
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                        str(self.path)], check=True, capture_output=True)

    def used(self) -> int:
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True,
                       capture_output=True)

    def __enter__(self) -> "Tmpfs":
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
        shutil.rmtree(self.path, ignore_errors=True)


ROOMY = 1 << 30  # the size a tmpfs gets back once "space returns"


def disk_trial(magray: Magray, op: Operation, template: Path, reference: Reference,
               room: int) -> tuple[Trial, int, list[str]]:
    """Run ``op`` with ``room`` bytes free; then give the space back and run the next command."""
    with Tmpfs(ROOMY) as fs:
        work = copy_work(template, fs.path / "work")
        trial = Trial(op, work, rows(work / "home"), reference.rows)
        page = 4096
        fs.remount(f"size={(fs.used() + room + page - 1) // page * page}")
        proc = magray.start(trial.home, op.args(work), work / op.stdin if op.stdin else None,
                            op.env)
        out, err = proc.communicate(timeout=1800)
        trial.out, trial.err, trial.code = out.decode(), err.decode(), proc.returncode
        failures = [f"full disk: {p}" for p in one_line_error(trial.code, trial.err)]
        fs.remount(f"size={ROOMY}")
        checks, more = verify_after(magray, trial, finished=trial.code == 0)
        return trial, checks + 1, failures + more


def disk_campaign(magray: Magray, operations: Sequence[Operation], runs: int,
                  templates: dict[str, Path], scratch: Path, rng: random.Random,
                  tally: Tally) -> None:
    if not can_mount():
        print("phase 4: skipped (mounting a tmpfs is not permitted here)")
        return
    print(f"phase 4: {runs} x a disk that fills during each of "
          f"{', '.join(op.name for op in operations if op.disk)}")
    for op in operations:
        if not op.disk:
            continue
        reference = reference_run(magray, op, templates[op.name], scratch)
        for _ in range(runs):
            room = int(rng.uniform(0, 2 * (reference.growth + reference.database)))
            trial, checks, failures = disk_trial(magray, op, templates[op.name], reference, room)
            print(f"  {op.name} with {room >> 10} KiB free: exit {trial.code} -> "
                  f"{'HELD' if not failures else failures}", flush=True)
            tally.add("disk", op.name, killed=False, checks=checks, failures=failures)


READS: tuple[tuple[str, ...], ...] = (SEARCH, ("list",), ("status",), ("export",))


def readonly_trial(magray: Magray, op: Operation | None, argv: Sequence[str], template: Path,
                   reference: Reference | None) -> tuple[int, list[str]]:
    """Run a command on a read-only home: one-line failure or success, and nothing changed;
    then, writable again, the next command works."""
    with Tmpfs(ROOMY) as fs:
        work = copy_work(template, fs.path / "work")
        before = rows(work / "home")
        fs.remount("ro")
        feed = work / op.stdin if op and op.stdin else None
        args = [a.replace("{work}", str(work)) for a in argv]
        proc = magray.start(work / "home", args, feed, op.env if op else {})
        out, err = proc.communicate(timeout=1800)
        failures = one_line_error(proc.returncode, err.decode())
        fs.remount("rw")
        trial = Trial(op or Operation(argv[0], tuple(argv)), work, before,
                      reference.rows if reference else before,
                      code=proc.returncode, out=out.decode(), err=err.decode())
        checks, more = verify_after(magray, trial, finished=proc.returncode == 0)
        return checks + 1, [f"read-only home: {f}" for f in failures] + more


def readonly_campaign(magray: Magray, operations: Sequence[Operation],
                      templates: dict[str, Path], scratch: Path, tally: Tally) -> None:
    if not can_mount():
        print("phase 5: skipped (mounting a tmpfs is not permitted here)")
        return
    print("phase 5: every command on a read-only home")
    base = next(iter(templates.values()))
    for op in operations:
        reference = reference_run(magray, op, templates[op.name], scratch)
        checks, failures = readonly_trial(magray, op, op.argv, templates[op.name], reference)
        print(f"  {op.name}: {'HELD' if not failures else failures}", flush=True)
        tally.add("read-only", op.name, killed=False, checks=checks, failures=failures)
    for argv in READS:
        checks, failures = readonly_trial(magray, None, argv, base, None)
        print(f"  {argv[0]}: {'HELD' if not failures else failures}", flush=True)
        tally.add("read-only", argv[0], killed=False, checks=checks, failures=failures)


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
    parser.add_argument("--op-kills", type=int, default=5,
                        help="kills of each write path in phase 3")
    parser.add_argument("--disk-runs", type=int, default=3,
                        help="full-disk runs of each command in phase 4")
    parser.add_argument("--size", type=int, default=1500,
                        help="records in the memory phases 3-5 start from")
    parser.add_argument("--phases", default="1,2,3,4,5", help="which phases to run")
    parser.add_argument("--only", default="",
                        help="phases 3-5: only these operations (comma-separated names)")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    operations = [op for op in OPERATIONS
                  if not args.only or op.name in args.only.split(",")]
    with tempfile.TemporaryDirectory() as template:
        print("preparing the model copy (the ONNX export, once)...", flush=True)
        done = run(Path(template), "store", "a note that makes the model copy")
        if done.returncode:
            sys.exit(f"cannot prepare a home: {done.stderr.decode()[-500:]}")
        models = Path(template) / "data" / "models"
        ok = True
        if "1" in phases:
            ok &= kill_campaign(args.kills, args.lines, args.seed, models)
        if "2" in phases:
            ok &= crowd_campaign(args.writers, args.records, models)
        if phases & {"3", "4", "5"}:
            ok &= write_paths(Magray(models=models), operations, args, phases)
    print("ALL INVARIANTS HELD" if ok else "SOME INVARIANTS FAILED")
    sys.exit(0 if ok else 1)


def write_paths(magray: Magray, operations: Sequence[Operation], args: argparse.Namespace,
                phases: set[str]) -> bool:
    rng = random.Random(args.seed)
    tally = Tally()
    with tempfile.TemporaryDirectory() as root:
        print(f"preparing a memory of {args.size} records for each write path...", flush=True)
        templates = prepare_templates(magray, Path(root), args.size, operations)
        scratch = Path(root) / "scratch"
        scratch.mkdir()
        if "3" in phases:
            write_path_campaign(magray, operations, args.op_kills, templates, scratch, rng,
                                tally)
        if "4" in phases:
            disk_campaign(magray, operations, args.disk_runs, templates, scratch, rng, tally)
        if "5" in phases:
            readonly_campaign(magray, operations, templates, scratch, tally)
    tally.print()
    for failure in tally.failures:
        print(f"  FAILED {failure}")
    return not tally.failures


if __name__ == "__main__":
    main()
