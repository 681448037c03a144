"""The RawNode contract (``raftdb/raft/rawnode.py``): Ready/advance, input checks, and what
each Ready promises about durability.

A small checking driver runs clusters of RawNodes over MemoryStorage and asserts the
persistence contract on every Ready it handles: ``must_sync`` says exactly when the
save needs an fsync, and nothing in ``messages_after_save`` promises more than what
that save made durable.
"""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import Any

import pytest

from raftdb.raft import (
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    InvalidMessageError,
    InvariantError,
    Message,
    MessageType,
    NotLeaderError,
    ProposalDroppedError,
    RawNode,
    Ready,
    Role,
    Snapshot,
    SnapshotMetadata,
    UsageError,
)
from raftdb.raft.messages import LOCAL_MESSAGES, ConfChange, ConfChangeType
from raftdb.storage.memory import MemoryStorage

MT = MessageType
AFTER_SAVE = frozenset({MT.VOTE, MT.VOTE_RESP, MT.APP_RESP})


def new_node(
    node_id: int, peers: list[int] | None = None, storage: MemoryStorage | None = None, **cfg: Any
) -> tuple[RawNode, MemoryStorage]:
    storage = storage if storage is not None else MemoryStorage()
    node = RawNode(Config(id=node_id, storage=storage, rng=Random(node_id), **cfg))
    if peers:
        node.bootstrap([(p, b"") for p in peers])
    return node, storage


class Driver:
    """Nodes 1..n bootstrapped together; every Ready is checked, saved, sent and advanced."""

    def __init__(self, n: int, **cfg: Any) -> None:
        self.nodes: dict[int, RawNode] = {}
        self.storages: dict[int, MemoryStorage] = {}
        self.saved_hs: dict[int, HardState] = {}
        self.queue: list[Message] = []
        self.isolated: set[int] = set()
        self.drop: Callable[[Message], bool] = lambda m: False
        self.sent_now: set[MT] = set()
        self.sent_after_save: set[MT] = set()
        self.readies = 0
        for i in range(1, n + 1):
            self.nodes[i], self.storages[i] = new_node(i, list(range(1, n + 1)), **cfg)
            self.saved_hs[i] = HardState()

    def handle(self, i: int) -> Ready:
        node, storage = self.nodes[i], self.storages[i]
        rd = node.ready()
        assert rd != Ready(), "has_ready() promised work but the Ready is empty"
        self.readies += 1
        prev = self.saved_hs[i]
        # must_sync: exactly when entries, a snapshot, or a new term or vote are saved.
        new_term_or_vote = rd.hard_state is not None and (
            (rd.hard_state.term, rd.hard_state.vote) != (prev.term, prev.vote)
        )
        assert rd.must_sync == (bool(rd.entries) or rd.snapshot is not None or new_term_or_vote)
        if rd.hard_state is not None:
            assert rd.hard_state != prev, "a Ready repeats an unchanged hard state"
        for m in rd.messages:
            assert m.type not in AFTER_SAVE, f"{m.type.name} may not leave before the save"
            assert m.frm == i
        for m in rd.messages_after_save:
            assert m.type in AFTER_SAVE, f"{m.type.name} needlessly waits for the save"
            assert m.frm == i
        self.queue.extend(rd.messages)
        self.sent_now.update(m.type for m in rd.messages)
        storage.save(rd.hard_state, rd.entries, rd.snapshot)
        if rd.hard_state is not None:
            self.saved_hs[i] = rd.hard_state
        hs = storage.hard_state()
        # What the after-save messages promise is durable now.
        for m in rd.messages_after_save:
            if m.type == MT.APP_RESP and not m.reject:
                assert m.index <= storage.last_index(), "acknowledged an unsaved entry"
            if m.type == MT.VOTE_RESP and not m.reject:
                assert (hs.term, hs.vote) == (m.term, m.to), "granted a vote not yet saved"
            if m.type == MT.VOTE:
                assert (hs.term, hs.vote) == (m.term, i), "asked for votes before voting"
        # Committed entries: in order, and never beyond the durable commit index.
        if rd.committed_entries:
            first = rd.committed_entries[0].index
            assert first == node.applied_index + 1
            assert [e.index for e in rd.committed_entries] == list(
                range(first, first + len(rd.committed_entries))
            )
            assert rd.committed_entries[-1].index <= hs.commit
        assert hs.commit <= storage.last_index(), "durable commit index beyond the durable log"
        if rd.snapshot is not None:
            # The snapshot is applied before any entry after it.
            assert not rd.committed_entries
        self.queue.extend(rd.messages_after_save)
        self.sent_after_save.update(m.type for m in rd.messages_after_save)
        node.advance(rd)
        return rd

    def stabilize(self) -> None:
        for _ in range(1000):
            moved = False
            for i, node in self.nodes.items():
                if node.has_ready():
                    self.handle(i)
                    moved = True
            batch, self.queue = self.queue, []
            for m in batch:
                moved = True
                if m.to in self.isolated or m.frm in self.isolated or self.drop(m):
                    continue
                self.nodes[m.to].step(m)
                if m.type == MT.SNAP:
                    self.nodes[m.frm].report_snapshot(m.to, True)
            if not moved:
                # has_ready() hides nothing: a Ready taken now must be empty.
                for node in self.nodes.values():
                    rd = node.ready()
                    assert rd == Ready(), rd
                    node.advance(rd)
                return
        raise AssertionError("did not stabilize")

    def tick_all(self, n: int) -> None:
        for _ in range(n):
            for node in self.nodes.values():
                node.tick()
            self.stabilize()


