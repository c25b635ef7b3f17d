"""Faults on every write path: kill -9 at points spread over each command's run, a disk that
fills, a read-only home. The table of operations and the invariants are scripts/torture.py's
(its phases 3-5); here they run with the fake embedder (tests/fault_driver.py), a few faults
each. Marked slow: `-m "not slow"` skips them locally; CI runs them."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import torture  # noqa: E402

FAKE = torture.Magray(command=(sys.executable, str(ROOT / "tests" / "fault_driver.py")))
SIZE = 200  # records in the memory each operation starts from
KILLS = 3  # kill points per operation
OPERATIONS = {op.name: op for op in torture.OPERATIONS}
DISK = [op.name for op in torture.OPERATIONS if op.disk]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("faults")
    return torture.prepare_templates(FAKE, root, SIZE, torture.OPERATIONS)


def kill_points(events: int, name: str) -> list[int]:
    """KILLS events spread over the run: one in each part, at a random place in it."""
    rng = random.Random(f"kill {name}")
    return [1 + int((part + rng.random()) * events / KILLS) for part in range(KILLS)]


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_kill_9_anywhere_in_a_write_keeps_every_acknowledged_record(name, templates, tmp_path):
    op = OPERATIONS[name]
    counted = tmp_path / "events"
    reference = torture.reference_run(FAKE, op, templates[name], tmp_path,
                                      env={"FAULT_EVENTS": str(counted)})
    failures, killed = [], 0
    for point in kill_points(int(counted.read_text()), name):
        trial, checks, found = torture.kill_trial(FAKE, op, templates[name], tmp_path, reference,
                                                  None, env={"FAULT_KILL_AT": str(point)})
        killed += trial.killed  # (a run with fewer events finishes: checked all the same)
        assert checks >= 6
        failures += [f"killed at event {point}: {f}" for f in found]
    assert failures == []
    assert killed >= KILLS - 1


needs_mount = pytest.mark.skipif(not torture.can_mount(),
                                 reason="mounting a tmpfs is not permitted here")

# Reporting bugs the campaign finds that belong to other work, {(phase, name): what}: the
# test is an expected failure while only how the failure is told is wrong. Lost or damaged
# data always fails. (Those found so far are fixed.)
KNOWN: dict[tuple[str, str], str] = {}


def assert_held(failures: list[str], phase: str, name: str) -> None:
    """Data invariants must hold; a known reporting bug makes the test an expected failure."""
    told = [f for f in failures if re.match(r"(?:[^:]*: )?(?:full disk|read-only home):", f)]
    assert [f for f in failures if f not in told] == []
    if told and (phase, name) in KNOWN:
        pytest.xfail(f"{KNOWN[phase, name]} ({told[0][:200]})")
    assert told == []


@needs_mount
@pytest.mark.parametrize("name", DISK)
def test_a_disk_that_fills_loses_nothing_and_the_next_command_works(name, templates,
                                                                    tmp_path):
    op = OPERATIONS[name]
    reference = torture.reference_run(FAKE, op, templates[name], tmp_path)
    failures = []
    for room in (0, reference.growth + reference.database):  # full; fills on the way
        trial, _, found = torture.disk_trial(FAKE, op, templates[name], reference, room)
        failures += [f"{room} bytes free, exit {trial.code}: {f}" for f in found]
    assert_held(failures, "disk", name)


@needs_mount
@pytest.mark.parametrize("name", list(OPERATIONS))
def test_a_read_only_home_changes_nothing_and_fails_in_one_line(name, templates, tmp_path):
    op = OPERATIONS[name]
    rerun = op.after[:1] == (op.argv,)  # then the rerun must finish what the reference did
    reference = torture.reference_run(FAKE, op, templates[name], tmp_path) if rerun else None
    _, failures = torture.readonly_trial(FAKE, op, op.argv, templates[name], reference)
    assert_held(failures, "read-only", name)


@needs_mount
@pytest.mark.parametrize("argv", torture.READS, ids=[argv[0] for argv in torture.READS])
def test_reading_a_read_only_home_works(argv, templates):
    _, failures = torture.readonly_trial(FAKE, None, argv, templates["store"], None)
    assert failures == []


def test_a_killed_restore_leaves_nothing_behind_after_the_next_command(templates, tmp_path):
    op = OPERATIONS["restore"]
    counted = tmp_path / "events"
    reference = torture.reference_run(FAKE, op, templates["restore"], tmp_path,
                                      env={"FAULT_EVENTS": str(counted)})
    events = int(counted.read_text())
    for point in range(1, events, max(1, events // 20)):  # the first kill that leaves a stage
        work = torture.copy_work(templates["restore"], tmp_path / f"at{point}")
        proc = FAKE.start(work / "home", op.args(work), None, {"FAULT_KILL_AT": str(point)})
        proc.communicate()
        if torture.leftovers(work / "home"):
            break
    else:
        pytest.skip("no kill point left a staging directory")
    for argv in (torture.SEARCH, ("optimize",), ("clean",)):
        FAKE.run(work / "home", *argv)
    assert torture.leftovers(work / "home") == []
