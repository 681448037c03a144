"""The LevelDB state machine's promise *durable at make_durable*: applies fsync nothing,
and opening refuses a state with a hole (a batch lost below later ones).

A power cut that loses a page in the middle of LevelDB's log is not what the
power-loss filesystem of ``tests/powerloss`` does (it drops what was not synced,
from the end of each file), so the hole is made here by hand: the mark of a
batch goes, as it would with the batch's record (they are one ``WriteBatch``).
"""

from __future__ import annotations

import threading
from pathlib import Path

import plyvel
import pytest

from raftdb.codec import CorruptionError
from raftdb.kv.state_machine import BatchesDurability
from raftdb_leveldb import LevelDBStateMachine
from raftdb_leveldb._layout import INDEX, MARK, VERIFIED
from tests.plugins.test_leveldb_state_machine import puts, tamper


def _keys(db_path: Path) -> dict[bytes, bytes]:
    db = plyvel.DB(str(db_path))
    try:
        return {k: v for k, v in db.iterator(prefix=b"m/")}
    finally:
        db.close()


def _batches(path: Path) -> tuple[Path, list[int]]:
    """Batches 1-10, 11-20 (made durable), then 21-30, 31-40, 41-50, and a close."""
    machine = LevelDBStateMachine(path)
    assert isinstance(machine, BatchesDurability)
    machine.apply(puts(1, 11))
    machine.apply(puts(11, 21))
    machine.make_durable()
    for lo in (21, 31, 41):
        machine.apply(puts(lo, lo + 10))
    db_path = machine.db_path
    machine.close()  # makes them durable: the marks of 21..50 stay until the next open
    return db_path, [30, 40, 50]


def test_applies_make_nothing_durable_until_make_durable(tmp_path: Path) -> None:
    machine = LevelDBStateMachine(tmp_path / "sm")
    try:
        for lo in range(1, 100, 10):
            machine.apply(puts(lo, lo + 10))
        assert machine.barriers == 0
        assert machine.durable_index == 0
        machine.make_durable()
        assert machine.barriers == 1
        assert machine.durable_index == machine.applied_index == 100
        machine.make_durable()  # nothing new: at once
        assert machine.barriers == 1
    finally:
        machine.close()


def test_the_batch_after_make_durable_records_the_point_it_reached(tmp_path: Path) -> None:
    db_path, marked = _batches(tmp_path / "sm")
    keys = _keys(db_path)
    # Batch 21-30 wrote 20 (the make_durable before it) and dropped the marks of
    # 1-10 and 11-20; close made 50 durable, but no batch came after to say so.
    assert keys[VERIFIED] == INDEX.pack(20)
    assert sorted(k[len(MARK) :] for k in keys if k.startswith(MARK)) == [
        INDEX.pack(i) for i in marked
    ]
    assert keys[MARK + INDEX.pack(40)] == INDEX.pack(31)  # each mark: its batch's first index


def test_a_whole_chain_opens_and_starts_a_new_one(tmp_path: Path) -> None:
    db_path, _ = _batches(tmp_path / "sm")
    machine = LevelDBStateMachine(tmp_path / "sm")
    try:
        assert machine.applied_index == machine.durable_index == 50
    finally:
        machine.close()
    keys = _keys(db_path)
    assert keys[VERIFIED] == INDEX.pack(50)
    assert not [k for k in keys if k.startswith(MARK)]


def test_a_batch_lost_below_later_ones_is_refused_at_open(tmp_path: Path) -> None:
    db_path, _ = _batches(tmp_path / "sm")
    tamper(db_path, MARK + INDEX.pack(40), None)  # batch 31-40 gone, 41-50 kept
    with pytest.raises(CorruptionError, match="batch that ends at index 40 is missing"):
        LevelDBStateMachine(tmp_path / "sm")