def elected(n: int = 3, leader: int = 1, **cfg: Any) -> Driver:
    d = Driver(n, **cfg)
    d.stabilize()
    d.nodes[leader].campaign()
    d.stabilize()
    assert d.nodes[leader].role == Role.LEADER
    return d


# -- Ready / advance -----------------------------------------------------------------


def test_ready_twice_without_advance_raises() -> None:
    node, _ = new_node(1, [1])
    assert node.has_ready()
    rd = node.ready()
    assert not node.has_ready()  # nothing new while a Ready is out
    with pytest.raises(UsageError):
        node.ready()
    node.advance(rd)
    node.ready()  # fine again


def test_ready_twice_raises_even_when_the_first_was_empty() -> None:
    node, _ = new_node(1)
    assert not node.has_ready()
    rd = node.ready()
    assert rd == Ready()
    with pytest.raises(UsageError):
        node.ready()
    node.advance(rd)


def test_advance_with_a_foreign_ready_raises() -> None:
    node, storage = new_node(1, [1])
    other, _ = new_node(2, [2])
    rd = node.ready()
    theirs = other.ready()
    with pytest.raises(UsageError):
        node.advance(Ready())  # equal-looking is not enough
    with pytest.raises(UsageError):
        node.advance(theirs)
    copy = Ready(**{f: getattr(rd, f) for f in rd.__dataclass_fields__})
    assert copy == rd
    with pytest.raises(UsageError):
        node.advance(copy)
    # The refused calls did not consume the pending Ready.
    with pytest.raises(UsageError):
        node.ready()
    storage.save(rd.hard_state, rd.entries, rd.snapshot)
    node.advance(rd)
    with pytest.raises(UsageError):
        node.advance(rd)  # twice


def test_advance_without_ready_raises() -> None:
    node, _ = new_node(1, [1])
    with pytest.raises(UsageError):
        node.advance(Ready())


def test_state_fed_while_a_ready_is_out_goes_into_the_next_one() -> None:
    node, storage = new_node(1, [1])
    node.campaign()
    rd = node.ready()
    assert node.role == Role.LEADER
    node.propose(b"late")
    assert not any(e.data == b"late" for e in rd.entries)
    storage.save(rd.hard_state, rd.entries, rd.snapshot)
    node.advance(rd)
    assert node.has_ready()
    rd2 = node.ready()
    assert [e.data for e in rd2.entries] == [b"late"]


# -- step() input checks -------------------------------------------------------------


