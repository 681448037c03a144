"""Flips in snapshot files: a snapshot received from a leader (``snapshots-in/``)
and a backup (``raftdb snapshot save``).

A node keeps no snapshot file of its own: its snapshot is its state machine as
of the snapshot point (docs/operations.md, "Snapshots and compaction"), so the
state machine's files are the snapshot's, and ``test_offline`` damages them. A
snapshot stream (:mod:`raftdb.kv.snapshot`) exists as a file only in transit,
and every byte of it is covered: the magic, and frames whose type, length and
payload a CRC-32 covers, ended by the counts. A received stream is checked
whole before the core hears of it (``NodeDisk.check_received_snapshot``) and
again as it is restored (a restore switches to the new state only at the end);
a backup is checked whole before a restore writes anything. So every damaged
stream must be refused, and a refused restore leaves the state as it was.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from raftdb.config import NodeConfig
from raftdb.kv.snapshot import SnapshotFormatError, check_stream
from raftdb.node.rebuild import RebuildError, restore_member
from raftdb.plugins import open_state_machine
from tests.bitrot.dump import open_and_dump
from tests.bitrot.flips import flip_bytes, trial_rng

TRIALS = 150


def _stream(pristine: Path, tmp: Path) -> bytes:
    """The snapshot stream a leader would send, from a copy of ``pristine``'s state
    (one stream format for every state machine plugin)."""
    copy = tmp / "copy"
    shutil.copytree(pristine, copy)
    return open_and_dump(copy, "leveldb", "leveldb").stream


def test_every_flip_in_a_snapshot_stream_is_refused(
    leveldb_pristine: Path, tmp_path: Path, summary: Callable[[str], None]
) -> None:
    stream = _stream(leveldb_pristine, tmp_path)
    target = open_state_machine("leveldb", tmp_path / "target")
    try:
        before = (target.applied_index, target.range(b""))
        flips = 0
        for trial in range(TRIALS):
            rng = trial_rng(1, trial)
            path = tmp_path / "snapshot"
            path.write_bytes(stream)
            flips += len(flip_bytes(rng, path, 8))
            damaged = path.read_bytes()
            with pytest.raises(SnapshotFormatError):
                check_stream([damaged])
            with pytest.raises(SnapshotFormatError):
                target.restore([damaged[i : i + 4096] for i in range(0, len(damaged), 4096)])
            assert (target.applied_index, target.range(b"")) == before
    finally:
        target.close()
    summary(f"bitrot snapshot stream: {TRIALS} trials, {flips} bytes flipped; all refused")


def test_a_damaged_backup_is_not_restored(leveldb_pristine: Path, tmp_path: Path) -> None:
    backup = tmp_path / "backup.snap"
    backup.write_bytes(_stream(leveldb_pristine, tmp_path))
    flip_bytes(trial_rng(2, 0), backup, 1)
    target = tmp_path / "restored"
    config = NodeConfig(id=1, cluster=["http://127.0.0.1:1"], data_dir=target)
    with pytest.raises(RebuildError, match="is not a whole raftdb snapshot"):
        restore_member(backup, config)
    assert not target.exists() or not any(target.iterdir())
