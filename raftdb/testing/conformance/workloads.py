"""Deterministic streams of storage operations and of committed entries.

The conformance checks and their crash tests need the same long, varied
sequence of operations on both sides of a process boundary: the child
process performs it, the parent recomputes what the state must be after any
step. So each workload is a pure function of a seed, and keeps its own
reference model (:class:`~raftdb.storage.memory.MemoryStorage`, or for entries
nothing: a :class:`~raftdb.state_machine.MemoryStateMachine` replays them).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from raftdb.kv.commands import Command
from raftdb.kv.txn import CmpOp, Compare, Target, Txn, TxnOp
from raftdb.raft.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMetadata,
)
from raftdb.storage.memory import MemoryStorage
from raftdb.storage.protocol import Storage

__all__ = [
    "EntryWorkload",
    "StorageOp",
    "StorageWorkload",
    "dump_storage",
    "mismatch",
    "replay_storage",
    "storage_is",
]


@dataclass(frozen=True, slots=True)
class StorageOp:
    """One storage call: ``save``, ``create_snapshot`` or ``compact``."""

    kind: str
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    index: int = 0
    conf_state: ConfState = ConfState()
    data: bytes = b""

    def run(self, storage: Any) -> None:
        """Perform the operation on ``storage``."""
        if self.kind == "save":
            storage.save(self.hard_state, list(self.entries), self.snapshot)
        elif self.kind == "create_snapshot":
            storage.create_snapshot(self.index, self.conf_state, self.data)
        else:
            storage.compact(self.index)

    def describe(self) -> str:
        """One line for failure messages."""
        if self.kind == "save":
            span = f"{self.entries[0].index}..{self.entries[-1].index}" if self.entries else "-"
            snap = f" snapshot@{self.snapshot.metadata.index}" if self.snapshot else ""
            return f"save(hs={self.hard_state}, entries {span}{snap})"
        return f"{self.kind}({self.index})"


def dump_storage(storage: Any) -> dict[str, Any]:
    """Everything a storage shows through the read protocol, for comparisons."""
    hard_state, conf_state = storage.initial_state()
    first, last = storage.first_index(), storage.last_index()
    return {
        "hard_state": hard_state,
        "conf_state": conf_state,
        "snapshot": storage.snapshot(),
        "first_index": first,
        "last_index": last,
        "dummy_term": storage.term(first - 1),
        "entries": storage.entries(first, last + 1),
    }


class StorageWorkload:
    """A seeded stream of valid storage operations, with a model of the result.

    Appends with and without conflicting tails, hard state changes, snapshot
    creation, compaction and snapshot installation, in the mix a Raft node
    produces. ``big`` makes batches up to 1,000 entries of up to 1 KB, so that
    saves take long enough for a crash test to kill a process inside one.
    """

    def __init__(self, seed: int, *, big: bool = False) -> None:
        self.rng = random.Random(seed)
        self.big = big
        self.model = MemoryStorage()
        self.term = 1
        self.vote = 1
        self.steps = 0
        #: Entries compacted out of the model, by index: a crashed storage may
        #: still show them (compaction need not be durable), and must show these.
        self.compacted: dict[int, Entry] = {}

    def _batch(self, start: int) -> tuple[Entry, ...]:
        rng = self.rng
        sizes = (1, 1, 3, 10, 64, 300, 1000) if self.big else (1, 1, 2, 5, 20, 64)
        lengths = (0, 16, 100, 1000) if self.big else (0, 1, 16, 100)
        count = rng.choice(sizes)
        out = []
        for i in range(start, start + count):
            kind = EntryType.CONF_CHANGE if rng.random() < 0.02 else EntryType.NORMAL
            out.append(Entry(self.term, i, kind, rng.randbytes(rng.choice(lengths))))
        return tuple(out)

    def _hard_state(self, last: int) -> HardState:
        commit = self.model.hard_state().commit
        commit = self.rng.randint(commit, max(commit, last))
        return HardState(self.term, self.vote, commit)

    def next_op(self) -> StorageOp:
        """The next operation, valid for the model's current state."""
        rng, model = self.rng, self.model
        first, last = model.first_index(), model.last_index()
        commit = model.hard_state().commit
        snap_index = model.snapshot().metadata.index
        roll = rng.random()
        if roll < 0.12 and last >= max(first, commit + 1):
            # A new leader overwrites the uncommitted tail.
            self.term += 1
            entries = self._batch(rng.randint(max(first, commit + 1), last))
            return StorageOp("save", self._hard_state(entries[-1].index), entries)
        if roll < 0.20 and commit > snap_index:
            conf = ConfState(voters=tuple(sorted(rng.sample(range(1, 8), rng.randint(1, 3)))))
            index = rng.randint(snap_index + 1, commit)
            return StorageOp("create_snapshot", index=index, conf_state=conf, data=b"s%d" % index)
        if roll < 0.30 and snap_index >= first - 1:
            return StorageOp("compact", index=rng.randint(max(first - 3, 0), snap_index))
        if roll < 0.34:
            # A snapshot from the leader, ahead of (or inside) our log.
            index = rng.randint(max(snap_index, commit) + 1, last + 30)
            self.term += rng.randint(0, 1)
            conf = ConfState(voters=(1, 2, 3), learners=(4,) if rng.random() < 0.5 else ())
            snapshot = Snapshot(SnapshotMetadata(index, self.term, conf), rng.randbytes(20))
            entries = self._batch(index + 1) if rng.random() < 0.5 else ()
            end = entries[-1].index if entries else index
            hard_state = HardState(self.term, self.vote, rng.randint(index, end))
            return StorageOp("save", hard_state, entries, snapshot)
        if roll < 0.38:
            self.term += 1
            self.vote = rng.randint(0, 5)
            return StorageOp("save", HardState(self.term, self.vote, commit))
        entries = self._batch(last + 1)
        return StorageOp("save", self._hard_state(entries[-1].index), entries)

    def step(self) -> StorageOp:
        """Generate the next operation and apply it to the model."""
        op = self.next_op()
        self.apply(op)
        return op

    def apply(self, op: StorageOp) -> None:
        """Apply :meth:`next_op`'s result to the model."""
        if op.kind == "compact":
            dummy = self.model.first_index() - 1
            for entry in self.model.all_entries()[: max(op.index - dummy, 0)]:
                self.compacted[entry.index] = entry
        op.run(self.model)
        self.steps += 1

    def snapshot_model(self) -> MemoryStorage:
        """A copy of the model as it is now."""
        return copy.deepcopy(self.model)