@pytest.mark.parametrize("msg_type", sorted(LOCAL_MESSAGES))
def test_step_refuses_local_message_types(msg_type: MT) -> None:
    d = elected()
    node = d.nodes[1]
    term = node.term
    with pytest.raises(InvalidMessageError):
        node.step(Message(msg_type, to=1, frm=2, term=term))
    assert not node.has_ready()
    assert node.role == Role.LEADER


@pytest.mark.parametrize(
    "msg",
    [
        Message(MT.APP, to=3, frm=2, term=5),  # addressed to someone else
        Message(MT.HEARTBEAT, to=0, frm=2, term=5),
        Message(MT.VOTE, to=3, frm=2, term=5),
        Message(MT.APP, to=1, frm=0, term=5),  # no sender
        Message(MT.APP_RESP, to=1, frm=-2, term=5),
        Message(MT.APP, to=1, frm=1, term=5),  # from ourselves
        Message(MT.VOTE, to=1, frm=1, term=5),
    ],
)
def test_step_refuses_misaddressed_messages(msg: Message) -> None:
    d = Driver(3)
    d.stabilize()
    node = d.nodes[1]
    before = (node.term, node.role, node.lead, node.commit_index)
    with pytest.raises(InvalidMessageError):
        node.step(msg)
    assert (node.term, node.role, node.lead, node.commit_index) == before
    assert not node.has_ready()


# -- requests that need a leader ------------------------------------------------------


def test_propose_on_a_follower_without_leader_raises_not_leader() -> None:
    d = Driver(3)
    d.stabilize()
    calls: list[Callable[[], None]] = [
        lambda: d.nodes[2].propose(b"x"),
        lambda: d.nodes[2].propose_many([b"x", b"y"]),
        lambda: d.nodes[2].propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 4)),
        lambda: d.nodes[2].read_index(b"r"),
    ]
    for call in calls:
        with pytest.raises(NotLeaderError) as info:
            call()
        assert info.value.leader == 0
        assert isinstance(info.value, ProposalDroppedError)
    assert not d.nodes[2].has_ready()


def test_propose_on_an_unbootstrapped_node_raises_not_leader() -> None:
    node, _ = new_node(1)
    with pytest.raises(NotLeaderError):
        node.propose(b"x")


def test_propose_on_a_follower_forwards_to_the_leader() -> None:
    d = elected()
    d.nodes[2].propose(b"fwd")
    rd = d.nodes[2].ready()
    props = [m for m in rd.messages if m.type == MT.PROP]
    assert [(m.to, [e.data for e in m.entries]) for m in props] == [(1, [b"fwd"])]
    d.storages[2].save(rd.hard_state, rd.entries, rd.snapshot)
    d.nodes[2].advance(rd)
    d.queue.extend(rd.messages)
    d.stabilize()
    assert all(any(e.data == b"fwd" for e in d.storages[i].all_entries()) for i in d.nodes)


def _answers_commit_an_entry(d: Driver) -> int:
    """Leader 1 proposes an entry; the followers' answers commit it, and no Ready
    of the leader's has been taken since. Returns the entry's index."""
    leader = d.nodes[1]
    leader.propose(b"first")
    d.handle(1)  # the appends leave; the leader saves its own copy
    for i in (2, 3):
        for m in [m for m in d.queue if m.to == i]:
            d.nodes[i].step(m)
        d.handle(i)  # save, then answer
    answers, d.queue = [m for m in d.queue if m.to == 1], []
    for m in answers:
        leader.step(m)
    index = leader.commit_index
    assert index == d.storages[1].last_index()
    return index


def _appends(rd: Ready) -> list[tuple[int, list[bytes], int]]:
    return sorted(
        (m.to, [e.data for e in m.entries], m.commit) for m in rd.messages if m.type == MT.APP
    )


def test_a_new_commit_index_rides_on_the_appends_of_the_same_ready() -> None:
    """Proposals that came in after the commit carry it: no append of the commit
    alone (nor its answer) repeats them."""
    d = elected()
    index = _answers_commit_an_entry(d)
    d.nodes[1].propose(b"second")
    rd = d.handle(1)
    assert _appends(rd) == [(2, [b"second"], index), (3, [b"second"], index)]
    d.stabilize()
    assert all(d.nodes[i].commit_index == index + 1 for i in d.nodes)


