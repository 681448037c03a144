"""The StateMachine interface and :class:`MemoryStateMachine`, its in-memory version.

A state machine holds what the committed log means: the keys, plus the small
replicated state an :class:`~raftdb.kv.applier.Applier` keeps (applied index and term,
membership, client sessions, leases, the watch history). Its contract is
hashicorp raft's ``FSM`` made explicit (see each method):

- ``apply`` is deterministic and returns each entry's result to the client;
- reads never see part of a batch;
- ``snapshot`` is cheap at the call and defers the slow work to the stream;
- ``restore`` replaces all state, atomically.

Durability. A durable plugin makes one of three promises about a power loss:

- *durable at apply*: a batch is durable when ``apply`` returns;
- *durable before the next batch* (:class:`DefersDurability`, a plugin with a
  ``make_durable`` method): ``apply`` returns once the batch is visible to
  reads, and the batch is durable once ``make_durable`` returns, and in any
  case before the next ``apply`` writes anything (the plugin does it first),
  when ``snapshot`` returns and when ``close`` returns. After a power loss the
  state is then exactly the state after some prefix of the applied batches,
  missing at most the last one, whole. The driver calls ``make_durable`` on
  its apply thread once the batch's results are handed back, so that the
  fsync is off the answer's path, and replays the lost batch from the Raft
  log at start (it replays from :attr:`~StateMachine.applied_index`). Reads
  see the visible state: a read never sees less than what was answered.
- *durable at make_durable* (:class:`BatchesDurability`, a plugin with a
  ``make_durable`` method and a ``durable_index``): ``apply`` returns once the
  batch is visible and never makes anything durable by itself; every batch
  applied so far is durable once ``make_durable`` returns, and when
  ``snapshot`` and ``close`` return. After a power loss the state is exactly
  the state after some prefix of the applied batches, at or after the
  ``durable_index`` of the last ``make_durable``: the batches since may be
  lost, the newest first, never one without those before it. The driver
  calls ``make_durable`` from a thread of its own, at the same time as the
  applies (it covers every batch whose ``apply`` returned before it was
  called), at most every ``state_sync_interval_ms`` while batches are applied
  (so that many batches share one fsync, as etcd's backend commits every
  100 ms), before a restore and at close, and replays what a power loss took
  from the Raft log at start, which it compacts only up to a snapshot's point
  (durable when ``snapshot`` returns).

Either way, after a restart :attr:`~StateMachine.applied_index` is exactly
the state found, never above it.

Threads. The driver calls ``apply``, ``make_durable`` and ``restore`` from one
thread at a time (its apply worker), except the ``make_durable`` of a plugin
durable at make_durable, which it calls from another thread while batches
apply (never during a ``restore``). ``get``, ``range``, ``history``, ``lease``, ``leases``,
``snapshot``, ``conf_state``, ``members`` and :attr:`applied_index` may be
called from any thread, at the same time as an ``apply``. ``close`` comes
last, once the others have returned.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from raftdb.kv.applier import Applier
from raftdb.kv.changes import DEFAULT_WATCH_HISTORY, Change, Lease
from raftdb.kv.commands import ApplyResult, KeyValue, SessionState
from raftdb.kv.rwlock import RWLock
from raftdb.kv.snapshot import (
    DEFAULT_CHUNK_SIZE,
    KVRecord,
    SnapshotFormatError,
    SnapshotInfo,
    SnapshotReader,
    SnapshotStream,
    encode_stream,
)
from raftdb.kv.sortedkeys import SortedKeys, prefix_end
from raftdb.raft.errors import UsageError
from raftdb.raft.messages import ConfState, Entry

__all__ = [
    "BatchesDurability",
    "DefersDurability",
    "MemoryStateMachine",
    "StateMachine",
    "check_range_args",
]


@runtime_checkable
class StateMachine(Protocol):
    """What a state machine plugin provides. See the module docstring for threads."""

    @property
    def applied_index(self) -> int:
        """The index of the last entry applied.

        Durable together with the data it describes: after a restart the
        state machine is exactly as it was after applying the entries up to
        this index, so the driver replays only the log after it and nothing
        is applied twice. (A durable plugin may come back with a smaller
        index than it had before a crash, never a larger one, and never below
        the index of a snapshot it handed out: see :meth:`snapshot`.)
        """
        ...

    def apply(self, entries: Sequence[Entry]) -> list[ApplyResult]:
        """Apply committed entries, in order, as one atomic batch.

        NORMAL entries with data are :class:`~raftdb.kv.commands.Command` s; empty ones
        are leader no-ops. CONF_CHANGE entries change the conf state with
        :func:`~raftdb.raft.confchange.apply_conf_change` (as the core does)
        and the members table (``ConfChange.context`` is the peer URL); a
        change that function refuses is a no-op with an error result. The
        outcome depends on nothing but the entries and the state before them.

        Concurrent readers see the state before the batch or after it, never
        in between. Entries at or below :attr:`applied_index` are skipped.
        The batch is visible to reads when this returns; whether it is durable
        yet is the plugin's promise (see "Durability" in the module docstring).

        Args:
            entries: consecutive committed entries, starting at or below
                ``applied_index + 1``.

        Returns:
            One result per entry, in order.

        Raises:
            UsageError: the entries are not consecutive or leave a gap; nothing
                was applied.
            OSError: with ``errno`` ``ENOSPC`` or ``EDQUOT`` (``raftdb.storage.nospace``):
                the batch was refused for lack of space and **not applied**:
                readers still see the state before it, :attr:`applied_index`
                has not moved, and the driver calls ``apply`` again with the
                same batch, in order, until it succeeds (the node is read-only
                meanwhile). The plugin must then apply it exactly once, or, if
                it turns out to have been stored after all, return its results
                without applying it again.
            OSError, StorageError: any other failure to write the batch. The
                state machine is then unusable (every later call raises) and
                the node must stop: its state may be behind what it reported.
        """
        ...

    def get(self, key: bytes) -> KeyValue | None:
        """The key's value and indexes, or ``None``. From any thread."""
        ...

    def range(
        self,
        prefix: bytes = b"",
        start: bytes = b"",
        limit: int | None = None,
        *,
        values: bool = True,
        max_bytes: int | None = None,
    ) -> list[KeyValue]:
        """Keys that start with ``prefix`` and are ``>= start``, in ascending order.

        Args:
            prefix: only keys starting with it.
            start: only keys at or after it (resume a listing with the last
                key returned plus ``b"\\x00"``).
            limit: at most this many (``None``: all).
            values: with the values; ``False``: each ``value`` is ``b""``, so
                that a listing of keys never holds the values in memory.
            max_bytes: stop after the key that brings the bytes returned (keys,
                and values if ``values``) to ``max_bytes`` or more (``None``: no
                bound). At least one key is returned, however large. What a
                listing answer holds in memory is bounded so, whatever ``limit``.

        Returns:
            One consistent view: never part of a batch. From any thread.

        Raises:
            ValueError: ``limit`` is negative, or ``max_bytes`` below 1.
        """
        ...

    def conf_state(self) -> ConfState:
        """The membership as of :attr:`applied_index`."""
        ...

    def history(self, after: int, limit: int) -> tuple[int, list[Change]]:
        """The retained watch history after index ``after``: ``(floor, changes)``.

        ``floor`` is the history floor (every change with an index above it is
        retained, see :mod:`raftdb.kv.changes`); ``changes`` are the first
        changes with an index above ``after``, in order: at least ``limit``
        of them if there are that many, and then to the end of their last
        index (a transaction's changes are never split). When ``after <
        floor`` some changes after ``after`` are gone: the caller reports
        that (``410 compacted``) instead of using the list. From any thread;
        one consistent view, never part of a batch.
        """
        ...

    def lease(self, lease_id: int) -> Lease | None:
        """The lease as of :attr:`applied_index`, or ``None``. From any thread."""
        ...

    def leases(self) -> list[Lease]:
        """Every lease as of :attr:`applied_index`, by id. From any thread."""
        ...

    def members(self) -> dict[int, str]:
        """``{node id: peer URL}`` for every member as of :attr:`applied_index`.

        A member added by a change with an empty context has URL ``""``.
        """
        ...

    def snapshot(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> SnapshotStream:
        """Start a snapshot of the current state; the bulk is read lazily.

        The point in time is fixed when this returns (its ``info`` says which
        index); applies may go on while the stream is read, from any thread.
        That point is durable when this returns: after a crash the state
        machine comes back at or after it, so the driver may compact the log
        up to ``info.index``.

        Args:
            chunk_size: upper bound on each chunk's size in bytes.

        Returns:
            A stream in the :mod:`raftdb.kv.snapshot` format. Close it if
            not read to the end.
        """
        ...

    def restore(self, chunks: Iterable[bytes]) -> SnapshotInfo:
        """Replace the whole state with a snapshot stream's, atomically.

        Either the new state is complete and in place (durably, for a durable
        plugin) when this returns, or the old state is untouched: a damaged
        or truncated stream, an error or a crash midway leaves the old state
        whole. Called from the apply thread, never during an ``apply``.

        Args:
            chunks: the stream, split anywhere.

        Returns:
            The restored snapshot's header.

        Raises:
            SnapshotFormatError: the stream is damaged or truncated.
        """
        ...

    def close(self) -> None:
        """Release files and handles. Nothing may be called afterwards."""
        ...


@runtime_checkable
class DefersDurability(Protocol):
    """A state machine whose batches become durable after ``apply`` returns: it
    promises *durable before the next batch* (see the module docstring)."""

    def make_durable(self) -> None:
        """Make every applied batch durable; returns at once if they are.

        Called from the apply thread, never during an ``apply`` or a ``restore``.

        Raises:
            OSError: with ``errno`` ``ENOSPC`` or ``EDQUOT``: refused for lack of
                space; the batch is not durable yet, and the next ``apply`` (or
                ``make_durable``) tries again first, raising the same while the
                disk is full. Any other ``OSError`` or ``StorageError``: the
                state machine is unusable, as after a failed ``apply``.
        """
        ...


@runtime_checkable
class BatchesDurability(DefersDurability, Protocol):
    """A state machine whose batches become durable only at ``make_durable``: it
    promises *durable at make_durable* (see the module docstring), so the driver
    may let many batches share one ``make_durable``, which it calls from a
    thread of its own while ``apply`` goes on (``make_durable`` must allow that)."""

    @property
    def durable_index(self) -> int:
        """The applied index up to which every batch is durable: where the state
        machine comes back after a power loss, at least. Moved by ``make_durable``
        (and by a restore, or the open); from any thread."""
        ...


def check_range_args(limit: int | None, max_bytes: int | None = None) -> None:
    """Raise ``ValueError`` for a negative ``limit`` or a ``max_bytes`` below 1
    (shared by implementations)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if max_bytes is not None and max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")


class _DictBackend:
    """The Applier's view of a MemoryStateMachine during one batch.

    The machine writes in place (readers are kept out by the write lock for
    the whole batch), so the batch's own writes are visible to ``read`` and
    ``scan`` as they are to ``load``.
    """

    __slots__ = ("data", "keys")

    def __init__(self, data: dict[bytes, tuple[bytes, int, int]], keys: SortedKeys) -> None:
        self.data = data
        self.keys = keys

    def load(self, key: bytes) -> tuple[int, int] | None:
        record = self.data.get(key)
        return None if record is None else (record[1], record[2])

    def store(self, key: bytes, value: bytes, create_index: int, mod_index: int) -> None:
        if key not in self.data:
            self.keys.add(key)
        self.data[key] = (value, create_index, mod_index)

    def remove(self, key: bytes) -> None:
        del self.data[key]
        self.keys.discard(key)

    def read(self, key: bytes) -> tuple[bytes, int, int] | None:
        return self.data.get(key)

    def scan(self, prefix: bytes, limit: int) -> tuple[list[KeyValue], bool]:
        data = self.data
        out: list[KeyValue] = []
        for key in self.keys.irange(prefix, prefix_end(prefix)):
            if len(out) == limit:
                return out, True
            out.append(KeyValue(key, *data[key]))
        return out, False


class MemoryStateMachine:
    """The state machine held in process memory: the ``memory`` plugin.

    Nothing survives the object: a node using it rebuilds its state from the
    log (and snapshots) at every start. Reads take a shared lock and applies
    an exclusive one, so a reader waits at most one batch. A snapshot copies
    the key table under the lock (O(n) pointer copies, about 40 ms and 40 MB
    per million keys) and encodes the copy while applies go on.

    Args:
        path, sync: ignored (accepted for the plugin factory convention).
        session_ttl: overrides :data:`raftdb.kv.commands.SESSION_TTL_ENTRIES`; a cluster
            must use one value on every node.
        watch_history: changes the watch history retains (``None``:
            :data:`raftdb.kv.changes.DEFAULT_WATCH_HISTORY`).
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        sync: bool = True,
        session_ttl: int | None = None,
        watch_history: int | None = None,
    ) -> None:
        self._lock = RWLock()
        options: dict[str, int] = {}
        if session_ttl is not None:
            options["session_ttl"] = session_ttl
        options["history_limit"] = DEFAULT_WATCH_HISTORY if watch_history is None else watch_history
        self._applier = Applier(**options)
        self._data: dict[bytes, tuple[bytes, int, int]] = {}
        self._keys = SortedKeys()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("the state machine is closed")

    @property
    def applied_index(self) -> int:
        return self._applier.applied_index

    def apply(self, entries: Sequence[Entry]) -> list[ApplyResult]:
        with self._lock.write():
            self._check_open()
            backend = _DictBackend(self._data, self._keys)
            return self._applier.apply(entries, backend).results

    def get(self, key: bytes) -> KeyValue | None:
        with self._lock.read():
            self._check_open()
            record = self._data.get(key)
        return None if record is None else KeyValue(key, *record)

    def range(
        self,
        prefix: bytes = b"",
        start: bytes = b"",
        limit: int | None = None,
        *,
        values: bool = True,
        max_bytes: int | None = None,
    ) -> list[KeyValue]:
        check_range_args(limit, max_bytes)
        if limit == 0:
            return []
        out: list[KeyValue] = []
        budget = -1 if max_bytes is None else max_bytes  # -1: unbounded
        with self._lock.read():
            self._check_open()
            data = self._data
            for key in self._keys.irange(max(prefix, start), prefix_end(prefix)):
                value, create, mod = data[key]
                if not values:
                    value = b""
                out.append(KeyValue(key, value, create, mod))
                if len(out) == limit:
                    break
                if budget >= 0:
                    budget -= len(key) + len(value)
                    if budget <= 0:
                        break
        return out

    def conf_state(self) -> ConfState:
        with self._lock.read():
            return self._applier.conf_state

    def history(self, after: int, limit: int) -> tuple[int, list[Change]]:
        with self._lock.read():
            self._check_open()
            return self._applier.history_page(after, limit)

    def lease(self, lease_id: int) -> Lease | None:
        with self._lock.read():
            self._check_open()
            return self._applier.lease(lease_id)

    def leases(self) -> list[Lease]:
        with self._lock.read():
            self._check_open()
            return self._applier.leases()

    def members(self) -> dict[int, str]:
        with self._lock.read():
            return dict(self._applier.members)

    def snapshot(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> SnapshotStream:
        with self._lock.read():
            self._check_open()
            a = self._applier
            info = SnapshotInfo(a.applied_index, a.applied_term, a.conf_state, dict(a.members))
            # Values are immutable tuples and sessions are copy-on-write, so
            # shallow copies are a consistent, private view.
            data = dict(self._data)
            keys = self._keys.copy()
            sessions = sorted(a.sessions.values(), key=lambda s: s.client_id)
            leases = a.leases()  # immutable Lease objects
            history, floor = a.history.changes(), a.history_floor

        def records() -> Iterator[KVRecord]:
            for key in keys:
                value, create, mod = data[key]
                yield key, value, create, mod

        chunks = encode_stream(
            info,
            records(),
            sessions,
            chunk_size,
            leases=leases,
            history=history,
            history_floor=floor,
        )
        return SnapshotStream(info, chunks)

    def restore(self, chunks: Iterable[bytes]) -> SnapshotInfo:
        self._check_open()
        reader = SnapshotReader(chunks)
        data: dict[bytes, tuple[bytes, int, int]] = {}
        ordered: list[bytes] = []
        for batch in reader.kv_batches():
            for key, value, create, mod in batch:
                data[key] = (value, create, mod)
                ordered.append(key)
        sessions: list[SessionState] = []
        for session_batch in reader.session_batches():
            sessions.extend(session_batch)
        leases = [lease for batch in reader.lease_batches() for lease in batch]
        history = [change for batch in reader.history_batches() for change in batch]
        reader.finish()
        info = reader.info
        keys = SortedKeys.from_sorted(ordered)
        with self._lock.write():
            self._check_open()
            try:
                self._applier.reset(
                    info.index,
                    info.term,
                    info.conf_state,
                    info.members,
                    sessions,
                    leases=leases,
                    history=history,
                    history_floor=reader.history_floor,
                )
            except ValueError as exc:  # the reader checks all of it; kept as a backstop
                raise SnapshotFormatError(f"the snapshot's state is inconsistent: {exc}") from None
            self._data, self._keys = data, keys
        return info

    def close(self) -> None:
        with self._lock.write():
            self._closed = True
            self._data = {}
            self._keys = SortedKeys()
