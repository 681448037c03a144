"""Focused checks of the rules of the Raft paper (Ongaro & Ousterhout, 2014), by section.

Each test names the section or figure it checks. They drive RawNode directly
(one node, hand-made messages) or a small cluster through the scenario
harness (``tests/scenarios/harness.py``), and assert on outcomes rather than
traces; the scenario files show the same rules as full traces.
"""

from __future__ import annotations

from random import Random

import pytest

from raftdb.raft import (
    Config,
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    RawNode,
    Role,
    Snapshot,
    SnapshotMetadata,
)
from raftdb.storage.memory import MemoryStorage
from tests.scenarios.datadriven import TestCase, parse_directive
from tests.scenarios.harness import InteractionEnv

MT = MessageType


# -- helpers --------------------------------------------------------------------


def make_node(
    node_id: int = 1,
    voters: tuple[int, ...] = (1, 2, 3),
    log_terms: tuple[int, ...] = (),
    term: int = 1,
    vote: int = 0,
    election_tick: int = 10,
    seed: int = 0,
) -> tuple[RawNode, MemoryStorage]:
    """A node whose storage holds a snapshot at 1/1 (``voters``) then ``log_terms``."""
    storage = MemoryStorage()
    snap = Snapshot(SnapshotMetadata(1, 1, ConfState(voters=voters)))
    entries = [Entry(t, 2 + i) for i, t in enumerate(log_terms)]
    storage.save(HardState(max(term, *log_terms, 1), vote, 1), entries, snap)
    node = RawNode(
        Config(
            id=node_id,
            storage=storage,
            election_tick=election_tick,
            pre_vote=False,
            check_quorum=False,
            rng=Random(seed),
        )
    )
    return node, storage


def drain(node: RawNode, storage: MemoryStorage) -> list[Message]:
    """Handle every Ready of ``node`` (save, advance) and return what it sent."""
    out: list[Message] = []
    while node.has_ready():
        rd = node.ready()
        storage.save(rd.hard_state, rd.entries, rd.snapshot)
        out.extend(rd.messages)
        out.extend(rd.messages_after_save)
        node.advance(rd)
    return out


def run(env: InteractionEnv, directive: str) -> str:
    """Run one scenario directive against ``env``; return its output."""
    cmd, args = parse_directive(directive)
    return env.handle(TestCase("test_paper", 0, cmd, args, "", ""))


def cluster(n: int = 3, options: str = "") -> InteractionEnv:
    """``n`` bootstrapped nodes, node 1 elected (no PreVote, no CheckQuorum)."""
    env = InteractionEnv()
    run(env, "log-level none")
    run(env, f"add-nodes {n} pre-vote=false check-quorum=false {options}")
    run(env, "stabilize")
    run(env, "campaign 1")
    run(env, "stabilize")
    return env


def role(node: RawNode) -> Role:
    """``node.role``, read through a call so that mypy does not narrow it across steps."""
    return node.role


def raw(env: InteractionEnv, node_id: int) -> RawNode:
    node = env.nodes[node_id].raw
    assert node is not None
    return node


# -- §5.1: terms -------------------------------------------------------------------


@pytest.mark.parametrize("msg_type", [MT.APP, MT.HEARTBEAT, MT.VOTE, MT.APP_RESP])
def test_5_1_higher_term_updates_term_and_becomes_follower(msg_type: MessageType) -> None:
    """§5.1: "If a server learns a higher term, it updates its term; a candidate or
    leader reverts to follower"."""
    env = cluster()
    leader = raw(env, 1)
    assert role(leader) == Role.LEADER
    leader.step(Message(msg_type, to=1, frm=2, term=leader.term + 3, log_term=0, index=0))
    assert leader.term == 5
    assert role(leader) == Role.FOLLOWER


def test_5_1_stale_term_request_is_rejected() -> None:
    """§5.1: "If a server receives a request with a stale term number, it rejects the
    request": a vote request of an old term is not granted."""
    node, storage = make_node(term=5)
    node.step(Message(MT.VOTE, to=1, frm=2, term=4, log_term=1, index=1))
    sent = drain(node, storage)
    assert node.term == 5
    assert not [m for m in sent if m.type == MT.VOTE_RESP and not m.reject]


# -- §5.2: leader election ------------------------------------------------------------


def test_5_2_follower_campaigns_after_election_timeout() -> None:
    """§5.2: a follower that hears nothing for an election timeout increments its term,
    votes for itself and asks every other server for its vote."""
    node, storage = make_node(election_tick=10, seed=1)
    for _ in range(2 * 10):  # the randomized timeout is in [10, 20)
        node.tick()
    assert node.role == Role.CANDIDATE
    assert node.term == 2
    sent = drain(node, storage)
    assert sorted(m.to for m in sent if m.type == MT.VOTE) == [2, 3]
    assert storage.hard_state().vote == 1