def mismatch(found: dict[str, Any], model: MemoryStorage, compacted: dict[int, Entry]) -> str:
    """Why ``found`` (a :func:`dump_storage`) is not the model's state, or ``""``.

    The storage may show a log starting before the model's (a compaction
    that was not yet durable), provided the extra entries are the ones the
    model compacted away.
    """
    want = dump_storage(model)
    for key in ("hard_state", "conf_state", "snapshot", "last_index"):
        if found[key] != want[key]:
            return f"{key}: found {found[key]!r}, want {want[key]!r}"
    first, want_first = found["first_index"], want["first_index"]
    if first > want_first:
        return f"first_index: found {first}, want at most {want_first}"
    extra = found["entries"][: want_first - first]
    if extra != [compacted.get(e.index) for e in extra]:
        return "entries before the model's first index differ from the compacted ones"
    if first == want_first and found["dummy_term"] != want["dummy_term"]:
        return f"term({first - 1}): found {found['dummy_term']}, want {want['dummy_term']}"
    if first < want_first:
        prev = compacted.get(first - 1)
        expected_term = 0 if first == 1 else (prev.term if prev else None)
        if expected_term is not None and found["dummy_term"] != expected_term:
            return f"term({first - 1}): found {found['dummy_term']}, want {expected_term}"
    if found["entries"][want_first - first :] != want["entries"]:
        return "the entries differ"
    return ""


