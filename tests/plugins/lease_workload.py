"""A seeded stream of entries that exercises leases, transactions and the watch history.

Shared by the LevelDB state machine's tests and the child process of its
crash test (``python tests/plugins/lease_workload.py``, see
:func:`main`). Entries: lease grants, puts with and without a lease (some
naming a lease that never existed or has ended), deletes, keep-alives,
revokes, expiries (with the current renewed index and with a stale one),
and transactions that write, delete and list keys, attached to leases or not.
The generator tracks which leases it granted, so most commands name a live
lease and the Applier's every branch is taken.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator

from raftdb.kv.commands import Command
from raftdb.kv.txn import CmpOp, Compare, Target, Txn, TxnOp
from raftdb.raft.messages import Entry, EntryType


class LeaseWorkload:
    """Consecutive committed entries from index 1, in batches of varying size.

    Batch sizes come from their own generator, so the entries are the same
    however a consumer cuts the stream.
    """

    def __init__(self, seed: int, *, keys: int = 40) -> None:
        self.rng = random.Random(seed)
        self.sizes = random.Random(seed + 1)
        self.keys = [b"k/%02d" % i for i in range(keys)]
        self.index = 0
        self.leases: dict[int, int] = {}  # our guess: lease id -> renewed index

    def _lease(self) -> int:
        """A live lease mostly; sometimes one that does not exist."""
        if self.leases and self.rng.random() < 0.9:
            return self.rng.choice(sorted(self.leases))
        return self.rng.randint(1, self.index + 5)

    def _txn(self) -> Command:
        rng = self.rng
        key = rng.choice(self.keys)
        compare = (
            Compare(key, Target.EXISTS, CmpOp.EQ, rng.random() < 0.5),
            Compare(rng.choice(self.keys), Target.MOD_INDEX, CmpOp.LT, rng.randint(0, self.index)),
        )
        ops: list[TxnOp] = []
        for _ in range(rng.randint(1, 6)):
            roll = rng.random()
            target = rng.choice(self.keys)
            if roll < 0.45:
                lease = self._lease() if rng.random() < 0.4 else 0
                ops.append(TxnOp.put(target, rng.randbytes(8), lease=lease))
            elif roll < 0.7:
                ops.append(TxnOp.delete(target))
            elif roll < 0.85:
                ops.append(TxnOp.get(target))
            else:
                ops.append(TxnOp.list(b"k/" + bytes([rng.choice(b"0123")]), rng.randint(1, 5)))
        failure = (TxnOp.put(key, b"failed"),) if rng.random() < 0.5 else ()
        return Command.txn(Txn(compare, tuple(ops), failure).encode())

    def _command(self) -> Command:
        rng = self.rng
        roll = rng.random()
        key = rng.choice(self.keys)
        if roll < 0.08 or not self.leases:
            self.leases[self.index] = self.index  # the grant's index is the lease's id
            return Command.lease_grant(rng.randint(1, 60))
        if roll < 0.40:
            return Command.put(key, rng.randbytes(12), lease=self._lease())
        if roll < 0.58:
            return Command.put(key, rng.randbytes(12))
        if roll < 0.66:
            return Command.delete(key)
        if roll < 0.72:
            lease = self._lease()
            if lease in self.leases:
                self.leases[lease] = self.index
            return Command.lease_keepalive(lease)
        if roll < 0.76:
            lease = self._lease()
            self.leases.pop(lease, None)
            return Command.lease_revoke(lease)
        if roll < 0.82:
            lease = self._lease()
            renewed = self.leases.get(lease, 0)
            if rng.random() < 0.3:
                return Command.lease_expire(lease, renewed + 1)  # stale: refused
            self.leases.pop(lease, None)
            return Command.lease_expire(lease, renewed)
        return self._txn()

    def entry(self) -> Entry:
        self.index += 1
        if self.rng.random() < 0.02:
            return Entry(1, self.index)  # a leader's no-op
        return Entry(1, self.index, EntryType.NORMAL, self._command().encode())

    def batch(self, most: int = 40) -> list[Entry]:
        """The next batch, of at most ``most`` entries."""
        size = min(most, self.sizes.choice((1, 3, 10, 40)))
        return [self.entry() for _ in range(size)]

    def batches(self, total: int) -> Iterator[list[Entry]]:
        """Batches until ``total`` entries have been produced (the last one cut short)."""
        while self.index < total:
            yield self.batch(total - self.index)


def entries_up_to(seed: int, index: int) -> list[Entry]:
    """The workload's entries 1..``index``."""
    out: list[Entry] = []
    for batch in LeaseWorkload(seed).batches(index):
        out.extend(batch)
    return out


def main(argv: list[str]) -> None:
    """Crash-test child: ``<path> <seed> <watch_history>``.

    Applies the workload to a LevelDB state machine at ``path`` (from where
    it stands), printing the applied index after each batch, until killed.
    """
    from raftdb_leveldb import LevelDBStateMachine

    path, seed, history = argv[0], int(argv[1]), int(argv[2])
    machine = LevelDBStateMachine(path, watch_history=history)
    print("ready", machine.applied_index, flush=True)
    workload = LeaseWorkload(seed)
    while True:
        batch = [e for e in workload.batch() if e.index > machine.applied_index]
        if batch:
            machine.apply(batch)
            print(machine.applied_index, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
