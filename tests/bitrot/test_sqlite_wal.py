"""SQLite's write-ahead log damaged in the middle (raftdb_sqlite._wal).

SQLite reads a frame that fails its checksum as a crash's torn tail: without
the check, a damaged byte in the first of three synced transactions made the
storage open without a word and lose all three saves (found by the bit-rot
trials: the log's last index went back from 183 to 180).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from raftdb.codec import CorruptionError
from raftdb.plugins import open_storage
from raftdb.raft.messages import Entry, EntryType, HardState
from raftdb_sqlite._wal import check_wal
from raftdb_sqlite.storage import FILE_NAME

SAVES = 3


def _log_with_wal(tmp: Path) -> Path:
    """A SQLite log of :data:`SAVES` transactions in its write-ahead log, copied while open."""
    storage = open_storage("sqlite", tmp / "log")
    try:
        for n in range(1, SAVES + 1):
            storage.save(HardState(term=1, commit=0), [Entry(1, n, EntryType.NORMAL, b"x" * 50)])
        shutil.copytree(tmp / "log", tmp / "copy")
    finally:
        storage.close()
    return tmp / "copy"


def _frame_offset(wal: Path, frame: int) -> int:
    page_size = int.from_bytes(wal.read_bytes()[8:12], "big")
    return 32 + frame * (24 + page_size)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_an_intact_log_passes(tmp_path: Path) -> None:
    copy = _log_with_wal(tmp_path)
    assert check_wal(copy / f"{FILE_NAME}-wal") is None
    storage = open_storage("sqlite", copy)
    try:
        assert storage.last_index() == SAVES
    finally:
        storage.close()


def _commit_frames(wal: Path) -> list[int]:
    data = wal.read_bytes()
    frames = (len(data) - 32) // (_frame_offset(wal, 1) - _frame_offset(wal, 0))
    at = [_frame_offset(wal, n) for n in range(frames)]
    return [n for n in range(frames) if int.from_bytes(data[at[n] + 4 : at[n] + 8], "big")]


@pytest.mark.parametrize(
    "where", ["header", "first frame's page", "first frame's salt", "a commit frame's salt"]
)
def test_damage_before_later_transactions_is_refused(tmp_path: Path, where: str) -> None:
    copy = _log_with_wal(tmp_path)
    wal = copy / f"{FILE_NAME}-wal"
    offset = {"header": 20, "first frame's page": _frame_offset(wal, 0) + 24 + 100}
    offset["first frame's salt"] = _frame_offset(wal, 0) + 9
    # Seed 11, trial 2449 of a long run: the salt of the last but one transaction's
    # commit frame; the frame no longer counted as a commit, so the damage looked
    # like the last transaction's, torn.
    offset["a commit frame's salt"] = _frame_offset(wal, _commit_frames(wal)[-2]) + 12
    _flip(wal, offset[where])
    with pytest.raises(CorruptionError, match=r"write-ahead log .*-wal is damaged") as info:
        open_storage("sqlite", copy)
    assert str(copy) in str(info.value)


def test_damage_in_the_last_transaction_is_a_torn_tail(tmp_path: Path) -> None:
    """It cannot be told from the torn write of a crash: SQLite drops that save only."""
    copy = _log_with_wal(tmp_path)
    wal = copy / f"{FILE_NAME}-wal"
    frames = (wal.stat().st_size - 32) // (_frame_offset(wal, 1) - _frame_offset(wal, 0))
    _flip(wal, _frame_offset(wal, frames - 1) + 24 + 100)
    assert check_wal(wal) is None
    storage = open_storage("sqlite", copy)
    try:
        assert storage.last_index() == SAVES - 1
    finally:
        storage.close()