class EntryWorkload:
    """A seeded stream of committed entries in batches, as a state machine sees them.

    Puts, deletes, compare-and-sets and create-onlys on a small key space
    (so conditions both hold and fail), commands with client sessions and
    retries of them, leader no-ops, membership changes (valid and refused)
    and undecodable data; and, with shares above 0, transactions (every
    compare and operation, branches that read their own writes, leases that
    may not exist) and leases (grants, puts attached to them, keep-alives,
    revokes, expiries naming a current or a stale renewal, unknown ids).

    Args:
        seed: the stream is a pure function of it (and of the other arguments).
        keys: the size of the key space.
        value_size: bytes per value.
        txns: the share of commands that are transactions.
        leases: the share of commands that are lease commands or puts with a lease.
    """

    def __init__(
        self,
        seed: int,
        *,
        keys: int = 64,
        value_size: int = 24,
        txns: float = 0.05,
        leases: float = 0.1,
    ) -> None:
        self.rng = random.Random(seed)
        # Batch sizes come from their own generator, so the entries are the
        # same however a consumer cuts the stream into batches.
        self.sizes = random.Random(seed + 1)
        self.keys = [b"k%03d" % i for i in range(keys)]
        self.value_size = value_size
        self.txn_share = txns
        self.lease_share = leases
        self.index = 0
        self.term = 1
        self.mods: dict[bytes, int] = {}  # our guess of each key's mod index
        self.sent: list[bytes] = []  # recent session commands, for retries
        self.seq: dict[bytes, int] = {}
        self.granted: dict[int, int] = {}  # our guess of lease -> renewal index

    def _session(self) -> dict[str, Any]:
        rng = self.rng
        if rng.random() >= 0.4:
            return {}
        client = b"client-%d" % rng.randint(1, 6)
        seq = self.seq.get(client, 0) + 1
        self.seq[client] = seq
        return {"client_id": client, "seq": seq, "ack": max(0, seq - rng.randint(0, 5))}

    def _lease_id(self) -> int:
        """A lease we granted (maybe since ended), or now and then one never granted."""
        rng = self.rng
        if not self.granted or rng.random() < 0.1:
            return rng.randint(1, self.index + 2)
        return rng.choice(sorted(self.granted))

    def _command(self) -> bytes:
        rng = self.rng
        key = rng.choice(self.keys)
        roll = rng.random()
        if self.sent and roll < 0.08:
            return rng.choice(self.sent)  # a client's retry
        session = self._session()
        roll = rng.random()
        if roll < self.txn_share:
            command = Command.txn(self._txn().encode())
            if session:
                command = command.with_session(**session)
        elif roll < self.txn_share + self.lease_share:
            command = self._lease_command(key, session)
        else:
            value = rng.randbytes(self.value_size)
            roll = rng.random()
            if roll < 0.55:
                command = Command.put(key, value, **session)
            elif roll < 0.70:
                guess = (
                    self.mods.get(key, 0) if rng.random() < 0.7 else rng.randint(1, self.index + 1)
                )
                command = Command.put(key, value, if_mod=guess or None, **session)
            elif roll < 0.78:
                command = Command.put(key, value, create_only=True, **session)
            else:
                expect = self.mods.get(key) if rng.random() < 0.5 else None
                command = Command.delete(key, if_mod=expect, **session)
            self.mods[key] = self.index + 1
        data = command.encode()
        if session:
            self.sent = [*self.sent[-20:], data]
        return data

    def _lease_command(self, key: bytes, session: dict[str, Any]) -> Command:
        rng = self.rng
        roll = rng.random()
        index = self.index  # this entry's (see _entry)
        if roll < 0.2 or not self.granted:
            self.granted[index] = index
            command = Command.lease_grant(rng.randint(1, 60))
        elif roll < 0.6:
            self.mods[key] = index
            value = rng.randbytes(self.value_size)
            return Command.put(key, value, lease=self._lease_id(), **session)
        elif roll < 0.75:
            lease = self._lease_id()
            if lease in self.granted:
                self.granted[lease] = index
            command = Command.lease_keepalive(lease)
        elif roll < 0.85:
            lease = self._lease_id()
            self.granted.pop(lease, None)
            command = Command.lease_revoke(lease)
        else:
            lease = self._lease_id()
            renewed = self.granted.pop(lease, lease)
            if rng.random() < 0.3:
                renewed = max(1, renewed - rng.randint(1, 3))  # a stale view
                self.granted[lease] = renewed
            command = Command.lease_expire(lease, renewed)
        return command.with_session(**session) if session else command

    def _txn(self) -> Txn:
        rng = self.rng
        compares = []
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            key = rng.choice(self.keys)
            target = rng.choice(list(Target))
            op = rng.choice((CmpOp.EQ, CmpOp.NE) if target == Target.EXISTS else list(CmpOp))
            value: bytes | int | bool
            if target == Target.VALUE:
                value = rng.randbytes(self.value_size) if rng.random() < 0.5 else b"\x80"
            elif target == Target.EXISTS:
                value = rng.random() < 0.5
            else:
                value = self.mods.get(key, 0) + rng.randint(-1, 1)
                value = max(0, value)
            compares.append(Compare(key, target, op, value))
        return Txn(tuple(compares), self._branch(), self._branch())

    def _branch(self) -> tuple[TxnOp, ...]:
        rng = self.rng
        ops = []
        for _ in range(rng.choice((0, 1, 2, 4, 8))):
            key = rng.choice(self.keys)
            roll = rng.random()
            if roll < 0.4:
                lease = self._lease_id() if self.granted and rng.random() < 0.15 else 0
                ops.append(TxnOp.put(key, rng.randbytes(self.value_size), lease=lease))
                self.mods[key] = self.index + 1
            elif roll < 0.6:
                ops.append(TxnOp.delete(key))
            elif roll < 0.85:
                ops.append(TxnOp.get(key))
            else:
                ops.append(TxnOp.list(key[: rng.randint(0, 3)], rng.choice((1, 5, 100))))
        return tuple(ops)

    def _entry(self) -> Entry:
        rng = self.rng
        self.index += 1
        roll = rng.random()
        if roll < 0.03:
            self.term += 1
            return Entry(self.term, self.index)  # a new leader's no-op
        if roll < 0.05:
            kind = rng.choice(list(ConfChangeType))
            url = b"http://127.0.0.1:%d" % rng.randint(10000, 60000)
            change = ConfChange(kind, rng.randint(0, 5), url if rng.random() < 0.8 else b"")
            return Entry(self.term, self.index, EntryType.CONF_CHANGE, change.encode())
        if roll < 0.06:
            return Entry(self.term, self.index, EntryType.NORMAL, rng.randbytes(7))
        return Entry(self.term, self.index, EntryType.NORMAL, self._command())

    def batch(self, max_size: int = 200) -> list[Entry]:
        """The next batch of committed entries."""
        count = self.sizes.choice((1, 2, 5, 20, max_size))
        return [self._entry() for _ in range(max(1, min(count, max_size)))]

    def batches(self, total: int, max_size: int = 200) -> Iterator[list[Entry]]:
        """Batches until ``total`` entries have been produced."""
        while self.index < total:
            yield self.batch(min(max_size, total - self.index))


def replay_storage(seed: int, steps: int, *, big: bool = False) -> StorageWorkload:
    """A workload advanced by ``steps`` operations (the model only)."""
    workload = StorageWorkload(seed, big=big)
    for _ in range(steps):
        workload.step()
    return workload


def storage_is(storage: Storage, workload: StorageWorkload) -> str:
    """:func:`mismatch` of ``storage`` against the workload's model, or ``""``."""
    return mismatch(dump_storage(storage), workload.model, workload.compacted)