@pytest.mark.parametrize("seed", range(5))
def test_5_2_election_timeouts_are_randomized(seed: int) -> None:
    """§5.2: election timeouts are chosen randomly from a fixed interval, here
    [election_tick, 2 * election_tick)."""
    node, _ = make_node(election_tick=10, seed=seed)
    ticks = 0
    while node.role == Role.FOLLOWER:
        node.tick()
        ticks += 1
    assert 10 <= ticks < 20


@pytest.mark.parametrize(
    ("size", "grants", "rejects", "role"),
    [
        (1, 0, 0, Role.LEADER),  # a single voter elects itself
        (3, 1, 0, Role.LEADER),
        (3, 0, 2, Role.FOLLOWER),
        (3, 0, 1, Role.CANDIDATE),  # undecided
        (5, 2, 0, Role.LEADER),
        (5, 1, 2, Role.CANDIDATE),
        (5, 0, 3, Role.FOLLOWER),
    ],
)
def test_5_2_candidate_wins_with_a_majority(
    size: int, grants: int, rejects: int, role: Role
) -> None:
    """§5.2: a candidate becomes leader with votes from a majority of the servers; it
    gives up (here: reverts to follower) once a majority refused."""
    voters = tuple(range(1, size + 1))
    node, storage = make_node(voters=voters)
    node.campaign()
    drain(node, storage)
    peers = list(voters[1:])
    for peer in peers[:grants]:
        node.step(Message(MT.VOTE_RESP, to=1, frm=peer, term=2))
    for peer in peers[grants : grants + rejects]:
        node.step(Message(MT.VOTE_RESP, to=1, frm=peer, term=2, reject=True))
    assert node.role == role


def test_5_2_each_server_votes_for_at_most_one_candidate_per_term() -> None:
    """§5.2: "each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis"; a repeated request of the same candidate is
    granted again (its answer may have been lost)."""
    node, storage = make_node()
    answers: dict[int, bool] = {}
    for candidate in (2, 3, 2):
        node.step(Message(MT.VOTE, to=1, frm=candidate, term=2, log_term=1, index=1))
        for m in drain(node, storage):
            if m.type == MT.VOTE_RESP:
                answers.setdefault(candidate, False)
                answers[candidate] = answers[candidate] or not m.reject
    assert answers == {2: True, 3: False}
    assert storage.hard_state().vote == 2


def test_5_2_candidate_steps_down_for_a_leader_of_its_term() -> None:
    """§5.2: a candidate that receives AppendEntries from a leader whose term is at
    least its own recognizes the leader and returns to follower state."""
    node, storage = make_node()
    node.campaign()
    drain(node, storage)
    assert role(node) == Role.CANDIDATE
    node.step(Message(MT.APP, to=1, frm=3, term=2, log_term=1, index=1))
    assert role(node) == Role.FOLLOWER
    assert node.lead == 3


# -- §5.3: log replication ---------------------------------------------------------------


def test_5_3_entry_commits_once_on_a_majority_and_is_applied_everywhere() -> None:
    """§5.3: an entry is committed once the leader has replicated it on a majority;
    followers learn the commit index and apply it."""
    env = cluster(5)
    run(env, "isolate 4 5")
    run(env, "propose 1 x")
    run(env, "stabilize")
    assert raw(env, 1).commit_index == raw(env, 1).last_index
    for i in (1, 2, 3):
        assert [d for _, d in env.nodes[i].sm.applied] == ["x"]
    for i in (4, 5):
        assert env.nodes[i].sm.applied == []


@pytest.mark.parametrize(
    ("prev_term", "prev_index", "accepted"),
    [
        (2, 3, True),  # matches our last entry
        (1, 2, True),  # matches an earlier entry
        (2, 4, False),  # beyond our log
        (1, 3, False),  # index we have, different term
    ],
)
def test_5_3_consistency_check(prev_term: int, prev_index: int, accepted: bool) -> None:
    """§5.3 / Figure 2: a follower refuses AppendEntries whose previous entry
    (index, term) is not in its log."""
    node, storage = make_node(log_terms=(1, 2), term=2)
    node.step(
        Message(
            MT.APP,
            to=1,
            frm=2,
            term=2,
            log_term=prev_term,
            index=prev_index,
            entries=(Entry(2, prev_index + 1, data=b"x"),),
        )
    )
    resp = [m for m in drain(node, storage) if m.type == MT.APP_RESP]
    assert len(resp) == 1
    assert resp[0].reject is not accepted


