"""What a node observes of its cluster, for ``GET /v1/cluster/status`` and the ``/ui`` page.

The Raft core knows the state of this node, and, while it leads, its
progress of every member (``RawNode.status().progress``). Three things it
does not keep are recorded here, by the node, as cheaply as the hot paths
allow:

- the *leader changes* this node saw: each change of its (term, leader) pair,
  with the wall-clock time, in a ring of the last :data:`MAX_LEADER_CHANGES`
  (the Ready loop reports the pair after each Ready that changed soft or hard
  state: one tuple compare);
- when it last *heard from* each peer: the monotonic time of the last batch
  of peer messages received from it (one dict store per batch, in the
  transport's callback), from which a follower knows whether its leader is
  reachable, and a leader backs up Raft's ``recent_active`` (cleared at each
  check-quorum round, so a healthy member may show inactive just after one);
- *read counters*: plain integers, one increment per single-key read or
  listing, by consistency; ``/metrics`` exports them as
  ``raftdb_reads_total{consistency}`` through a collector that reads them at
  scrape time (:class:`ReadsCollector`), so a read takes no metrics lock.

No member asks another for any of this: the answer is the cluster as *this*
node sees it, and ``null`` where it cannot know (the wire protocol stays as
it is). :meth:`ClusterView.build` applies the field rules of
:class:`~raftdb.node.handle.ClusterStatus`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from raftdb.node.handle import (
    ClusterCounters,
    ClusterMember,
    ClusterStatus,
    Consistency,
    LeaderChange,
    NodeStatus,
    RoleName,
)
from raftdb.raft.rawnode import PeerProgress

__all__ = ["MAX_LEADER_CHANGES", "ClusterView", "ReadsCollector", "counter_value"]

#: How many leader changes a node remembers (the oldest are dropped).
MAX_LEADER_CHANGES = 20


class ClusterView:
    """One node's observations of its cluster: see the module docstring.

    Args:
        node_id: this node's id.
        election_timeout_s: how recent a peer message must be for its sender
            to count as reachable.
        registry: where to export the read counters (``raftdb_reads_total``).
        clock: monotonic seconds (tests give their own).
        wall: Unix seconds, for ``at`` (tests give their own).
    """

    def __init__(
        self,
        node_id: int,
        election_timeout_s: float,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = node_id
        self.election_timeout_s = election_timeout_s
        self.clock = clock
        self.wall = wall
        #: Peer id → ``clock()`` when its last batch of messages arrived. The
        #: node stores into it directly, once per batch received.
        self.heard: dict[int, float] = {}
        self.reads_linearizable = 0
        self.reads_stale = 0
        self._changes: deque[LeaderChange] = deque(maxlen=MAX_LEADER_CHANGES)
        self._state: tuple[int, int] | None = None
        if registry is not None:
            registry.register(ReadsCollector(self))

    def observe(self, term: int, leader: int) -> None:
        """Record (term, leader) if it changed since the last call (``leader`` 0: none)."""
        state = (term, leader)
        if state != self._state:
            self._state = state
            self._changes.append(LeaderChange(term, leader or None, round(self.wall(), 3)))

    def count_read(self, consistency: Consistency) -> None:
        """One single-key read or listing asked of this node (as ``Node`` reads:
        anything but ``linearizable`` is served stale)."""
        if consistency == "linearizable":
            self.reads_linearizable += 1
        else:
            self.reads_stale += 1

    @property
    def leader_changes(self) -> list[LeaderChange]:
        """The changes remembered, oldest first."""
        return list(self._changes)

    def build(
        self, status: NodeStatus, progress: Mapping[int, PeerProgress], *, writes: int
    ) -> ClusterStatus:
        """The answer of ``GET /v1/cluster/status`` now.

        Args:
            status: this node's status (``Node.status()``), membership included.
            progress: the core's progress of each member (``RawNode.status()``;
                empty unless this node leads).
            writes: the writes proposed through this node so far.
        """
        now = self.clock()
        leading = status.role == "leader"
        window = self.election_timeout_s
        rows = []
        for member in status.members:
            heard = self.heard.get(member.id)
            since = None if heard is None else max(0.0, now - heard)
            recent = since is not None and since <= window
            last_contact = None if since is None else round(since, 3)
            if member.id == self.node_id:
                rows.append(
                    ClusterMember(
                        member.id,
                        member.peer_url,
                        member.learner,
                        status.role,
                        True,
                        status.last_index if leading else None,
                        max(0, status.commit_index - status.applied_index),
                        True,
                        None,
                    )
                )
                continue
            role: RoleName = (
                "leader"
                if member.id == status.leader
                else "learner"
                if member.learner
                else "follower"
            )
            match: int | None = None
            lag: int | None = None
            reachable: bool | None = None
            if leading:
                pr = progress.get(member.id)
                if pr is not None:
                    match = pr.match
                    lag = max(0, status.commit_index - pr.match)
                reachable = recent or (pr is not None and pr.recent_active)
            elif member.id == status.leader:
                reachable = recent
            rows.append(
                ClusterMember(
                    member.id,
                    member.peer_url,
                    member.learner,
                    role,
                    False,
                    match,
                    lag,
                    reachable,
                    last_contact,
                )
            )
        return ClusterStatus(
            id=status.id,
            cluster_id=status.cluster_id,
            role=status.role,
            leader=status.leader or None,
            term=status.term,
            commit_index=status.commit_index,
            applied_index=status.applied_index,
            first_index=status.first_index,
            last_index=status.last_index,
            view="leader" if leading else "member",
            members=rows,
            leader_changes=self.leader_changes,
            counters=ClusterCounters(writes, self.reads_linearizable, self.reads_stale),
            at=round(self.wall(), 3),
        )


class ReadsCollector(Collector):
    """Exports a :class:`ClusterView`'s read counters as ``raftdb_reads_total{consistency}``,
    read when ``/metrics`` is scraped (the counters themselves are plain ints)."""

    def __init__(self, view: ClusterView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        """The one counter family, a sample per consistency."""
        family = CounterMetricFamily(
            "raftdb_reads",
            "Single-key reads and listings asked of this node, by consistency.",
            labels=["consistency"],
        )
        family.add_metric(["linearizable"], self.view.reads_linearizable)
        family.add_metric(["stale"], self.view.reads_stale)
        yield family


def counter_value(counter: Counter) -> int:
    """The count of an unlabelled prometheus ``Counter`` (its ``_total`` sample)."""
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                return int(sample.value)
    return 0
