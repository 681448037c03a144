"""Lease expiry bookkeeping: which leases the leader should propose to expire, and when.

The state machine never reads a clock: a lease ends only when an entry says
so (``LEASE_REVOKE``, or ``LEASE_EXPIRE`` naming the renewal it saw expire).
Deciding that a lease *has* expired is the leader's job, with its own
monotonic time, and :class:`LeaseClock` is that bookkeeping without the
clock: every method takes ``now`` (seconds, any monotonic origin), so it is
tested without sleeping and the node layer supplies ``loop.time()``.

The rules (etcd's lessor):

- a new leader gives every lease a fresh full TTL from the moment it takes
  over (:meth:`LeaseClock.become_leader`), since it cannot know how long ago
  the previous leader last saw a keep-alive: a leader change can only make a
  lease live longer, never expire early;
- a grant or keep-alive, when applied, sets the deadline to ``now + ttl``
  (:meth:`LeaseClock.renewed`), on every member: followers keep deadlines
  too, from their own apply times, so :meth:`LeaseClock.remaining` answers
  anywhere (an estimate: each member's clock and apply time differ a little);
- only the leader gets expiries to propose (:meth:`LeaseClock.due`); each
  names the renewal index the leader saw, so a keep-alive that commits first
  wins; an expiry proposed but not applied (lost, or refused) is proposed
  again after ``retry_s``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from raftdb.kv.changes import Lease

__all__ = ["DEFAULT_RETRY_S", "LeaseClock"]

#: Seconds before an expiry proposed but not yet applied is proposed again.
DEFAULT_RETRY_S = 1.0


@dataclass(slots=True)
class _Tracked:
    deadline: float
    renewed_index: int
    ttl: int
    generation: int  # bumped at each renewal: heap entries of older ones are stale
    retry_at: float = 0.0  # when due() may name it again (0: not named yet)


class LeaseClock:
    """Deadlines of leases, as seen by one member. Pure: no clock, no I/O, no threads.

    Args:
        retry_s: how long :meth:`due` waits before naming again a lease it
            already named (its expiry entry may have been dropped).
    """

    def __init__(self, retry_s: float = DEFAULT_RETRY_S) -> None:
        if retry_s <= 0:
            raise ValueError(f"retry_s must be positive, got {retry_s}")
        self.retry_s = retry_s
        self._leader = False
        self._tracked: dict[int, _Tracked] = {}
        # (time, lease id, generation): a deadline, or the time to retry a
        # proposed expiry. Entries of an older generation are skipped.
        self._heap: list[tuple[float, int, int]] = []
        self._generation = 0

    @property
    def is_leader(self) -> bool:
        """Whether :meth:`due` names leases (between become_leader and become_follower)."""
        return self._leader

    def __len__(self) -> int:
        return len(self._tracked)

    def become_leader(self, now: float, leases: Iterable[Lease]) -> None:
        """This member leads from ``now``: every lease (the state machine's,
        as of the leader's applied index) gets a full TTL from ``now``."""
        self._leader = True
        self._tracked = {}
        self._heap = []
        for lease in leases:
            self._track(lease.id, lease.ttl, lease.renewed_index, now + lease.ttl)

    def become_follower(self) -> None:
        """This member no longer leads: :meth:`due` names nothing. Deadlines are kept."""
        self._leader = False

    def track(self, now: float, leases: Iterable[Lease]) -> None:
        """Follow exactly ``leases`` (at start, or after a snapshot is restored).

        A lease already tracked at the same renewal keeps its deadline; any
        other gets a full TTL from ``now``; leases not given are forgotten.
        """
        old = self._tracked
        self._tracked = {}
        self._heap = []
        for lease in leases:
            known = old.get(lease.id)
            if known is not None and known.renewed_index == lease.renewed_index:
                deadline = known.deadline
            else:
                deadline = now + lease.ttl
            self._track(lease.id, lease.ttl, lease.renewed_index, deadline)

    def renewed(self, lease: Lease, now: float) -> None:
        """A grant or keep-alive of ``lease`` was applied at ``now``: deadline ``now + ttl``."""
        self._track(lease.id, lease.ttl, lease.renewed_index, now + lease.ttl)
        if len(self._heap) > 2 * len(self._tracked) + 64:
            self._compact()

    def ended(self, lease_id: int) -> None:
        """The lease was revoked or expired (applied): forget it."""
        self._tracked.pop(lease_id, None)

    def due(self, now: float) -> list[tuple[int, int]]:
        """``(lease id, renewed_index)`` for each lease past its deadline that was
        not named in the last ``retry_s``, in deadline order; ``[]`` unless leader.

        Each lease named is named again after ``retry_s`` unless it is
        :meth:`renewed` or :meth:`ended` meanwhile.
        """
        if not self._leader:
            return []
        heap, tracked = self._heap, self._tracked
        out: list[tuple[int, int]] = []
        while heap and heap[0][0] <= now:
            _, lease_id, generation = heapq.heappop(heap)
            state = tracked.get(lease_id)
            if state is None or state.generation != generation:
                continue  # ended, or renewed since this entry was pushed
            out.append((lease_id, state.renewed_index))
            state.retry_at = now + self.retry_s
            heapq.heappush(heap, (state.retry_at, lease_id, generation))
        return out

    def remaining(self, lease_id: int, now: float) -> float | None:
        """Seconds until the lease's deadline (0.0 once past), or ``None`` if not tracked."""
        state = self._tracked.get(lease_id)
        if state is None:
            return None
        return max(0.0, state.deadline - now)

    def deadline(self, lease_id: int) -> float | None:
        """The lease's deadline (on this member's clock), or ``None`` if not tracked."""
        state = self._tracked.get(lease_id)
        return None if state is None else state.deadline

    def _track(self, lease_id: int, ttl: int, renewed_index: int, deadline: float) -> None:
        self._generation += 1
        self._tracked[lease_id] = _Tracked(deadline, renewed_index, ttl, self._generation)
        heapq.heappush(self._heap, (deadline, lease_id, self._generation))

    def _compact(self) -> None:
        """Drop the stale heap entries (renewals never popped: a follower does
        not call :meth:`due`), keeping each lease's next time: its deadline,
        or the retry time of an expiry already named."""
        self._heap = [
            (max(s.deadline, s.retry_at), i, s.generation) for i, s in self._tracked.items()
        ]
        heapq.heapify(self._heap)
