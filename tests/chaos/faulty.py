"""A test-only storage plugin whose disk fills up on demand.

``storage = "tests.chaos.faulty:FaultyStorage"`` (plugins load by
``module:attr``) is the LevelDB storage with one difference: while the file
:func:`switch_path` names exists (``<data_dir>/enospc``), every write (``save``,
``create_snapshot``) raises ``OSError(ENOSPC)`` *before* it reaches LevelDB,
as a full disk refuses a write. Reads keep working. Remove the file and writes
succeed again: space came back. A test in another process flips the switch
with :func:`fill_disk` and :func:`free_disk`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from raftdb.raft.messages import ConfState, Entry, HardState, Snapshot
from raftdb_leveldb import LevelDBStorage

__all__ = ["FaultyStorage", "fill_disk", "free_disk", "switch_path"]

_SWITCH = "enospc"


def switch_path(data_dir: Path) -> Path:
    """The file whose existence makes the storage of ``data_dir`` fail its writes."""
    return Path(data_dir) / _SWITCH


def fill_disk(data_dir: Path) -> None:
    """From now on, writes of the FaultyStorage in ``data_dir`` fail with ENOSPC."""
    switch_path(data_dir).touch()


def free_disk(data_dir: Path) -> None:
    """Writes of the FaultyStorage in ``data_dir`` succeed again."""
    switch_path(data_dir).unlink(missing_ok=True)


class FaultyStorage:
    """:class:`LevelDBStorage` whose writes fail while the switch file exists.

    Args:
        path: the storage directory (``<data_dir>/log``; the switch is next to it).
        sync: as for LevelDB.
    """

    def __init__(self, path: Path, *, sync: bool = True) -> None:
        self._inner = LevelDBStorage(path, sync=sync)
        self._switch = switch_path(Path(path).parent)
        #: Writes refused so far.
        self.failures = 0

    def _check_space(self, what: str) -> None:
        if self._switch.exists():
            self.failures += 1
            raise OSError(
                errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (injected: {self._switch}, {what})"
            )

    # -- read side: LevelDB's ------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._inner.initial_state()

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return self._inner.entries(lo, hi, max_bytes)

    def term(self, index: int) -> int:
        return self._inner.term(index)

    def first_index(self) -> int:
        return self._inner.first_index()

    def last_index(self) -> int:
        return self._inner.last_index()

    def snapshot(self) -> Snapshot:
        return self._inner.snapshot()

    # -- write side: fails while the disk is "full" ------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        if hard_state is None and not entries and snapshot is None:
            return
        self._check_space("save")
        self._inner.save(hard_state, entries, snapshot)

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes = b"") -> Snapshot:
        self._check_space("create_snapshot")
        return self._inner.create_snapshot(index, conf_state, data)

    def compact(self, index: int) -> None:
        self._inner.compact(index)  # in memory; made durable by the next save

    def close(self) -> None:
        self._inner.close()
