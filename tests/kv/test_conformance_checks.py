"""The conformance checks of transactions, leases and the watch history have teeth.

Each broken plugin below breaks one promise and must fail the check that
holds plugins to it; a plugin that keeps its state in a file across close
and reopen (the memory machine, snapshotted at close) passes the durable ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from raftdb.kv.commands import ApplyResult, KeyValue
from raftdb.kv.snapshot import (
    DEFAULT_CHUNK_SIZE,
    SnapshotInfo,
    SnapshotReader,
    SnapshotStream,
    encode_stream,
)
from raftdb.kv.state_machine import MemoryStateMachine, _DictBackend
from raftdb.raft.messages import Entry
from raftdb.testing import STATE_MACHINE_CHECKS, ConformanceError
from raftdb.testing.conformance.watch_leases import WATCH_LEASE_CHECKS


def check(name: str) -> Any:
    return next(c for c in STATE_MACHINE_CHECKS if c.name == name)


class FileMachine(MemoryStateMachine):
    """Durable at close only: its snapshot goes to a file, and is restored at open."""

    def __init__(self, path: Path, **options: Any) -> None:
        super().__init__(path, **options)
        self._file = path
        if path.exists():
            self.restore([path.read_bytes()])

    def close(self) -> None:
        self._file.write_bytes(b"".join(self.snapshot()))
        super().close()


class _StaleScan(_DictBackend):
    """A backend whose scans miss the batch's own writes."""

    def __init__(self, data: dict[bytes, tuple[bytes, int, int]], keys: Any) -> None:
        super().__init__(data, keys)
        self.before = dict(data)

    def scan(self, prefix: bytes, limit: int) -> tuple[list[KeyValue], bool]:
        keys = sorted(k for k in self.before if k.startswith(prefix))
        return [KeyValue(k, *self.before[k]) for k in keys[:limit]], len(keys) > limit


class ScansMissTheBatch(MemoryStateMachine):
    def apply(self, entries: Sequence[Entry]) -> list[ApplyResult]:
        with self._lock.write():
            return self._applier.apply(entries, _StaleScan(self._data, self._keys)).results


class DropsLeasesFromSnapshots(MemoryStateMachine):
    def snapshot(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> SnapshotStream:
        whole = b"".join(super().snapshot(chunk_size))
        reader = SnapshotReader([whole])
        kv = [r for batch in reader.kv_batches() for r in batch]
        sessions = [s for batch in reader.session_batches() for s in batch]
        list(reader.lease_batches())
        history = [c for batch in reader.history_batches() for c in batch]
        reader.finish()
        info: SnapshotInfo = reader.info
        stream = encode_stream(
            info, kv, sessions, chunk_size, history=history, history_floor=reader.history_floor
        )
        return SnapshotStream(info, stream)


class IgnoresWatchHistory(MemoryStateMachine):
    def __init__(self, path: Path | None = None, **options: Any) -> None:
        options.pop("watch_history", None)
        super().__init__(path, **options)


class ForgetsTheFloor(MemoryStateMachine):
    """Restores the history window but not its floor."""

    def restore(self, chunks: Iterable[bytes]) -> SnapshotInfo:
        info = super().restore(chunks)
        a = self._applier
        a.reset(
            a.applied_index,
            a.applied_term,
            a.conf_state,
            a.members,
            list(a.sessions.values()),
            leases=a.leases(),
            history=a.history.changes(),
            history_floor=0,
        )
        return info


@pytest.mark.parametrize(
    ("broken", "name", "message"),
    [
        (ScansMissTheBatch, "transactions", "results of a transaction"),
        (DropsLeasesFromSnapshots, "watch_state_in_snapshots", "restored state"),
        (IgnoresWatchHistory, "history", "history after trimming"),
        (ForgetsTheFloor, "format_1_snapshot", "leases and history"),
    ],
)
def test_a_broken_plugin_fails_its_check(
    broken: type, name: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConformanceError, match=message):
        check(name)(broken, tmp_path)


@pytest.mark.parametrize("name", [c.name for c in WATCH_LEASE_CHECKS])
def test_a_plugin_durable_across_reopen_passes(name: str, tmp_path: Path) -> None:
    check(name)(FileMachine, tmp_path)


def test_the_durable_checks_catch_a_plugin_that_forgets_its_history(tmp_path: Path) -> None:
    class ForgetsHistoryAtReopen(FileMachine):
        def __init__(self, path: Path, **options: Any) -> None:
            super().__init__(path, **options)
            a = self._applier
            a.reset(
                a.applied_index,
                a.applied_term,
                a.conf_state,
                a.members,
                list(a.sessions.values()),
                leases=a.leases(),
            )

    with pytest.raises(ConformanceError, match="after reopen"):
        check("watch_state_survives_reopen")(ForgetsHistoryAtReopen, tmp_path)


def test_the_kv_checks_come_before_the_durable_ones() -> None:
    durable = [c.durable for c in STATE_MACHINE_CHECKS]
    assert durable == sorted(durable)
    assert all(c in STATE_MACHINE_CHECKS for c in WATCH_LEASE_CHECKS)
