"""LeaseClock: deadlines without a clock (``now`` is an argument)."""

from __future__ import annotations

import pytest

from raftdb.kv.changes import Lease
from raftdb.kv.expiry import LeaseClock


def lease(lease_id: int, ttl: int = 10, renewed: int | None = None) -> Lease:
    return Lease(lease_id, ttl, lease_id if renewed is None else renewed, frozenset())


def test_a_new_leader_gives_every_lease_a_full_ttl() -> None:
    clock = LeaseClock()
    # As a follower the clock saw lease 1 granted long ago: nearly expired.
    clock.renewed(lease(1, ttl=10), now=100.0)
    assert clock.remaining(1, 109.0) == pytest.approx(1.0)
    assert clock.due(200.0) == []  # a follower proposes nothing
    clock.become_leader(109.0, [lease(1, ttl=10), lease(2, ttl=3)])
    assert clock.is_leader
    assert clock.remaining(1, 109.0) == pytest.approx(10.0)
    assert clock.remaining(2, 109.0) == pytest.approx(3.0)
    assert clock.due(111.9) == []
    assert clock.due(112.0) == [(2, 2)]
    clock.ended(2)  # its expiry was applied
    assert clock.due(118.9) == []
    assert clock.due(119.0) == [(1, 1)]


def test_a_keepalive_resets_the_deadline() -> None:
    clock = LeaseClock()
    clock.become_leader(0.0, [lease(5, ttl=4)])
    clock.renewed(lease(5, ttl=4, renewed=9), now=3.0)
    assert clock.due(4.0) == []
    assert clock.remaining(5, 4.0) == pytest.approx(3.0)
    assert clock.due(7.0) == [(5, 9)]  # names the renewal it saw expire


def test_due_does_not_name_a_lease_again_within_retry_s() -> None:
    clock = LeaseClock(retry_s=0.5)
    clock.become_leader(0.0, [lease(1, ttl=2), lease(2, ttl=2)])
    assert clock.due(2.0) == [(1, 1), (2, 2)]
    assert clock.due(2.1) == []
    assert clock.due(2.49) == []
    assert clock.due(2.5) == [(1, 1), (2, 2)]  # not applied yet: proposed again
    clock.ended(1)
    clock.renewed(lease(2, ttl=2, renewed=7), now=2.6)  # a keep-alive won
    assert clock.due(3.0) == []
    assert clock.due(4.6) == [(2, 7)]
    assert len(clock) == 1


def test_remaining_and_deadline() -> None:
    clock = LeaseClock()
    assert clock.remaining(1, 0.0) is None
    assert clock.deadline(1) is None
    clock.renewed(lease(1, ttl=5), now=10.0)
    assert clock.remaining(1, 12.5) == pytest.approx(2.5)
    assert clock.remaining(1, 99.0) == 0.0
    assert clock.deadline(1) == pytest.approx(15.0)
    clock.ended(1)
    assert clock.remaining(1, 12.0) is None
    clock.ended(1)  # idempotent


def test_stepping_down_keeps_deadlines_but_names_nothing() -> None:
    clock = LeaseClock()
    clock.become_leader(0.0, [lease(1, ttl=1)])
    clock.become_follower()
    assert not clock.is_leader
    assert clock.due(50.0) == []
    assert clock.remaining(1, 0.5) == pytest.approx(0.5)


def test_track_follows_exactly_the_given_leases() -> None:
    clock = LeaseClock()
    clock.renewed(lease(1, ttl=10), now=0.0)
    clock.renewed(lease(2, ttl=10), now=0.0)
    # After a restore: lease 1 unchanged keeps its deadline, 2 was renewed
    # (a fresh TTL), 2's old deadline is gone, 3 is new, and 4 never existed.
    clock.track(5.0, [lease(1, ttl=10), lease(2, ttl=10, renewed=8), lease(3, ttl=1)])
    assert clock.deadline(1) == pytest.approx(10.0)
    assert clock.deadline(2) == pytest.approx(15.0)
    assert clock.deadline(3) == pytest.approx(6.0)
    clock.track(5.0, [lease(3, ttl=1)])
    assert (clock.deadline(1), clock.deadline(2)) == (None, None)


def test_renewals_on_a_follower_do_not_grow_without_bound() -> None:
    clock = LeaseClock(retry_s=1.0)
    for n in range(10_000):
        clock.renewed(lease(1, ttl=10, renewed=n + 1), now=float(n))
    assert len(clock._heap) <= 2 * len(clock) + 65
    clock.become_leader(10_000.0, [lease(1, ttl=10, renewed=10_000)])
    assert clock.due(10_010.0) == [(1, 10_000)]


def test_a_retry_survives_the_heap_being_compacted() -> None:
    clock = LeaseClock(retry_s=5.0)
    clock.become_leader(0.0, [lease(1, ttl=1)])
    assert clock.due(1.0) == [(1, 1)]
    for n in range(200):  # another lease's renewals compact the heap
        clock.renewed(lease(100, ttl=100, renewed=100 + n), now=1.0)
    assert len(clock._heap) < 100
    assert clock.due(2.0) == []
    assert clock.due(6.0) == [(1, 1)]


def test_retry_s_must_be_positive() -> None:
    with pytest.raises(ValueError, match="retry_s"):
        LeaseClock(retry_s=0)
