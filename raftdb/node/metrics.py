"""Prometheus metrics of one node (``GET /metrics``).

Each node has its own registry, so several nodes in one process (tests) do not
share counters. Gauges that mirror the core's state are refreshed when the
metrics are scraped rather than on every change, which keeps the hot path free.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from raftdb.raft import Role, Status

__all__ = ["CONTENT_TYPE", "NodeMetrics"]

#: The Content-Type of :meth:`NodeMetrics.render`'s output.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_ROLES = {Role.FOLLOWER: 0, Role.PRE_CANDIDATE: 1, Role.CANDIDATE: 2, Role.LEADER: 3}
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class NodeMetrics:
    """The metrics the driver records, in a registry of their own."""

    def __init__(self, node_id: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.term = Gauge("raftdb_term", "Current Raft term.", registry=r)
        self.role = Gauge(
            "raftdb_role", "Role: 0 follower, 1 pre-candidate, 2 candidate, 3 leader.", registry=r
        )
        self.leader = Gauge("raftdb_leader_id", "Id of the known leader (0: none).", registry=r)
        self.commit = Gauge("raftdb_commit_index", "Highest committed log index.", registry=r)
        self.applied = Gauge("raftdb_applied_index", "Highest applied log index.", registry=r)
        self.last = Gauge("raftdb_last_index", "Last log index.", registry=r)
        self.proposals = Counter(
            "raftdb_proposals", "Writes proposed through this node.", registry=r
        )
        self.proposal_seconds = Histogram(
            "raftdb_proposal_seconds",
            "Time from proposing a write to its being applied on this node.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fsync_seconds = Histogram(
            "raftdb_save_seconds",
            "Time of one durable Storage.save (one fsync for a whole Ready).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.snapshots_taken = Counter(
            "raftdb_snapshots_taken", "Snapshots taken (log compactions).", registry=r
        )
        self.snapshots_sent = Counter(
            "raftdb_snapshots_sent", "Snapshots streamed to followers.", registry=r
        )
        self.snapshots_restored = Counter(
            "raftdb_snapshots_restored", "Snapshots received and installed.", registry=r
        )
        self.peer_queue = Gauge(
            "raftdb_peer_send_queue", "Messages queued for a peer.", ["peer"], registry=r
        )
        self.alarm = Gauge(
            "raftdb_alarm",
            "1 while the alarm is raised on this node (nospace: the disk is full, read-only).",
            ["alarm"],
            registry=r,
        )
        self.alarm.labels(alarm="nospace").set(0)
        self.watchers = Gauge(
            "raftdb_watchers",
            "Watch streams and blocking reads this node serves now (max_watchers).",
            registry=r,
        )
        self.watch_events = Counter(
            "raftdb_watch_events", "Watch events (puts and deletes) delivered.", registry=r
        )
        self.leases = Gauge("raftdb_leases", "Leases this node tracks now.", registry=r)
        self.lease_expiries = Counter(
            "raftdb_lease_expiries",
            "Leases that expired (not kept alive: their keys deleted), as applied here.",
            registry=r,
        )
        self.cluster = Gauge(
            "raftdb_cluster_info",
            "Always 1; its label is this node's cluster id (empty while it records none).",
            ["cluster_id"],
            registry=r,
        )
        self.node_id = node_id

    def update(self, status: Status, applied: int, queues: dict[int, int]) -> None:
        """Refresh the gauges that mirror the core and the transport."""
        self.term.set(status.term)
        self.role.set(_ROLES[status.role])
        self.leader.set(status.lead)
        self.commit.set(status.commit)
        self.applied.set(applied)
        self.last.set(status.last_index)
        for peer, length in queues.items():
            self.peer_queue.labels(peer=str(peer)).set(length)

    def set_alarms(self, raised: Sequence[str]) -> None:
        """Refresh ``raftdb_alarm``: 1 for each alarm in ``raised``, 0 for the others
        (every alarm is always exported, so a dashboard sees it clear)."""
        for alarm in {"nospace", *raised}:
            self.alarm.labels(alarm=alarm).set(1 if alarm in raised else 0)

    def set_cluster_id(self, cluster_id: str | None) -> None:
        """Refresh ``raftdb_cluster_info``: one series, labelled with ``cluster_id``
        (it changes once, when a joining node adopts its cluster's)."""
        label = cluster_id or ""
        self.cluster.clear()
        self.cluster.labels(cluster_id=label).set(1)

    def render(self) -> str:
        """The Prometheus text exposition."""
        return generate_latest(self.registry).decode()