def test_a_new_commit_index_alone_is_sent_at_the_next_ready() -> None:
    d = elected()
    index = _answers_commit_an_entry(d)
    assert d.nodes[1].has_ready()
    rd = d.handle(1)
    assert _appends(rd) == [(2, [], index), (3, [], index)]
    d.stabilize()
    assert all(d.nodes[i].commit_index == index for i in d.nodes)


def test_disabled_forwarding_raises_not_leader_with_hint() -> None:
    d = elected(disable_proposal_forwarding=True)
    with pytest.raises(NotLeaderError) as info:
        d.nodes[3].propose(b"x")
    assert info.value.leader == 1


def test_candidate_refuses_proposals() -> None:
    d = elected()
    node = d.nodes[2]
    node.campaign()  # pre-candidate: no leader while the election runs
    assert node.role in (Role.PRE_CANDIDATE, Role.CANDIDATE)
    with pytest.raises(NotLeaderError):
        node.propose(b"x")


# -- bootstrap ---------------------------------------------------------------------


def test_bootstrap_writes_committed_membership_entries() -> None:
    node, storage = new_node(1, [1, 2, 3])
    assert node.conf_state() == ConfState(voters=(1, 2, 3))
    assert node.commit_index == 3
    rd = node.ready()
    assert [e.index for e in rd.entries] == [1, 2, 3]
    assert all(e.term == 1 for e in rd.entries)
    assert rd.hard_state == HardState(term=1, vote=0, commit=3)
    assert rd.must_sync
    assert [e.index for e in rd.committed_entries] == [1, 2, 3]
    decoded = [ConfChange.decode(e.data) for e in rd.entries]
    assert [(c.type, c.node_id) for c in decoded] == [
        (ConfChangeType.ADD_VOTER, i) for i in (1, 2, 3)
    ]
    storage.save(rd.hard_state, rd.entries, rd.snapshot)
    node.advance(rd)
    assert node.applied_index == 3
    assert node.conf_state() == ConfState(voters=(1, 2, 3))  # applying again changes nothing


def test_bootstrap_twice_raises() -> None:
    node, _ = new_node(1, [1])
    with pytest.raises(UsageError):
        node.bootstrap([(1, b"")])


def test_bootstrap_without_peers_raises() -> None:
    node, _ = new_node(1)
    with pytest.raises(UsageError):
        node.bootstrap([])


def _saved_bootstrap() -> MemoryStorage:
    node, storage = new_node(1, [1])
    rd = node.ready()
    storage.save(rd.hard_state, rd.entries, rd.snapshot)
    return storage


def _term_only() -> MemoryStorage:
    storage = MemoryStorage()
    storage.save(HardState(term=3), [])
    return storage


def _snapshot_only() -> MemoryStorage:
    storage = MemoryStorage()
    meta = SnapshotMetadata(index=5, term=2, conf_state=ConfState(voters=(1,)))
    storage.save(HardState(term=2, commit=5), [], Snapshot(meta))
    return storage


@pytest.mark.parametrize("make_storage", [_saved_bootstrap, _term_only, _snapshot_only])
def test_bootstrap_on_non_empty_storage_raises(make_storage: Any) -> None:
    storage = make_storage()
    node, _ = new_node(1, storage=storage)
    before = (node.term, node.last_index, node.commit_index, node.conf_state())
    with pytest.raises(UsageError):
        node.bootstrap([(1, b""), (2, b"")])
    assert (node.term, node.last_index, node.commit_index, node.conf_state()) == before


# -- leadership transfer -------------------------------------------------------------


@pytest.mark.parametrize("target", [4, 9, 0])
def test_transfer_to_a_non_member_raises(target: int) -> None:
    d = elected()
    with pytest.raises(ProposalDroppedError):
        d.nodes[1].transfer_leader(target)
    assert d.nodes[1].status().lead_transferee == 0


