"""raftdb.node.commit_notices: a leader's commit notices are held for at most the
delay, dropped when a later append or heartbeat to the same member goes first,
and never hold back anything else."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from raftdb.node.commit_notices import CommitNotices
from raftdb.raft import COMMIT_NOTICE, Entry, Message, MessageType

MT = MessageType


def _notice(to: int, commit: int) -> Message:
    return Message(MT.APP, to=to, frm=1, term=2, index=commit, commit=commit, context=COMMIT_NOTICE)


def _append(to: int, commit: int) -> Message:
    return Message(
        MT.APP, to=to, frm=1, term=2, index=commit, commit=commit, entries=(Entry(2, commit + 1),)
    )


class _Sent:
    def __init__(self) -> None:
        self.batches: list[list[Message]] = []
        self.arrived = asyncio.Event()

    def __call__(self, messages: Sequence[Message]) -> None:
        self.batches.append(list(messages))
        self.arrived.set()


def test_a_notice_leaves_within_the_delay_when_nothing_carries_it() -> None:
    asyncio.run(_test_a_notice_leaves_within_the_delay_when_nothing_carries_it())


async def _test_a_notice_leaves_within_the_delay_when_nothing_carries_it() -> None:
    sent = _Sent()
    notices = CommitNotices(sent, delay=0.005)
    other = Message(MT.HEARTBEAT, to=3, frm=1, term=2)
    start = time.monotonic()
    assert notices.route([_notice(2, 7), other]) == [other]
    await asyncio.wait_for(sent.arrived.wait(), timeout=5)
    assert time.monotonic() - start >= 0.004
    assert sent.batches == [[_notice(2, 7)]]


def test_a_later_append_or_heartbeat_to_the_member_supersedes_its_notice() -> None:
    asyncio.run(_test_a_later_append_or_heartbeat_to_the_member_supersedes_its_notice())


async def _test_a_later_append_or_heartbeat_to_the_member_supersedes_its_notice() -> None:
    sent = _Sent()
    notices = CommitNotices(sent, delay=0.005)
    assert notices.route([_notice(2, 7), _notice(3, 7)]) == []
    beat = Message(MT.HEARTBEAT, to=3, frm=1, term=2, commit=7)
    assert notices.route([_append(2, 8), beat]) == [_append(2, 8), beat]
    assert notices.route([_notice(3, 9)]) == []
    await asyncio.wait_for(sent.arrived.wait(), timeout=5)
    assert sent.batches == [[_notice(3, 9)]]  # 2's went with the append; 3's newest only


def test_a_vote_does_not_supersede_a_notice() -> None:
    asyncio.run(_test_a_vote_does_not_supersede_a_notice())


async def _test_a_vote_does_not_supersede_a_notice() -> None:
    sent = _Sent()
    notices = CommitNotices(sent, delay=0.002)
    vote = Message(MT.VOTE_RESP, to=2, frm=1, term=2)
    assert notices.route([_notice(2, 7), vote]) == [vote]
    await asyncio.wait_for(sent.arrived.wait(), timeout=5)
    assert sent.batches == [[_notice(2, 7)]]


def test_without_a_delay_every_message_passes_at_once() -> None:
    asyncio.run(_test_without_a_delay_every_message_passes_at_once())


async def _test_without_a_delay_every_message_passes_at_once() -> None:
    sent = _Sent()
    notices = CommitNotices(sent, delay=0)
    messages = [_notice(2, 7), _append(3, 7)]
    assert notices.route(messages) == messages
    await asyncio.sleep(0.01)
    assert sent.batches == []


def test_cancel_drops_what_is_held() -> None:
    asyncio.run(_test_cancel_drops_what_is_held())


async def _test_cancel_drops_what_is_held() -> None:
    sent = _Sent()
    notices = CommitNotices(sent, delay=0.002)
    notices.route([_notice(2, 7)])
    notices.cancel()
    await asyncio.sleep(0.02)
    assert sent.batches == []
    notices.route([_notice(3, 8)])  # held again after a cancel, and sent
    await asyncio.wait_for(sent.arrived.wait(), timeout=5)
    assert sent.batches == [[_notice(3, 8)]]
