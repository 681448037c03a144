"""Commit notices (``raftdb.raft.COMMIT_NOTICE``): which commit-only appends a
leader marks, and that a follower answers a notice only when it refuses it."""

from __future__ import annotations

from raftdb.raft import COMMIT_NOTICE, Message, MessageType

from .test_node_api import Driver, _answers_commit_an_entry, elected

MT = MessageType


def _commit_appends(d: Driver) -> dict[int, Message]:
    """The leader's next Ready, by recipient: its commit-only appends."""
    rd = d.handle(1)
    return {m.to: m for m in rd.messages if m.type == MT.APP and not m.entries}


def _deliver_to(d: Driver, i: int) -> list[Message]:
    """Step what is queued for ``i``, handle its Ready; return what it sent."""
    for m in [m for m in d.queue if m.to == i]:
        d.nodes[i].step(m)
    d.queue = [m for m in d.queue if m.to != i]
    d.handle(i)
    sent, d.queue = [m for m in d.queue if m.frm == i], [m for m in d.queue if m.frm != i]
    return sent


def test_a_commit_alone_to_caught_up_followers_is_a_notice_they_do_not_answer() -> None:
    d = elected()
    index = _answers_commit_an_entry(d)
    notices = _commit_appends(d)
    assert sorted(notices) == [2, 3]
    assert all(m.context == COMMIT_NOTICE and m.commit == index for m in notices.values())
    for i in (2, 3):
        assert _deliver_to(d, i) == []  # accepted: no answer
        assert d.nodes[i].commit_index == index
    d.stabilize()
    assert all(d.nodes[i].commit_index == index for i in d.nodes)


def test_a_follower_whose_forwarded_write_waits_is_told_by_a_plain_append() -> None:
    """Its client waits on the commit: the append is answered as any other, and
    the driver may not hold it."""
    d = elected()
    d.nodes[3].propose(b"fwd")
    d.stabilize()  # forwarded, appended, committed, told
    d.nodes[3].propose(b"fwd2")
    d.handle(3)  # the proposal goes to the leader
    forwarded, d.queue = d.queue, []
    for m in forwarded:
        d.nodes[1].step(m)
    d.handle(1)  # the appends leave
    for i in (2, 3):
        answers = _deliver_to(d, i)
        for m in answers:
            d.nodes[1].step(m)
    appends = _commit_appends(d)
    assert appends[3].context == b""
    assert appends[2].context == COMMIT_NOTICE
    assert [m.type for m in _deliver_to(d, 3)] == [MT.APP_RESP]
    assert d.nodes[3].commit_index == d.nodes[1].commit_index


def test_no_notice_to_a_follower_with_appends_unanswered() -> None:
    """The leader does not know that follower holds everything before it: the
    answer may teach it something, so the append is a plain one."""
    d = elected()
    leader = d.nodes[1]
    leader.propose(b"x")
    d.handle(1)
    answers = _deliver_to(d, 3)  # 3 answers; 2's append is still on its way
    d.queue = [m for m in d.queue if m.to != 2]  # lost
    for m in answers:
        leader.step(m)
    appends = _commit_appends(d)
    assert appends[3].context == COMMIT_NOTICE
    assert 2 not in appends or appends[2].context == b""


def test_a_notice_that_does_not_match_is_refused_and_answered() -> None:
    d = elected()
    follower = d.nodes[2]
    last = d.storages[2].last_index()
    follower.step(
        Message(
            MT.APP,
            to=2,
            frm=1,
            term=follower.term,
            log_term=follower.term,
            index=last + 5,
            commit=last + 5,
            context=COMMIT_NOTICE,
        )
    )
    d.handle(2)
    answers = [m for m in d.queue if m.frm == 2]
    assert [(m.type, m.reject) for m in answers] == [(MT.APP_RESP, True)]
