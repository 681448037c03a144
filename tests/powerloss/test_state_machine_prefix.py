"""The LevelDB state machine's promise across power cuts: every batch is durable before
the next one is written, so the state found is always a prefix of the applied batches.

The batches are written without ``sync`` and made durable after ``apply`` returns
(``make_durable``, or the next ``apply`` first). A small write buffer
(:data:`~raftdb_leveldb.state_machine.WRITE_BUFFER_ENV`) makes LevelDB rotate its log
every few batches: a batch written just before a rotation sits in a log LevelDB closes
without an fsync, the hole a barrier write alone leaves. The checks are the conformance
suite's (:func:`~raftdb.testing.conformance.crash.run_state_machine_power_cut`): the
state is exactly the reference state at its applied index, which covers every batch the
promise covers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from raftdb.testing.conformance.crash import run_state_machine_power_cut
from raftdb_leveldb import LevelDBStateMachine
from raftdb_leveldb.state_machine import WRITE_BUFFER_ENV
from tests.powerloss.conftest import MountFactory

#: Bytes: LevelDB starts a new log about every few batches of the workload.
SMALL_WRITE_BUFFER = 16 << 10


def log_rotated(path: Path) -> Callable[[], bool]:
    """A ``kill_when``: true the first time the database in ``path`` has a log file it
    did not have at the last call (LevelDB just rotated its log), then it starts over."""
    seen: set[str] = set()

    def rotated() -> bool:
        nonlocal seen
        now = {p.name for p in path.glob("db-*/*.log")}
        new = bool(seen) and bool(now - seen)
        seen = set() if new else now
        return new

    return rotated


@pytest.mark.deadline(150)
@pytest.mark.parametrize("mode", ["strict", "ordered"])
def test_power_cuts_during_applies_leave_a_prefix(
    mounts: MountFactory, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv(WRITE_BUFFER_ENV, str(SMALL_WRITE_BUFFER))
    m = mounts(mode=mode)
    counts = run_state_machine_power_cut("leveldb", m.path / "sm", m.cut, seed=51, rounds=8)
    assert counts["rounds"] == 8


@pytest.mark.deadline(150)
def test_power_cuts_right_after_log_rotations_leave_a_prefix(
    mounts: MountFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Aimed at the rotation hole: killed at the first report after a new log appeared."""
    monkeypatch.setenv(WRITE_BUFFER_ENV, str(SMALL_WRITE_BUFFER))
    m = mounts()
    path = m.path / "sm"
    counts = run_state_machine_power_cut(
        "leveldb", path, m.cut, seed=61, rounds=10, kill_when=log_rotated(path)
    )
    assert counts["killed_when"] == counts["rounds"] == 10


#: Applies until LevelDB rotates its log inside one, one batch more, then makes the
#: batches durable and dies at once. Prints the last index it applied.
_DIES_AFTER_MAKE_DURABLE = """
import os, sys
from pathlib import Path
from raftdb_leveldb import LevelDBStateMachine
from tests.plugins.test_leveldb_state_machine import puts

machine = LevelDBStateMachine(Path(sys.argv[1]))
def logs():
    return {p.name for p in machine.db_path.glob("*.log")}
machine.apply(puts(1, 11))
machine.make_durable()
first, lo = logs(), 11
while logs() <= first:  # batches before the rotation stay in the old log, unsynced
    machine.apply(puts(lo, lo + 10, b"k" * 200))
    lo += 10
machine.apply(puts(lo, lo + 10))  # and one in the new log
print(lo + 9, flush=True)
machine.make_durable()
os._exit(0)
"""


@pytest.mark.deadline(60)
@pytest.mark.parametrize("mode", ["strict", "ordered"])
def test_make_durable_covers_the_log_a_rotation_closed(mounts: MountFactory, mode: str) -> None:
    """Batches 11 to the rotation are in the log LevelDB closed without an fsync,
    the last one in the new log: once make_durable returns, a cut keeps them all
    (not the new log's alone, a hole opening refuses; nor none, in strict mode,
    without the new log's name)."""
    m = mounts(mode=mode)
    path = m.path / "sm"
    env = dict(os.environ, **{WRITE_BUFFER_ENV: str(SMALL_WRITE_BUFFER)})
    child = subprocess.run(
        [sys.executable, "-c", _DIES_AFTER_MAKE_DURABLE, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=40,
        check=True,
    )
    last = int(child.stdout.split()[-1])
    assert last > 30  # several batches, across a rotation
    m.cut()
    machine = LevelDBStateMachine(path)
    try:
        assert machine.applied_index == last
    finally:
        machine.close()
