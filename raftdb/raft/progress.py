"""What a leader knows of each follower's log, and how fast it may send.

A follower is in one of three states (etcd's ``tracker`` package, Raft thesis
§10.2.1 on pipelining):

- PROBE: the leader does not know where the follower's log matches its own. It
  sends one append at a time and waits for the answer (or a heartbeat answer)
  before the next, backing ``next`` off on each rejection.
- REPLICATE: the follower is known to match up to ``match``. The leader streams
  appends optimistically (``next`` moves as soon as a message is sent), bounded
  by a window of in-flight messages (:class:`Inflights`).
- SNAPSHOT: the follower needs entries the leader has compacted; a snapshot is on
  its way and nothing else is sent until the transport reports on it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from enum import Enum

from raftdb.raft.messages import ConfState
from raftdb.raft.quorum import VoteResult, committed_index, vote_result

__all__ = ["Inflights", "Progress", "ProgressState", "ProgressTracker"]


class ProgressState(Enum):
    """How the leader replicates to one follower (see the module docstring)."""

    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """A bounded window of append messages sent but not yet acknowledged.

    Each entry is the last index a message carried and its size in bytes; both
    the count (``size``) and the bytes (``max_bytes``, 0 = unbounded) are limits.
    """

    __slots__ = ("_bytes", "_items", "max_bytes", "size")

    def __init__(self, size: int, max_bytes: int = 0) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._items: deque[tuple[int, int]] = deque()
        self._bytes = 0

    def add(self, index: int, nbytes: int) -> None:
        """Record a message whose last entry is ``index`` (indexes only grow)."""
        self._items.append((index, nbytes))
        self._bytes += nbytes

    def free_le(self, index: int) -> None:
        """Forget every message whose last index is at most ``index`` (acknowledged)."""
        items = self._items
        while items and items[0][0] <= index:
            self._bytes -= items.popleft()[1]

    def full(self) -> bool:
        """True when no more messages may be sent until some are acknowledged."""
        return len(self._items) >= self.size or (
            self.max_bytes > 0 and self._bytes >= self.max_bytes
        )

    def count(self) -> int:
        """Messages in flight."""
        return len(self._items)

    def reset(self) -> None:
        """Forget everything in flight."""
        self._items.clear()
        self._bytes = 0


class Progress:
    """The leader's view of one member's log.

    Invariant: ``match < next``. ``match`` only grows while this leader leads.
    """

    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "msg_app_flow_paused",
        "next",
        "pending_snapshot",
        "proposed",
        "recent_active",
        "sent_commit",
        "state",
    )

    def __init__(self, match: int, next_index: int, inflights: Inflights, learner: bool) -> None:
        self.match = match
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.recent_active = False
        # PROBE: one append was sent and its answer is awaited. REPLICATE: the
        # in-flight window was full at the last send.
        self.msg_app_flow_paused = False
        self.inflights = inflights
        self.is_learner = learner
        # The highest commit index sent to this member (appends or heartbeats).
        self.sent_commit = 0
        # The last index of the entries this member proposed through this leader
        # (forwarded writes): a client waits there until it learns their commit.
        self.proposed = 0

    def __repr__(self) -> str:
        return (
            f"Progress(state={self.state.value}, match={self.match}, next={self.next}"
            f"{', learner' if self.is_learner else ''}"
            f"{f', pending_snapshot={self.pending_snapshot}' if self.pending_snapshot else ''}"
            f"{', paused' if self.is_paused() else ''}, inflight={self.inflights.count()})"
        )

    def can_bump_commit(self, committed: int) -> bool:
        """True if this member may not know ``committed`` yet and could use it.

        A member learns of a commit index only up to what it matches, so there
        is news only if it matches more than what it was last told.
        """
        return self.sent_commit < committed and self.sent_commit < self.match

    def waits_for_commit(self) -> bool:
        """True if this member proposed entries it has not been told are committed:
        a client of its own waits for that news, so it must not be held back."""
        return self.proposed > self.sent_commit

    def _reset_state(self, state: ProgressState) -> None:
        self.msg_app_flow_paused = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        """Fall back to one-at-a-time appends from just past what is known to match."""
        if self.state == ProgressState.SNAPSHOT:
            # The snapshot, if it arrived, put the follower at pending_snapshot.
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        """Stream appends, starting right after ``match``."""
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        """A snapshot at ``snapshot_index`` is being sent; send nothing else meanwhile."""
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def sent_entries(self, count: int, nbytes: int) -> None:
        """Account for an append of ``count`` entries (``nbytes``) just sent from ``next``."""
        if self.state == ProgressState.REPLICATE:
            if count:
                last = self.next + count - 1
                self.next = last + 1
                self.inflights.add(last, nbytes)
            # Paused while the window is full; a heartbeat answer unpauses it for
            # one more append, which recovers a window whose messages were lost.
            self.msg_app_flow_paused = self.inflights.full()
        elif self.state == ProgressState.PROBE:
            self.msg_app_flow_paused = True

    def maybe_update(self, index: int) -> bool:
        """The follower has everything up to ``index``. False if that was known already."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.msg_app_flow_paused = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """An append at ``rejected`` was refused; back ``next`` off. False if stale.

        ``match_hint`` is the follower's guess of where the logs may match.
        """
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # an old rejection, answered already
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # not the probe we are waiting on
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.msg_app_flow_paused = False
        return True

    def is_paused(self) -> bool:
        """True when the leader must not send this member another append now."""
        if self.state == ProgressState.PROBE:
            return self.msg_app_flow_paused
        if self.state == ProgressState.REPLICATE:
            return self.msg_app_flow_paused
        return True


class ProgressTracker:
    """Membership, per-member progress and the votes of the current election."""

    def __init__(self, max_inflight: int, max_inflight_bytes: int = 0) -> None:
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes
        self.voters: frozenset[int] = frozenset()
        self.learners: frozenset[int] = frozenset()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    def conf_state(self) -> ConfState:
        """The membership as a :class:`ConfState`."""
        return ConfState(voters=tuple(sorted(self.voters)), learners=tuple(sorted(self.learners)))

    def set_conf(self, conf: ConfState, next_index: int) -> None:
        """Adopt ``conf``: members that stay keep their progress; new ones probe
        from ``next_index`` and count as recently active, so that a snapshot may
        be sent to them at once."""
        self.voters = frozenset(conf.voters)
        self.learners = frozenset(conf.learners)
        progress: dict[int, Progress] = {}
        for node_id in sorted((*conf.voters, *conf.learners)):
            pr = self.progress.get(node_id)
            if pr is None:
                pr = Progress(
                    0, next_index, Inflights(self.max_inflight, self.max_inflight_bytes), False
                )
                pr.recent_active = True
            pr.is_learner = node_id in self.learners
            progress[node_id] = pr
        self.progress = progress

    def is_voter(self, node_id: int) -> bool:
        """True if ``node_id`` votes in this membership."""
        return node_id in self.voters

    def committed(self) -> int:
        """The largest index a majority of voters have."""
        progress = self.progress
        return committed_index(self.voters, {v: progress[v].match for v in self.voters})

    def reset_votes(self) -> None:
        """Start a new count of votes."""
        self.votes = {}

    def record_vote(self, node_id: int, granted: bool) -> None:
        """Remember ``node_id``'s first answer in this election (later ones are ignored)."""
        self.votes.setdefault(node_id, granted)

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        """``(granted, rejected, result)`` among voters."""
        granted = sum(1 for v in self.voters if self.votes.get(v) is True)
        rejected = sum(1 for v in self.voters if self.votes.get(v) is False)
        return granted, rejected, vote_result(self.voters, self.votes)

    def quorum_active(self, self_id: int) -> bool:
        """True if a majority of voters were heard from recently (CheckQuorum)."""
        votes = {
            v: (v == self_id or self.progress[v].recent_active)
            for v in self.voters
            if v in self.progress
        }
        return vote_result(self.voters, votes) == VoteResult.WON

    def peers(self, self_id: int) -> Iterable[tuple[int, Progress]]:
        """Every member but ``self_id``, in id order."""
        return ((i, pr) for i, pr in self.progress.items() if i != self_id)
