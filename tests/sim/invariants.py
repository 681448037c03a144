"""Raft's safety properties, checked while a simulation runs.

- Election safety: at most one leader per term (Figure 3), and a leader is a
  voter of the membership it runs.
- Durable commitment: whenever a leader's commit index moves, the entry there
  is on the disk of a majority of its voters (what "committed" means: the
  leader's own unsaved copy, a learner's or a minority's do not count).
- No committed entry leaves a disk: a save (a snapshot installed) keeps every
  committed entry the node's disk held, or covers it with the snapshot.
- Positions: each node's applied index is at most its commit index.
- Log matching: two logs with an entry of the same index and term are
  identical up to it.
- Leader completeness: a new leader's log holds every committed entry.
- State machine safety: no two nodes apply different entries at one index,
  and each node applies indexes in order, without gaps.
- Snapshot agreement: every snapshot of one index holds the same state.
- Determinism: every node computes the same result for each index (also
  after a restart replays it), and the same whole state (keys, sessions,
  leases, watch history: the snapshot image) after every fourth index, where
  two nodes end a batch there (batches are cut at random).
- Watch history: each node's retained history is exactly the committed
  changes of the last whole indexes that fit in its window, in order, no gap,
  no duplicate, with the floor just below (the same after restarts and
  snapshot installs).
- Lease semantics: every committed lease command, put and transaction has
  the outcome raftdb's rules give (:class:`LeaseModel`, written again from
  the spec), and each node's leases agree with the model's.
- Linearizability of the clients' history, transactions included (the
  checker in ``raftdb.testing.linearizability``, :class:`KVTxnModel`).

The lease timing invariants and the bank's are in ``workload.py``, where the
clients' view of time is.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import TypeAlias

from raftdb.kv.changes import Change, ChangeKind
from raftdb.kv.commands import ApplyResult, Command, CommandStatus, KVResult, Op
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.kv.txn import Txn, TxnOpKind
from raftdb.raft import CompactedError, Entry, RawNode, Role
from raftdb.storage.memory import MemoryStorage
from raftdb.testing.linearizability import (
    KVTxnInput,
    KVTxnModel,
    KVTxnOutput,
    Operation,
    check_linearizability,
)

#: Nodes' whole states are compared at the indexes that are multiples of this.
DIGEST_EVERY = 4

#: A node's disk by its id (None for a node the simulation does not have).
Disks: TypeAlias = Callable[[int], MemoryStorage | None]


class InvariantViolation(AssertionError):
    """A safety property failed."""


class Invariants:
    """Tracks what the cluster has committed and checks each observation against it."""

    def __init__(self, watch_history: int, disks: Disks) -> None:
        self.watch_history = watch_history
        self.disks = disks
        self.results: dict[int, ApplyResult] = {}  # index -> the first node's result
        self.last_committed = 0  # the highest index any node applied
        self.digests: dict[int, tuple[int, int]] = {}  # index -> (image hash, nodes compared)
        self.changes: list[Change] = []  # every committed change, in order
        self.change_index: list[int] = []  # their indexes, for bisect
        self.lease_model = LeaseModel()
        self.leaders: dict[int, int] = {}  # term -> leader id
        self.committed: dict[int, tuple[int, int, bytes]] = {}  # index -> (term, type, data)
        self.snapshots: dict[int, bytes] = {}  # index -> state machine image
        self.roles: dict[int, tuple[Role, int]] = {}
        self.commit_seen: dict[int, int] = {}
        self.voters_seen: dict[int, frozenset[int]] = {}  # node -> voters at its last input
        self.elections = 0

    def node_started(self, node_id: int) -> None:
        """A (re)start: in-memory positions may go back to what was saved."""
        self.roles.pop(node_id, None)
        self.commit_seen.pop(node_id, None)
        self.voters_seen.pop(node_id, None)

    def observe(self, node_id: int, raw: RawNode) -> None:
        """Check a node after it handled an input."""
        role, term = raw.role, raw.term
        if role == Role.LEADER:
            voters = raw._raft.tracker.voters
            if node_id not in voters:
                # Membership is adopted when applied, and a leader that applies its own
                # removal or demotion steps down at once (thesis §4.2.2).
                raise InvariantViolation(
                    f"node {node_id} leads term {term} but is not one of its voters "
                    f"{sorted(voters)}"
                )
            other = self.leaders.setdefault(term, node_id)
            if other != node_id:
                raise InvariantViolation(f"two leaders in term {term}: {other} and {node_id}")
            if self.roles.get(node_id) != (role, term):
                self.elections += 1
                self._check_leader_completeness(node_id, raw)
        self.roles[node_id] = (role, term)
        commit = raw.commit_index
        seen = self.commit_seen.get(node_id, 0)
        if commit < seen:
            raise InvariantViolation(
                f"node {node_id}'s commit index went back from "
                f"{self.commit_seen[node_id]} to {commit} without a restart"
            )
        if commit > seen and role == Role.LEADER:
            self._check_durable_quorum(node_id, raw, commit)
        self.commit_seen[node_id] = commit
        self.voters_seen[node_id] = raw._raft.tracker.voters
        if raw.applied_index > commit:
            raise InvariantViolation(
                f"node {node_id}'s applied index {raw.applied_index} is beyond its commit "
                f"index {commit}"
            )

    def _check_durable_quorum(self, node_id: int, raw: RawNode, commit: int) -> None:
        """The entry at a leader's new commit index is on a majority of its voters' disks.

        Of the voters before this input or after it: one input can commit under
        the old membership and then apply a change (``advance()`` counts the
        saved entries, then applies the committed ones), and a change applied
        can commit under the new one.
        """
        r = raw._raft
        term = r.log.term_or_zero(commit)
        memberships = {r.tracker.voters, self.voters_seen.get(node_id, r.tracker.voters)}
        for members in memberships:
            voters = sorted(members)
            held = [v for v in voters if self._durable(v, commit, term)]
            # A majority, counted here and not with the core's quorum code, which a
            # mutation may have broken.
            if len(held) > len(voters) // 2:
                return
        voters = sorted(r.tracker.voters)
        held = [v for v in voters if self._durable(v, commit, term)]
        raise InvariantViolation(
            f"leader {node_id} (term {raw.term}) committed {commit} (term {term}), which is "
            f"on the disks of {held or 'none'} only, of voters {voters}"
        )

    def _durable(self, node_id: int, index: int, term: int) -> bool:
        """Whether ``node_id``'s disk holds the entry ``(index, term)`` (or a snapshot past it)."""
        disk = self.disks(node_id)
        if disk is None:
            return False
        snap = disk.snapshot().metadata
        if index < snap.index:
            return True  # compacted into a snapshot, which holds only committed entries
        if index == snap.index:
            return snap.term == term
        if index > disk.last_index():
            return False
        try:
            return disk.term(index) == term
        except CompactedError:
            return True

    def _check_leader_completeness(self, node_id: int, raw: RawNode) -> None:
        log = raw._raft.log
        first = log.first_index()
        last = log.last_index()
        for index, (term, _, data) in self.committed.items():
            if index < first:
                continue  # covered by the leader's snapshot
            if index > last:
                raise InvariantViolation(
                    f"leader {node_id} (term {raw.term}) lacks committed entry {index}"
                )
            entry = log.slice(index, index + 1, None)[0]
            if entry.term != term or entry.data != data:
                raise InvariantViolation(
                    f"leader {node_id} (term {raw.term}) has {entry.term}/{entry.data!r} at "
                    f"{index}, committed was {term}/{data!r}"
                )

    def applied(self, node_id: int, entry: Entry, prev_applied: int) -> None:
        """Check one entry a node applies."""
        if entry.index != prev_applied + 1:
            raise InvariantViolation(
                f"node {node_id} applied {entry.index} after {prev_applied}: a gap or a repeat"
            )
        record = (entry.term, int(entry.type), entry.data)
        known = self.committed.setdefault(entry.index, record)
        if known != record:
            raise InvariantViolation(
                f"state machine safety: node {node_id} applied {record} at {entry.index}, "
                f"another node applied {known}"
            )

    def committed_held(self, storage: MemoryStorage) -> list[tuple[int, int]]:
        """The committed entries ``storage`` holds past its snapshot, as ``(index, term)``:
        what a save must leave on the disk (:meth:`kept`)."""
        first = storage.snapshot().metadata.index + 1
        held = []
        for index in range(first, min(storage.last_index(), self.last_committed) + 1):
            known = self.committed.get(index)
            if known is not None and storage.term(index) == known[0]:
                held.append((index, known[0]))
        return held

    def kept(self, node_id: int, held: list[tuple[int, int]]) -> None:
        """Check that a save kept the committed entries the disk held before it.

        A follower that holds a snapshot's last entry keeps the entries after it
        (Figure 13, InstallSnapshot step 6); one that does not hold it holds no
        committed entry past it (log matching). Only the commit-time check would
        miss a committed entry thrown away later, once the majority that made it
        committed is no longer one.
        """
        for index, term in held:
            if not self._durable(node_id, index, term):
                raise InvariantViolation(
                    f"node {node_id}'s save took committed entry {index} (term {term}) off its disk"
                )

    def snapshotted(self, node_id: int, index: int, image: bytes) -> None:
        """Check a snapshot a node takes of its state machine."""
        known = self.snapshots.setdefault(index, image)
        if known != image:
            raise InvariantViolation(f"node {node_id}'s snapshot at {index} differs from another's")

    def restored(self, node_id: int, index: int, image: bytes) -> None:
        """Check a snapshot a node installs from its leader."""
        self.snapshotted(node_id, index, image)

    def saved(self, node_id: int, storage: MemoryStorage) -> None:
        """Check a node's disk after a save: its commit index is within its log."""
        hs = storage.hard_state()
        if hs.commit > storage.last_index():
            raise InvariantViolation(
                f"node {node_id} saved commit {hs.commit} beyond its last index "
                f"{storage.last_index()}"
            )

    def check_logs(self, nodes: dict[int, RawNode]) -> None:
        """Log matching across every pair of live nodes."""
        logs: dict[int, dict[int, Entry]] = {}
        for node_id, raw in nodes.items():
            log = raw._raft.log
            try:
                entries = log.slice(log.first_index(), log.last_index() + 1, None)
            except CompactedError:
                continue
            logs[node_id] = {e.index: e for e in entries}
        ids = sorted(logs)
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                la, lb = logs[a], logs[b]
                common = sorted(set(la) & set(lb), reverse=True)
                matched = False
                for index in common:
                    ea, eb = la[index], lb[index]
                    if matched:
                        if ea != eb:
                            raise InvariantViolation(
                                f"log matching: nodes {a} and {b} agree at a later index "
                                f"but differ at {index}: {ea} vs {eb}"
                            )
                    elif ea.term == eb.term:
                        matched = True
                        if ea != eb:
                            raise InvariantViolation(
                                f"log matching: nodes {a} and {b} have different entries "
                                f"of term {ea.term} at {index}"
                            )

    # -- the state machines --------------------------------------------------------

    def result(self, node_id: int, index: int, result: ApplyResult) -> bool:
        """Check one entry's result against the first node's; True if this is the first."""
        known = self.results.get(index)
        if known is None:
            if index != self.last_committed + 1:
                raise InvariantViolation(
                    f"node {node_id} is the first to apply {index}, after {self.last_committed}"
                )
            self.results[index] = result
            self.last_committed = index
            return True
        if known != result:
            raise InvariantViolation(
                f"determinism: node {node_id}'s result at {index} is {result}, "
                f"the first node's was {known}"
            )
        return False

    def command_committed(self, index: int, cmd: Command | None, result: KVResult) -> None:
        """The first application of a command entry (in index order)."""
        for change in result.changes:
            if change.index != index:
                raise InvariantViolation(f"a change of the entry at {index} names {change.index}")
            self.changes.append(change)
            self.change_index.append(index)
        if cmd is not None:
            self.lease_model.apply(index, cmd, result)

    def batch_applied(
        self, node_id: int, sm: MemoryStateMachine, image: Callable[[MemoryStateMachine], bytes]
    ) -> None:
        """Check a node's whole state where a batch ended: its image against other
        nodes' at the same index (two suffice), its leases against the model's.

        Images are compared at every ``DIGEST_EVERY``-th index only: encoding
        one costs more than applying a dozen entries, and a state that
        diverges stays diverged (results are compared at every index).
        """
        index = sm.applied_index
        seen = self.digests.get(index)
        if index % DIGEST_EVERY == 0 and (seen is None or seen[1] < 2):
            digest = hash(image(sm))
            if seen is None:
                self.digests[index] = (digest, 1)
            elif seen[0] != digest:
                raise InvariantViolation(
                    f"determinism: node {node_id}'s state after {index} differs from another "
                    "node's (keys, sessions, leases or watch history)"
                )
            else:
                self.digests[index] = (digest, 2)
        if index == self.lease_model.index:
            self.lease_model.check(node_id, sm)

    def check_history(self, node_id: int, sm: MemoryStateMachine) -> None:
        """The node's watch history is the committed changes' last whole indexes that
        fit in the window (see raftdb.kv.changes.History), and the floor below them."""
        applied = sm.applied_index
        hi = bisect_right(self.change_index, applied)
        lo = max(0, hi - self.watch_history)
        floor = 0
        if lo > 0:
            floor = self.change_index[lo - 1]
            lo = bisect_right(self.change_index, floor, lo, hi)
        got_floor, got = sm.history(0, 1 << 30)
        if got_floor != floor or got != self.changes[lo:hi]:
            got_indexes = [c.index for c in got]
            raise InvariantViolation(
                f"node {node_id}'s watch history at {applied} has floor {got_floor} and changes "
                f"at {got_indexes[:5]}..{got_indexes[-5:]} ({len(got)}); the committed changes "
                f"give floor {floor} and {hi - lo} changes from {self.change_index[lo : lo + 1]}"
                + (
                    ""
                    if got_floor != floor
                    else f"; first difference: {_first_diff(got, self.changes[lo:hi])}"
                )
            )

    def check_linearizable(self, history: Sequence[Operation[KVTxnInput, KVTxnOutput]]) -> bool:
        """Check the clients' history; raise with a description if it is not.

        Returns False (not raising) if the checker ran out of its step budget.
        """
        result = check_linearizability(KVTxnModel(), history, timeout=None, max_steps=2_000_000)
        if result.status.name == "ILLEGAL":
            raise InvariantViolation("history is not linearizable:\n" + result.describe())
        return bool(result.ok)