def test_transfer_to_a_learner_raises() -> None:
    d = elected()
    d.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 3))
    d.stabilize()
    assert d.nodes[1].conf_state() == ConfState(voters=(1, 2), learners=(3,))
    with pytest.raises(ProposalDroppedError):
        d.nodes[1].transfer_leader(3)
    with pytest.raises(ProposalDroppedError):
        d.nodes[2].transfer_leader(3)  # also when asked through a follower


def test_transfer_to_a_voter_hands_over_leadership() -> None:
    d = elected()
    d.nodes[1].transfer_leader(2)
    d.stabilize()
    assert d.nodes[2].role == Role.LEADER
    assert d.nodes[1].role == Role.FOLLOWER
    assert MT.TIMEOUT_NOW in d.sent_now
    assert MT.VOTE in d.sent_after_save  # a transfer skips the pre-vote


# -- what each Ready carries ---------------------------------------------------------


@pytest.mark.parametrize("pre_vote", [True, False])
def test_cluster_run_respects_the_save_contract(pre_vote: bool) -> None:
    """Elections, replication, forwarding, heartbeats, reads and a transfer, with the
    Driver asserting the persistence contract on every Ready."""
    d = elected(pre_vote=pre_vote)
    d.nodes[1].propose(b"a")
    d.stabilize()
    d.nodes[3].propose(b"b")
    d.stabilize()
    d.nodes[2].read_index(b"read-1")
    d.tick_all(3)
    d.nodes[1].transfer_leader(3)
    d.stabilize()
    assert d.nodes[3].role == Role.LEADER
    d.nodes[3].propose_many([b"c", b"d"])
    d.tick_all(2)
    logs = {
        i: [e.data for e in s.all_entries() if e.data and e.type == 0]
        for i, s in d.storages.items()
    }
    assert logs[1] == logs[2] == logs[3] == [b"a", b"b", b"c", b"d"]
    assert {MT.VOTE, MT.VOTE_RESP, MT.APP_RESP} <= d.sent_after_save
    assert {MT.APP, MT.HEARTBEAT, MT.HEARTBEAT_RESP, MT.PROP, MT.READ_INDEX} <= d.sent_now
    if pre_vote:
        assert {MT.PRE_VOTE, MT.PRE_VOTE_RESP} <= d.sent_now


def test_must_sync_false_for_a_commit_only_change() -> None:
    node, storage = new_node(1, [1])
    rd = node.ready()
    storage.save(rd.hard_state, rd.entries, rd.snapshot)
    node.advance(rd)
    node.campaign()
    rd = node.ready()  # new term and vote, the leader's empty entry
    assert rd.must_sync
    assert rd.hard_state is not None
    assert (rd.hard_state.term, rd.hard_state.vote) == (2, 1)
    assert [e.index for e in rd.entries] == [2]
    storage.save(rd.hard_state, rd.entries, rd.snapshot)
    node.advance(rd)
    # Its own saved copy commits the entry: only the commit index changed.
    rd = node.ready()
    assert rd.hard_state == HardState(term=2, vote=1, commit=2)
    assert rd.entries == []
    assert rd.snapshot is None
    assert not rd.must_sync
    assert [e.index for e in rd.committed_entries] == [2]
    storage.save(rd.hard_state, rd.entries, rd.snapshot)
    node.advance(rd)
    assert not node.has_ready()


def test_must_sync_for_a_new_term_without_entries() -> None:
    d = elected()
    node = d.nodes[2]
    # A heartbeat of a newer term: the term must be durable before we answer.
    node.step(Message(MT.HEARTBEAT, to=2, frm=3, term=node.term + 1, commit=0))
    rd = node.ready()
    assert rd.entries == []
    assert rd.hard_state is not None
    assert rd.hard_state.term == d.saved_hs[2].term + 1
    assert rd.must_sync
    assert rd.soft_state is not None
    assert rd.soft_state.lead == 3


