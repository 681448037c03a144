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

from collections.abc import Callable
from pathlib import Path

import pytest

from raftdb.testing.conformance.crash import run_state_machine_power_cut
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