def test_a_state_behind_its_durable_point_is_refused_at_open(tmp_path: Path) -> None:
    db_path, _ = _batches(tmp_path / "sm")
    tamper(db_path, VERIFIED, INDEX.pack(60))
    with pytest.raises(CorruptionError, match="before 60, up to which every batch was durable"):
        LevelDBStateMachine(tmp_path / "sm")


def test_a_mark_of_the_wrong_size_is_refused_at_open(tmp_path: Path) -> None:
    db_path, _ = _batches(tmp_path / "sm")
    tamper(db_path, MARK + INDEX.pack(50), b"\x00")
    with pytest.raises(CorruptionError, match="1 bytes, not 8"):
        LevelDBStateMachine(tmp_path / "sm")


def test_a_database_an_earlier_raftdb_wrote_opens_as_before(tmp_path: Path) -> None:
    """No marks, no m/verified: each batch was durable before the next."""
    db_path, marked = _batches(tmp_path / "sm")
    for last in marked:
        tamper(db_path, MARK + INDEX.pack(last), None)
    tamper(db_path, VERIFIED, None)
    machine = LevelDBStateMachine(tmp_path / "sm")
    try:
        assert machine.applied_index == 50
        machine.apply(puts(51, 61))
        machine.make_durable()
    finally:
        machine.close()
    machine = LevelDBStateMachine(tmp_path / "sm")  # and its own chain from there
    try:
        assert machine.applied_index == 60
    finally:
        machine.close()


def test_a_last_batch_an_earlier_raftdb_wrote_is_trusted(tmp_path: Path) -> None:
    """A downgrade and an upgrade: batches after the marked ones carry no mark."""
    _batches(tmp_path / "sm")
    # 51-60 written by a raftdb that does not mark (its state record only, here).
    machine = LevelDBStateMachine(tmp_path / "sm", sync=False)
    try:
        machine.apply(puts(51, 61))
    finally:
        machine.close()
    machine = LevelDBStateMachine(tmp_path / "sm")
    try:
        assert machine.applied_index == 60
    finally:
        machine.close()


def test_sync_off_writes_no_marks(tmp_path: Path) -> None:
    machine = LevelDBStateMachine(tmp_path / "sm", sync=False)
    try:
        machine.apply(puts(1, 11))
        machine.make_durable()
        assert machine.barriers == 0
        db_path = machine.db_path
    finally:
        machine.close()
    assert not [k for k in _keys(db_path) if k.startswith(MARK)]


def test_apply_makes_the_batches_durable_when_nobody_does_for_too_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("raftdb_leveldb.state_machine.MAX_UNSYNCED_BATCHES", 5)
    machine = LevelDBStateMachine(tmp_path / "sm")
    try:
        for lo in range(1, 60, 10):  # six batches
            machine.apply(puts(lo, lo + 10))
        assert machine.barriers == 1  # before the sixth: the first five
        assert machine.durable_index == 50
    finally:
        machine.close()


def test_make_durable_on_another_thread_while_batches_apply(tmp_path: Path) -> None:
    """As the node calls it: from its sync thread, applies going on."""
    machine = LevelDBStateMachine(tmp_path / "sm")
    done = threading.Event()
    reached: list[int] = []

    def sync() -> None:
        while not done.is_set():
            machine.make_durable()
            reached.append(machine.durable_index)

    syncing = threading.Thread(target=sync)
    syncing.start()
    try:
        for lo in range(1, 3001, 10):
            machine.apply(puts(lo, lo + 10))
    finally:
        done.set()
        syncing.join()
    try:
        assert reached == sorted(reached)  # it never goes back
        assert machine.durable_index <= machine.applied_index == 3000
        machine.make_durable()
        assert machine.durable_index == 3000
    finally:
        machine.close()
    machine = LevelDBStateMachine(tmp_path / "sm")  # the chain and m/verified agree
    try:
        assert machine.applied_index == 3000
        assert machine.get(b"k02999") is not None
    finally:
        machine.close()