def _first_diff(got: list[Change], want: list[Change]) -> str:
    for a, b in zip(got, want, strict=False):
        if a != b:
            return f"{a} instead of {b}"
    return f"lengths {len(got)} and {len(want)}"


#: Statuses of a command that was not applied.
_NOT_APPLIED = frozenset(
    {CommandStatus.STALE, CommandStatus.SESSION_EXPIRED, CommandStatus.INVALID}
)


class LeaseModel:
    """raftdb's lease rules, written again from the spec and fed with every
    committed command in index order: which leases exist (ttl, renewal index)
    and which keys each holds, and so what each command must answer.

    Transactions are followed through the branch the Applier says ran (the
    model does not evaluate compares: the clients' transactions are checked
    for that by linearizability).
    """

    def __init__(self) -> None:
        self.index = 0
        self.leases: dict[int, tuple[int, int]] = {}  # id -> (ttl, renewed index)
        self.key_lease: dict[bytes, int] = {}  # key -> the lease it is attached to
        self.expired = 0
        self.revoked = 0

    def keys(self, lease_id: int) -> list[bytes]:
        return sorted(k for k, lease in self.key_lease.items() if lease == lease_id)

    def apply(self, index: int, cmd: Command, result: KVResult) -> None:
        self.index = index

        def fail(why: str) -> InvariantViolation:
            return InvariantViolation(
                f"lease semantics at {index}: {why}; command {cmd}, the Applier answered {result}"
            )

        status = result.status
        if result.duplicate or status in _NOT_APPLIED:
            if result.changes:
                raise fail("a command not applied (again) changed keys")
            return
        op = cmd.op
        leases = self.leases
        if op == Op.LEASE_GRANT:
            if status != CommandStatus.OK or result.lease != index or result.ttl != cmd.ttl:
                raise fail(f"a grant at {index} must answer lease {index}, ttl {cmd.ttl}")
            leases[index] = (cmd.ttl, index)
        elif op == Op.LEASE_KEEPALIVE:
            known = leases.get(cmd.lease)
            if known is None:
                if status != CommandStatus.LEASE_NOT_FOUND:
                    raise fail(f"lease {cmd.lease} does not exist")
            elif status != CommandStatus.OK or (result.lease, result.ttl) != (cmd.lease, known[0]):
                raise fail(f"lease {cmd.lease} exists (ttl {known[0]})")
            else:
                leases[cmd.lease] = (known[0], index)
        elif op in (Op.LEASE_REVOKE, Op.LEASE_EXPIRE):
            known = leases.get(cmd.lease)
            if known is None or (op == Op.LEASE_EXPIRE and known[1] != cmd.expect):
                refused = (
                    (CommandStatus.LEASE_NOT_FOUND,)
                    if op == Op.LEASE_REVOKE
                    else (CommandStatus.CONDITION_FAILED, CommandStatus.LEASE_NOT_FOUND)
                )
                if status not in refused or result.changes:
                    state = "does not exist" if known is None else f"was renewed at {known[1]}"
                    raise fail(f"lease {cmd.lease} {state}: nothing may change")
                return
            keys = self.keys(cmd.lease)
            want = [(ChangeKind.DELETE, k, index) for k in keys]
            got = [(c.kind, c.key, c.index) for c in result.changes]
            if status != CommandStatus.OK or got != want:
                raise fail(f"ending lease {cmd.lease} deletes exactly its keys {keys}, in order")
            del leases[cmd.lease]
            for k in keys:
                del self.key_lease[k]
            if op == Op.LEASE_EXPIRE:
                self.expired += 1
            else:
                self.revoked += 1
        elif op == Op.PUT:
            if status == CommandStatus.CONDITION_FAILED:
                return
            if cmd.lease and cmd.lease not in leases:
                if status != CommandStatus.LEASE_NOT_FOUND or result.changes:
                    raise fail(f"a put with lease {cmd.lease}, which does not exist")
                return
            if status != CommandStatus.OK:
                raise fail("a put whose lease exists")
            self._put(cmd.key, cmd.lease)
        elif op == Op.DELETE:
            if status == CommandStatus.OK and result.changes:
                self.key_lease.pop(cmd.key, None)
        elif op == Op.TXN:
            self._txn(cmd, result, fail)

    def _txn(
        self, cmd: Command, result: KVResult, fail: Callable[[str], InvariantViolation]
    ) -> None:
        txn = Txn.decode(cmd.value)
        leases = self.leases
        if result.status == CommandStatus.LEASE_NOT_FOUND:
            named = {o.lease for o in (*txn.success, *txn.failure) if o.lease}
            if not named - leases.keys() or result.changes:
                raise fail("LEASE_NOT_FOUND, but every lease the transaction names exists")
            return
        if result.status != CommandStatus.OK or result.txn is None:
            raise fail("a well-formed transaction")
        branch = txn.success if result.txn.succeeded else txn.failure
        missing = {o.lease for o in branch if o.lease} - leases.keys()
        if missing:
            raise fail(f"it applied puts that name leases {sorted(missing)}, which do not exist")
        for o, r in zip(branch, result.txn.results, strict=True):
            if o.kind == TxnOpKind.PUT:
                self._put(o.key, o.lease)
            elif o.kind == TxnOpKind.DELETE and r.found:
                self.key_lease.pop(o.key, None)

    def _put(self, key: bytes, lease: int) -> None:
        if lease:
            self.key_lease[key] = lease  # joins it, leaving any other
        else:
            self.key_lease.pop(key, None)  # a put without a lease leaves any lease

    def check(self, node_id: int, sm: MemoryStateMachine) -> None:
        """``sm`` (at the model's index) holds exactly the model's leases."""
        got = {(x.id, x.ttl, x.renewed_index, x.keys) for x in sm.leases()}
        want = {(i, t, r, frozenset(self.keys(i))) for i, (t, r) in self.leases.items()}
        if got != want:
            raise InvariantViolation(
                f"node {node_id}'s leases at {self.index} are {sorted(got - want)} where "
                f"the rules give {sorted(want - got)}"
            )
