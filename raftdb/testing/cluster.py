"""An in-process cluster of Raft cores on a perfect, synchronous network.

For unit tests, examples and benchmarks of the core: every node has a
:class:`~raftdb.storage.memory.MemoryStorage`, messages are delivered in order with no
loss, and :meth:`Cluster.stabilize` runs everything to a fixed point. The
deterministic simulation (``tests/sim``) adds faults on top of the same loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from random import Random
from typing import Any

from raftdb.raft import Config, Entry, EntryType, Message, RawNode, ReadState, Ready, Role
from raftdb.storage.memory import MemoryStorage

__all__ = ["Cluster"]


class Cluster:
    """``n`` cores (ids 1..n) bootstrapped together, wired by an in-memory queue."""

    def __init__(self, n: int, seed: int = 0, **config: Any) -> None:
        self.ids = list(range(1, n + 1))
        self.storages: dict[int, MemoryStorage] = {}
        self.nodes: dict[int, RawNode] = {}
        self.applied: dict[int, list[Entry]] = {}
        self.read_states: dict[int, list[ReadState]] = {}
        self.queue: deque[Message] = deque()
        self.config = config
        self.seed = seed
        for i in self.ids:
            self.add_node(i, bootstrap=[(p, b"") for p in self.ids])

    def add_node(self, node_id: int, bootstrap: list[tuple[int, bytes]] | None = None) -> RawNode:
        """Start node ``node_id`` with an empty storage (bootstrapped, or to be added)."""
        storage = MemoryStorage()
        node = RawNode(
            Config(
                id=node_id, storage=storage, rng=Random(self.seed * 1000 + node_id), **self.config
            )
        )
        if bootstrap:
            node.bootstrap(bootstrap)
        self.storages[node_id] = storage
        self.nodes[node_id] = node
        self.applied[node_id] = []
        self.read_states[node_id] = []
        return node

    def handle_ready(self, node_id: int, rd: Ready) -> None:
        """Save, send and apply ``rd`` as a driver would, then advance."""
        node = self.nodes[node_id]
        self.queue.extend(rd.messages)
        self.storages[node_id].save(rd.hard_state, rd.entries, rd.snapshot)
        self.queue.extend(rd.messages_after_save)
        applied = self.applied[node_id]
        if rd.snapshot is not None:
            applied.clear()
        applied.extend(e for e in rd.committed_entries if e.type == EntryType.NORMAL and e.data)
        self.read_states[node_id].extend(rd.read_states)
        node.advance(rd)

    def process_ready(self, node_ids: Iterable[int] | None = None) -> bool:
        """Handle one Ready of each node that has one. True if any had."""
        progressed = False
        for i in self.ids if node_ids is None else node_ids:
            node = self.nodes[i]
            if node.has_ready():
                self.handle_ready(i, node.ready())
                progressed = True
        return progressed

    def deliver(self) -> bool:
        """Step every queued message into its recipient. True if any was delivered."""
        if not self.queue:
            return False
        batch, self.queue = self.queue, deque()
        for m in batch:
            node = self.nodes.get(m.to)
            if node is not None:
                node.step(m)
        return True

    def stabilize(self, limit: int = 10_000) -> None:
        """Process Readys and deliver messages until nothing moves."""
        for _ in range(limit):
            moved = self.process_ready()
            moved = self.deliver() or moved
            if not moved:
                return
        raise RuntimeError(f"cluster did not stabilize within {limit} rounds")

    def elect(self, node_id: int) -> None:
        """Make ``node_id`` campaign and run to a fixed point."""
        self.nodes[node_id].campaign()
        self.stabilize()
        if self.nodes[node_id].role != Role.LEADER:
            raise RuntimeError(f"node {node_id} did not win the election")

    def leader(self) -> int:
        """The id of the leader of the highest term, 0 if none."""
        best = 0
        best_term = -1
        for i, node in self.nodes.items():
            if node.role == Role.LEADER and node.term > best_term:
                best, best_term = i, node.term
        return best