def test_5_3_conflicting_entries_are_replaced() -> None:
    """Figure 2, AppendEntries receiver step 3: "If an existing entry conflicts with a
    new one (same index but different terms), delete the existing entry and all
    that follow it"."""
    node, storage = make_node(log_terms=(1, 2, 2), term=3)  # 1/2 2/3 2/4
    node.step(Message(MT.APP, to=1, frm=2, term=3, log_term=2, index=3, entries=(Entry(3, 4),)))
    drain(node, storage)
    assert [(e.term, e.index) for e in storage.all_entries()] == [(1, 2), (2, 3), (3, 4)]


# -- §5.4: safety ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cand_last_term", "cand_last_index", "granted"),
    [
        (3, 2, True),  # higher last term, shorter log
        (2, 4, True),  # same last term, same length
        (2, 5, True),  # same last term, longer
        (2, 3, False),  # same last term, shorter
        (1, 9, False),  # lower last term, longer
    ],
)
def test_5_4_1_election_restriction(
    cand_last_term: int, cand_last_index: int, granted: bool
) -> None:
    """§5.4.1: a voter denies its vote if its own log is more up to date: compare the
    last entries' terms, then the logs' lengths. The voter's log ends at 2/4."""
    node, storage = make_node(log_terms=(1, 2, 2), term=3)
    node.step(Message(MT.VOTE, to=1, frm=2, term=4, log_term=cand_last_term, index=cand_last_index))
    resp = [m for m in drain(node, storage) if m.type == MT.VOTE_RESP]
    assert len(resp) == 1
    assert resp[0].reject is not granted


def test_5_4_2_figure8_earlier_term_entry_not_committed_by_counting() -> None:
    """§5.4.2 / Figure 8: a leader never commits an entry of an earlier term by
    counting replicas, only together with an entry of its own term."""
    # Node 1 leads term 3 (elected by 2 and 3) with an entry 2/2 of term 2 that
    # only it and node 2 hold; node 3 holds nothing after the snapshot.
    node, storage = make_node(voters=(1, 2, 3, 4, 5), log_terms=(2,), term=2)
    node.campaign()
    drain(node, storage)
    for peer in (2, 3):
        node.step(Message(MT.VOTE_RESP, to=1, frm=peer, term=3))
    assert node.role == Role.LEADER
    drain(node, storage)  # saves the no-op 3/3
    # 2 and 3 acknowledge 2/2: three replicas of five, but of term 2.
    node.step(Message(MT.APP_RESP, to=1, frm=2, term=3, index=2))
    node.step(Message(MT.APP_RESP, to=1, frm=3, term=3, index=2))
    drain(node, storage)
    assert node.commit_index == 1
    # Once the no-op 3/3 is on a majority, both commit.
    node.step(Message(MT.APP_RESP, to=1, frm=2, term=3, index=3))
    node.step(Message(MT.APP_RESP, to=1, frm=3, term=3, index=3))
    assert node.commit_index == 3


# -- Figure 7: the leader brings every follower's log into line ------------------------------

FIGURE7_LEADER = (1, 1, 4, 4, 5, 5, 6, 6, 6)  # terms of entries 2..10 (1/1 is a snapshot)
FIGURE7_FOLLOWERS = {
    "a": (1, 1, 4, 4, 5, 5, 6, 6),
    "b": (1, 1, 4),
    "c": (1, 1, 4, 4, 5, 5, 6, 6, 6, 6),
    "d": (1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7),
    "e": (1, 1, 4, 4, 4, 4),
    "f": (1, 1, 2, 2, 2, 3, 3, 3, 3, 3),
}


@pytest.mark.parametrize("case", sorted(FIGURE7_FOLLOWERS))
def test_figure7_follower_logs_converge_in_one_round_trip(case: str) -> None:
    """Figure 7 / §5.3: whatever the follower's log, the leader of term 8 makes it
    identical to its own; with conflict hints it needs at most one rejected
    probe per follower."""
    env = InteractionEnv()
    run(env, "log-level none")
    common = "voters=(1,2,3) term=7 pre-vote=false check-quorum=false"
    leader = ",".join(map(str, FIGURE7_LEADER))
    follower = ",".join(map(str, FIGURE7_FOLLOWERS[case]))
    run(env, f"add-nodes 1 log=({leader}) {common}")
    run(env, f"add-nodes 1 log=({follower}) {common}")
    run(env, f"add-nodes 1 log=({leader}) {common}")
    run(env, "campaign 1")
    trace = run(env, "stabilize")
    assert raw(env, 1).role == Role.LEADER
    assert raw(env, 1).term == 8
    want = [(e.term, e.index) for e in env.nodes[1].storage.all_entries()]
    got = [(e.term, e.index) for e in env.nodes[2].storage.all_entries()]
    assert got == want
    rejections = [
        line for line in trace.splitlines() if "2->1 APP_RESP" in line and "rejected" in line
    ]
    # Each rejection appears twice in the trace (sent in a Ready, then received).
    assert len(rejections) <= 2
