"""Raft's safety properties, checked while a simulation runs.

- Election safety: at most one leader per term (Figure 3).
- Log matching: two logs with an entry of the same index and term are
  identical up to it.
- Leader completeness: a new leader's log holds every committed entry.
- State machine safety: no two nodes apply different entries at one index,
  and each node applies indexes in order, without gaps.
- Snapshot agreement: every snapshot of one index holds the same state.
- Linearizability of the clients' history (the checker in
  ``raftdb.testing.linearizability``).
"""

from __future__ import annotations

from collections.abc import Sequence

from raftdb.raft import CompactedError, Entry, RawNode, Role
from raftdb.storage.memory import MemoryStorage
from raftdb.testing.linearizability import (
    KVInput,
    KVModel,
    KVOutput,
    Operation,
    check_linearizability,
)


class InvariantViolation(AssertionError):
    """A safety property failed."""


class Invariants:
    """Tracks what the cluster has committed and checks each observation against it."""

    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}  # term -> leader id
        self.committed: dict[int, tuple[int, int, bytes]] = {}  # index -> (term, type, data)
        self.snapshots: dict[int, bytes] = {}  # index -> state machine image
        self.roles: dict[int, tuple[Role, int]] = {}
        self.commit_seen: dict[int, int] = {}
        self.elections = 0

    def node_started(self, node_id: int) -> None:
        """A (re)start: in-memory positions may go back to what was saved."""
        self.roles.pop(node_id, None)
        self.commit_seen.pop(node_id, None)

    def observe(self, node_id: int, raw: RawNode) -> None:
        """Check a node after it handled an input."""
        role, term = raw.role, raw.term
        if role == Role.LEADER:
            other = self.leaders.setdefault(term, node_id)
            if other != node_id:
                raise InvariantViolation(f"two leaders in term {term}: {other} and {node_id}")
            if self.roles.get(node_id) != (role, term):
                self.elections += 1
                self._check_leader_completeness(node_id, raw)
        self.roles[node_id] = (role, term)
        commit = raw.commit_index
        if commit < self.commit_seen.get(node_id, 0):
            raise InvariantViolation(
                f"node {node_id}'s commit index went back from "
                f"{self.commit_seen[node_id]} to {commit} without a restart"
            )
        self.commit_seen[node_id] = commit

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

    def check_linearizable(self, history: Sequence[Operation[KVInput, KVOutput]]) -> bool:
        """Check the clients' history; raise with a description if it is not.

        Returns False (not raising) if the checker ran out of its step budget.
        """
        result = check_linearizability(KVModel(), history, timeout=None, max_steps=2_000_000)
        if result.status.name == "ILLEGAL":
            raise InvariantViolation("history is not linearizable:\n" + result.describe())
        return bool(result.ok)