def test_follower_acknowledges_entries_only_after_saving_them() -> None:
    d = elected()
    d.nodes[1].propose(b"x")
    rd = d.handle(1)  # the leader's append goes out at once
    apps = [m for m in rd.messages if m.type == MT.APP and m.to == 2]
    assert apps
    for m in apps:
        d.nodes[2].step(m)
    rd2 = d.nodes[2].ready()
    assert [e.data for e in rd2.entries] == [b"x"]
    acks = [m for m in rd2.messages_after_save if m.type == MT.APP_RESP]
    assert [m.index for m in acks] == [rd2.entries[-1].index]
    assert not any(m.type == MT.APP_RESP for m in rd2.messages)
    d.nodes[2].advance(rd2)


def test_vote_grant_waits_for_the_save() -> None:
    d = elected(pre_vote=False, check_quorum=False)  # no leader lease to refuse it
    node = d.nodes[3]
    term = node.term + 1
    node.step(Message(MT.VOTE, to=3, frm=2, term=term, index=node.last_index, log_term=node.term))
    rd = node.ready()
    grants = [m for m in rd.messages_after_save if m.type == MT.VOTE_RESP]
    assert len(grants) == 1
    assert not grants[0].reject
    assert rd.hard_state == HardState(term=term, vote=2, commit=node.commit_index)
    assert rd.must_sync
    assert not rd.messages


def test_lagging_follower_catches_up_through_a_snapshot() -> None:
    d = elected()
    d.isolated.add(3)
    for i in range(5):
        d.nodes[1].propose(b"p%d" % i)
        d.stabilize()
    leader_storage = d.storages[1]
    applied = d.nodes[1].applied_index
    assert applied == leader_storage.last_index() == 9  # 3 bootstrap + 1 empty + 5
    leader_storage.create_snapshot(applied, d.nodes[1].conf_state())
    leader_storage.compact(applied)
    d.isolated.clear()
    # Heartbeats bring node 3 back; it needs entries the leader no longer has.
    follower = d.nodes[3]
    for _ in range(10):
        for node in d.nodes.values():
            node.tick()
        for i in (1, 2):
            while d.nodes[i].has_ready():
                d.handle(i)
        batch, d.queue = d.queue, []
        for m in batch:
            d.nodes[m.to].step(m)
            if m.type == MT.SNAP:
                d.nodes[m.frm].report_snapshot(m.to, True)
        if follower.has_ready():
            rd = follower.ready()
            if rd.snapshot is not None:
                break
            d.storages[3].save(rd.hard_state, rd.entries, rd.snapshot)
            d.queue.extend([*rd.messages, *rd.messages_after_save])
            follower.advance(rd)
    else:
        raise AssertionError("no snapshot was sent")
    assert rd.snapshot.metadata.index == 9
    assert rd.must_sync
    assert rd.hard_state is not None
    assert rd.hard_state.commit == 9
    assert rd.committed_entries == []
    acks = [m for m in rd.messages_after_save if m.type == MT.APP_RESP and not m.reject]
    assert [m.index for m in acks] == [9]
    d.storages[3].save(rd.hard_state, rd.entries, rd.snapshot)
    d.queue.extend([*rd.messages, *rd.messages_after_save])
    follower.advance(rd)
    assert follower.applied_index == 9
    assert follower.conf_state() == ConfState(voters=(1, 2, 3))
    d.nodes[1].propose(b"after")
    d.stabilize()
    assert [e.data for e in d.storages[3].all_entries()] == [b"after"]
    assert d.nodes[1].status().progress[3].match == d.nodes[1].last_index


def test_uncommitted_limit_refuses_proposals_over_it() -> None:
    d = elected(max_uncommitted_entries_size=100)
    leader = d.nodes[1]
    leader.propose(b"a" * 60)
    leader.propose(b"b" * 40)  # exactly at the limit: accepted
    with pytest.raises(ProposalDroppedError):
        leader.propose(b"x")
    d.stabilize()
    assert leader.applied_index == leader.last_index
    leader.propose(b"c" * 100)  # all committed: room again
    d.stabilize()


def test_uncommitted_limit_holds_while_older_entries_apply() -> None:
    d = elected(max_uncommitted_entries_size=100)
    leader = d.nodes[1]
    # Appends carrying the 40-byte entry never arrive: it stays uncommitted.
    d.drop = lambda m: m.type == MT.APP and any(e.data == b"b" * 40 for e in m.entries)
    leader.propose(b"a" * 60)
    d.handle(1)
    leader.propose(b"b" * 40)
    d.stabilize()
    assert leader.applied_index == leader.last_index - 1  # the 60 bytes committed and applied
    # 40 bytes are still uncommitted: 40 + 70 > 100.
    with pytest.raises(ProposalDroppedError):
        leader.propose(b"c" * 70)


# -- restart from storage -------------------------------------------------------------


def _run_single(node: RawNode, storage: MemoryStorage) -> list[Entry]:
    applied: list[Entry] = []
    while node.has_ready():
        rd = node.ready()
        storage.save(rd.hard_state, rd.entries, rd.snapshot)
        applied.extend(rd.committed_entries)
        node.advance(rd)
    return applied


@pytest.mark.parametrize("applied", [0, 6, 8])
def test_restart_after_compaction_resumes_from_storage(applied: int) -> None:
    node, storage = new_node(1, [1])
    node.campaign()
    for i in range(6):
        node.propose(b"v%d" % i)
    _run_single(node, storage)
    assert node.commit_index == 8  # 1 bootstrap entry, 1 empty leader entry, 6 proposals
    conf = node.conf_state()
    storage.create_snapshot(6, conf)
    storage.compact(6)
    restarted = RawNode(Config(id=1, storage=storage, rng=Random(1), applied=applied))
    assert restarted.term == node.term
    assert restarted.commit_index == 8
    assert restarted.last_index == 8
    assert restarted.conf_state() == conf
    assert restarted.applied_index == max(applied, 6)
    redelivered = _run_single(restarted, storage)
    assert [e.index for e in redelivered] == list(range(max(applied, 6) + 1, 9))
    restarted.campaign()
    _run_single(restarted, storage)
    assert restarted.role == Role.LEADER


def test_restart_with_applied_beyond_commit_raises() -> None:
    node, storage = new_node(1, [1])
    _run_single(node, storage)
    with pytest.raises(InvariantError):  # the state machine and the log disagree
        RawNode(Config(id=1, storage=storage, applied=5))


@pytest.mark.parametrize("compact_to", [None, 4])
def test_restart_with_applied_zero_starts_after_the_snapshot(compact_to: int | None) -> None:
    """Config.applied: "0: let the core start from the snapshot, re-delivering everything
    after it". Drivers keep some entries before the snapshot for slow followers."""
    node, storage = new_node(1, [1])
    node.campaign()
    for i in range(6):
        node.propose(b"v%d" % i)
    _run_single(node, storage)
    storage.create_snapshot(6, node.conf_state())
    if compact_to is not None:
        storage.compact(compact_to)
    restarted = RawNode(Config(id=1, storage=storage, rng=Random(1)))
    assert restarted.applied_index == 6
    assert [e.index for e in _run_single(restarted, storage)] == [7, 8]


def test_a_saved_commit_index_behind_the_snapshot_is_raised_to_it() -> None:
    """A driver may save a commit-only hard state change lazily (raftdb's does): after
    a crash the saved commit index can be behind a snapshot taken of applied entries.
    The snapshot is committed by definition, so the node starts from it. Found by the
    chaos suite (a node refused to start: "saved commit index 299 is outside [300, 300]")."""
    storage = MemoryStorage()
    entries = [Entry(1, i, EntryType.NORMAL, b"x") for i in range(1, 7)]
    storage.save(HardState(term=1, vote=1, commit=5), entries)
    storage.create_snapshot(6, ConfState(voters=(1,)))
    storage.compact(6)
    node, _ = new_node(1, storage=storage)
    assert node.commit_index == 6
    assert node.applied_index == 6
    # A commit index beyond the log is still refused: that log lost entries.
    broken = MemoryStorage()
    broken.save(HardState(term=1, vote=1, commit=9), entries)
    with pytest.raises(InvariantError, match="beyond the last index"):
        new_node(1, storage=broken)
