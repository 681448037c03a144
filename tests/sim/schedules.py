"""Targeted fault schedules: exact sequences of faults that expose known Raft bugs.

Random faults find most bugs, but a few need a precise sequence that random
draws almost never make: the Figure 8 sequence of leader changes, a crash
between sending something and saving it, two membership changes in flight.
Each :class:`Schedule` here plays one such sequence at the start of a run
(before the random faults, with the clients idle), driving the simulation step
by step where timing matters, and lets the run go on as usual afterwards: the
same invariants judge it, and the run must still recover, converge and be
linearizable at the end. With a correct core the sequence is harmless; with
the bug it names, an invariant fails.

A schedule is part of the seed space (``SimConfig.from_seed`` gives one to a
tenth of the seeds) and can be asked for by name
(``SimConfig.with_schedule``); ``test_sim.py::test_targeted_schedule`` runs each
named schedule over a few seeds first, which is what the mutation check
(``python -m tests.mutation``) relies on. Every choice a schedule makes (which
node plays which part) comes from the run's seeded Random, so a run stays
replayable from its seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftdb.raft import (
    ConfChange,
    ConfChangeType,
    MessageType,
    ProposalDroppedError,
    Role,
)

from .script import Schedule, Script

if TYPE_CHECKING:
    from raftdb.raft import Message

    from .simulator import SimConfig, SimNode

__all__ = ["SCHEDULES", "SCHEDULE_NAMES", "Schedule"]

MT = MessageType


class Figure8(Schedule):
    """The Figure 8 sequence of the Raft paper, on three nodes.

    (a) Leader A appends ``x`` (term t) alone, saves it and crashes. (b) C is
    elected in term t+1 by B; its own empty entry (term t+1) at the same index
    reaches no one, and C crashes. (c) A restarts and is elected (term T > t+1)
    by B; it replicates ``x`` to B, so that ``x`` is on a majority, but its own
    entry of term T reaches no one. A correct leader does not commit ``x``
    (it is of an earlier term); one that counts it commits it. (d) A crashes, C
    restarts and is elected by B (its last term t+1 beats B's t): it overwrites
    ``x`` everywhere. Had ``x`` been committed, C lacks a committed entry.
    """

    name = "figure8"
    summary = (
        "leader changes with partial replication: an entry of an old term reaches a "
        "majority under a later leader, then a leader without it is elected"
    )

    def configure(self, cfg: SimConfig) -> None:
        cfg.nodes = 3
        cfg.max_size_per_msg = 1  # one entry per append: x can go without the next one

    def script(self, s: Script) -> None:
        a = s.settled()
        assert a.raw is not None
        rest = s.others(a)
        t = a.raw.term
        # (a) x on A only, durably; then A is gone.
        s.isolate(a)
        i = s.propose(a, "figure8-x")
        s.until("A saving x", lambda: s.saved(a, i, t))
        s.crash(a)
        s.sim.cut.clear()
        # (b) a new leader of B and C, whose appends reach no one.
        s.sim.drop_filter = lambda m: m.type in (MT.APP, MT.SNAP) and m.term > t
        found: list[SimNode] = []

        def new_leader_saved() -> bool:
            leader = s.leader()
            if leader is None or leader.raw is None or leader.raw.term <= t:
                return False
            if not s.saved(leader, i, leader.raw.term):
                return False
            found[:] = [leader]
            return True

        s.until("a leader of term > t saving its empty entry", new_leader_saved)
        c = found[0]
        b = next(n for n in rest if n is not c)
        t1 = c.raw.term if c.raw is not None else 0
        s.crash(c)
        # (c) A back: elected by B, it brings B its x but not its entry of the new term.
        s.start(a)
        assert b.raw is not None

        def hold_new_term(m: Message) -> bool:
            if m.type != MT.APP or m.frm != a.id or m.to != b.id or b.raw is None:
                return False
            if a.raw is None or not any(e.term == a.raw.term for e in m.entries):
                return False
            # B rejects an append that does not follow its log: let those through.
            return b.raw._raft.log.match_term(m.index, m.log_term)

        s.sim.drop_filter = hold_new_term
        s.until(
            "A leading again with x on B",
            lambda: (
                a.raw is not None
                and a.raw.role == Role.LEADER
                and a.raw.term > t1
                and s.saved(b, i, t)
            ),
        )
        s.rounds(5)  # heartbeats: a node that counted x as committed applies it now
        # (d) A gone, C back: C is elected by B and overwrites x.
        s.sim.drop_filter = None
        s.crash(a)
        s.start(c)
        s.until(
            "C leading",
            lambda: c.raw is not None and c.raw.role == Role.LEADER,
        )
        s.start(a)


class LeaderCrashBeforeSave(Schedule):
    """A leader crashes between sending appends and saving them.

    Leader A proposes ``e1`` and takes its Ready: the append leaves for B (C's
    link is cut) while A's own save waits. A proposes ``e2`` meanwhile (so it
    is appended after the Ready was taken). B saves ``e1`` and acknowledges
    it: a leader that counts its own unsaved copy commits ``e1`` now, on the
    strength of one disk out of three. A then saves ``e1`` (a leader that
    counts its whole log at that moment counts ``e2`` too), sends ``e2``, B
    acknowledges it, and A crashes before saving ``e2``: e2 is then on B's disk
    alone, and the other two may elect a leader without it.
    """

    name = "leader-crash-before-save"
    summary = (
        "a leader's appends leave before its own save; a follower acknowledges; "
        "the leader crashes before saving"
    )

    def configure(self, cfg: SimConfig) -> None:
        cfg.nodes = 3

    def script(self, s: Script) -> None:
        a = s.settled()
        b, c = s.others(a)
        s.quiesce()
        s.sim.cut.add((a.id, c.id))
        s.propose(a, "unsaved-e1")
        s.half(a)  # the append of e1 leaves; A's save waits
        s.propose(a, "unsaved-e2")  # appended while that Ready is unsaved
        s.deliver(b, a)
        s.drain(b)  # B saves e1 and acknowledges it
        s.deliver(a, b)  # a leader counting its unsaved copy commits e1 here
        if a.raw is None or a.raw.role != Role.LEADER:
            return
        s.half(a)  # A saves e1 (and, counting its whole log, e2)
        s.half(a)  # the next Ready: the append of e2 leaves
        s.deliver(b, a)
        s.drain(b)
        s.deliver(a, b)  # counting the unsaved e2 commits it here
        s.crash(a)  # e2 was sent, not saved
        s.sim.deliver_matching(lambda m: m.to == c.id)  # lost on the cut link
        s.sim.cut.clear()
        s.rounds(5)
        s.start(a)


class VoterCrashBeforeSave(Schedule):
    """A voter grants a vote, then crashes before saving it, and votes again.

    Two candidates X and Y campaign in the same term; voter V receives X's
    request and takes the Ready with its grant, then crashes before the
    save. With the vote held until the save (as it must be), the grant never
    left; a core that sends it at once lets X win. V restarts without the
    vote, grants Y in the same term, and Y wins: two leaders of one term.
    """

    name = "voter-crash-before-save"
    summary = "two candidates of one term; a voter crashes between granting and saving its vote"

    def configure(self, cfg: SimConfig) -> None:
        cfg.nodes = 3
        cfg.pre_vote = False
        cfg.check_quorum = False

    def script(self, s: Script) -> None:
        leader = s.settled()
        s.crash(leader)
        s.start(leader)  # back as a follower that knows no leader
        x = leader
        y, v = s.others(x)
        s.quiesce()
        s.campaign(x)
        s.campaign(y)
        s.drain(x)
        s.drain(y)  # both candidates of one term; their requests leave after the save
        s.deliver(v, x)
        s.half(v)  # V's grant to X: only "messages" leave now
        s.crash(v)
        s.deliver(x, v)
        s.start(v)
        s.deliver(v, y)
        s.drain(v)
        s.deliver(y, v)
        s.quiesce()


class NewLeaderRead(Schedule):
    """A read reaches a new leader whose commit index lags an acknowledged write.

    Leader A commits a client's write ``w`` with B and C holding it, and
    answers the client; its commit index never reaches B or C, and A crashes.
    B is elected; before its own empty entry commits (its appends are held,
    its heartbeats are not), a client reads through B. B's commit index is
    below ``w``: serving the read there would miss an acknowledged write.
    """

    name = "new-leader-read"
    summary = (
        "a write commits and is answered, its leader crashes before telling anyone; "
        "a read reaches the new leader before it commits an entry of its term"
    )

    def configure(self, cfg: SimConfig) -> None:
        cfg.nodes = 3
        cfg.pre_vote = False
        cfg.check_quorum = False

    def script(self, s: Script) -> None:
        a = s.settled()
        b, c = s.others(a)
        s.quiesce()
        s.sim.pinned = a.id
        client, reader = s.clients()[:2]
        s.step()
        client._write(b"a", 0.0)  # a plain put, through A
        s.half(a)
        for n in (b, c):
            s.deliver(n, a)
            s.drain(n)
        s.isolate(a, one_way=True)  # nothing more leaves A: B and C never learn the commit
        s.deliver(a)
        s.drain(a)  # A commits and applies w: the client has its answer
        s.crash(a)
        s.sim.deliver_matching(lambda m: m.frm == a.id)  # lost on the cut links
        s.sim.cut.clear()
        s.campaign(b)
        s.drain(b)
        s.deliver(c, b)
        s.drain(c)
        s.sim.drop_filter = lambda m: m.type == MT.APP and m.frm == b.id
        s.deliver(b, c)  # B wins; its appends are held from now on
        if b.raw is None or b.raw.role != Role.LEADER:
            return
        s.sim.pinned = b.id
        s.step()
        reader._read(b"a")
        s.quiesce()  # heartbeat rounds go and come back; appends do not
        s.sim.drop_filter = None
        s.sim.pinned = None
        s.quiesce()
        s.start(a)


class ConcurrentConfChanges(Schedule):
    """Two membership changes in flight at once, then a partition.

    Leader C of {A, B, C} proposes adding voters D and E back to back; a
    correct leader refuses the second while the first is not applied. If both
    go out, A saves both and acknowledges them, then crashes, never learning
    that they committed. C commits the first ({A, B, C, D}), then the second
    ({A, ..., E}) with B and D, and, with B cut off, more entries with D and
    E. Then A and B are cut off from the rest and A restarts: it still runs
    {A, B, C} (it applied neither change), its log is as long as B's, and B's
    vote elects it, without what C, D and E committed. One change at a time
    makes the majorities of any two memberships a node can run overlap; two
    at once do not.
    """

    name = "concurrent-conf-changes"
    summary = (
        "a leader proposes two membership changes back to back; a follower holding both, "
        "which never learnt they committed, campaigns in a partition"
    )

    def configure(self, cfg: SimConfig) -> None:
        cfg.nodes = 3
        cfg.max_size_per_msg = 1 << 20  # both changes in one append
        cfg.max_inflight = 256

    def script(self, s: Script) -> None:
        c = s.settled()
        assert c.raw is not None
        a, b = s.others(c)
        s.quiesce()
        base = max(s.sim.nodes)
        new_voters = [s.sim._new_node(base + 1), s.sim._new_node(base + 2)]
        for new in new_voters:
            s.start(new)
        for new in new_voters:
            cc = ConfChange(ConfChangeType.ADD_VOTER, new.id, f"node-{new.id}".encode())
            try:
                c.raw.propose_conf_change(cc)
            except ProposalDroppedError:
                break  # one change at a time: the second is refused
            s.sim._after_step(c)
        s.half(c)
        s.deliver(a, c)
        s.drain(a)  # A saves what C sent and acknowledges it...
        s.crash(a)  # ... and never learns what committed
        s.rounds(40)  # C commits the changes with B (and D)
        s.isolate(b)
        if c.raw is not None and c.raw.role == Role.LEADER:
            for k in range(3):
                s.propose(c, f"conf-{k}")
        s.rounds(30)  # ... and the entries with D and E, if it has them as voters
        s.sim.cut.clear()
        s.isolate(a, b)
        s.start(a)
        s.until(
            "a leader among A and B",
            lambda: any(n.raw is not None and n.raw.role == Role.LEADER for n in (a, b)),
        )
        s.rounds(10)


class StaleVoteGrant(Schedule):
    """A split vote, and a grant of the previous term that arrives late.

    X campaigns in term t and V grants it, but the grant is delayed (and Y's
    is lost). X campaigns again in t+1; then V's grant of term t arrives. A
    correct candidate drops it (its term is stale); one that counts it wins
    t+1 with one real vote. Y then campaigns in t+1 and V, which has not voted
    in t+1, elects it: two leaders of one term.
    """

    name = "stale-vote-grant"
    summary = "a split vote: a grant of the previous term reaches the candidate in its next term"

    def configure(self, cfg: SimConfig) -> None:
        cfg.nodes = 3
        cfg.pre_vote = False
        cfg.check_quorum = False

    def script(self, s: Script) -> None:
        leader = s.settled()
        s.crash(leader)
        s.start(leader)
        x = leader
        y, v = s.others(x)
        s.quiesce()
        s.campaign(x)
        s.drain(x)  # X's requests of term t
        s.deliver(v, x)
        s.drain(v)
        late = s.hold(x, v)  # V's grant, delayed
        s.deliver(y, x)
        s.drain(y)
        s.hold(x, y)  # Y's grant, lost
        s.campaign(x)
        s.drain(x)  # X in t+1
        s.release(late)  # V's grant of term t reaches X in term t+1
        s.campaign(y)
        s.drain(y)
        s.deliver(v, y)
        s.drain(v)
        s.deliver(y, v)  # Y elected in t+1 by V
        s.quiesce()


class OverwriteWhileSaving(Schedule):
    """A new leader overwrites a follower's tail while the follower is saving it.

    Leader A sends ``e1`` to B only and crashes before saving it. B takes the
    Ready that saves ``e1``; before that save ends, C (elected with A's vote)
    sends its own entry for the same index, which replaces ``e1`` in B's
    unsaved tail. When the save of ``e1`` completes, a correct core sees that
    the entry there is no longer the one saved and saves C's next; one that
    takes C's entry for saved acknowledges it with ``e1`` on its disk, and C
    commits it on that acknowledgement.
    """

    name = "overwrite-while-saving"
    summary = "a new leader's entry replaces a follower's unsaved tail while its save is in flight"

    def configure(self, cfg: SimConfig) -> None:
        cfg.nodes = 3
        cfg.pre_vote = False
        cfg.check_quorum = False

    def script(self, s: Script) -> None:
        a = s.settled()
        b, c = s.others(a)
        s.quiesce()
        s.sim.cut.add((a.id, c.id))
        s.propose(a, "tail-e1")
        s.half(a)  # the append of e1 leaves for B
        s.crash(a)  # A never saves e1
        s.deliver(b, a)
        s.half(b)  # B's save of e1 starts
        s.sim.deliver_matching(lambda m: m.to == c.id)  # lost on the cut link
        s.sim.cut.clear()
        s.start(a)
        s.campaign(c)
        s.drain(c)
        s.hold(b, c)  # C's vote request to B is lost
        s.deliver(a, c)
        s.drain(a)
        s.deliver(c, a)  # A elects C, whose empty entry takes e1's index
        if c.raw is None or c.raw.role != Role.LEADER:
            return
        s.sim.cut.add((c.id, a.id))  # only B's acknowledgement can commit C's entry
        s.drain(c)
        s.deliver(b, c)  # C's entry replaces e1 in B's unsaved tail
        s.half(b)  # B's save of e1 completes
        s.drain(b)  # B saves C's entry (if it knows it must) and acknowledges it
        s.deliver(c, b)  # C commits its entry on B's acknowledgement
        s.sim.deliver_matching(lambda m: m.to == a.id)
        s.sim.cut.clear()
        s.quiesce()


class LaggingApplyRead(Schedule):
    """A read reaches the leader while its commit index is ahead of its applied index.

    A client writes ``w`` through B; leader A commits it, tells B (not C),
    and B applies it and answers. A has not applied ``w`` yet when a read
    forwarded by C arrives. The read's index must be A's commit index, which
    covers ``w``; a leader that gives its applied index lets C serve the read
    without ``w``, after the write was answered.
    """

    name = "lagging-apply-read"
    summary = "a follower reads through the leader while the leader's apply lags its commit"

    def configure(self, cfg: SimConfig) -> None:
        cfg.nodes = 3

    def script(self, s: Script) -> None:
        a = s.settled()
        b, c = s.others(a)
        s.quiesce()
        writer, reader = s.clients()[:2]
        s.sim.pinned = b.id
        s.step()
        writer._write(b"a", 0.0)  # a plain put, through B
        s.drain(b)
        s.deliver(a, b)  # the forwarded proposal
        s.half(a)  # A's append of w leaves
        for n in (b, c):
            s.deliver(n, a)
            s.drain(n)
        s.deliver(a)  # B and C acknowledge: A commits w
        s.half(a)  # A saves w
        s.sim.drop_filter = lambda m: (
            m.frm == a.id and m.to == c.id and m.type in (MT.APP, MT.HEARTBEAT)
        )
        s.half(a)  # A's commit index leaves (not for C); A's apply waits
        s.deliver(b, a)
        s.drain(b)  # B applies w and answers the writer
        s.sim.pinned = c.id
        s.step()
        reader._read(b"a")  # through C, forwarded to A
        s.drain(c)
        s.deliver(a, c)  # A takes the read before it applies w
        s.quiesce()  # the read's round; C serves the read once it may
        s.sim.drop_filter = None
        s.quiesce()


class StaleHeartbeatAck(Schedule):
    """A late answer to an old read round reaches a deposed leader with a new read.

    Leader A confirms read round 1 with B's answer; C's answer is delayed. A is
    cut off, B is elected and a client's write commits through it. A client
    then reads through A, which still believes it leads: its round 2 reaches
    no one. C's late answer to round 1 arrives. It proves nothing about round
    2 (it was sent before round 2's reads arrived); a leader that counts it
    serves the read without the write.
    """

    name = "stale-heartbeat-ack"
    summary = "a deposed leader starts a read round; a delayed answer to an earlier round arrives"

    def configure(self, cfg: SimConfig) -> None:
        cfg.nodes = 3
        cfg.pre_vote = False
        cfg.check_quorum = False

    def script(self, s: Script) -> None:
        a = s.settled()
        assert a.raw is not None
        t = a.raw.term
        b, c = s.others(a)
        s.quiesce()
        writer, reader = s.clients()[:2]
        s.sim.pinned = a.id
        s.step()
        reader._read(b"a")
        s.drain(a)  # round 1's heartbeats leave
        for n in (b, c):
            s.deliver(n, a)
            s.drain(n)
        late = s.hold(a, c)  # C's answer to round 1, delayed
        s.deliver(a, b)
        s.drain(a)  # A and B confirm round 1: the first read is served
        s.isolate(a)
        s.campaign(b)
        s.until(
            "B leading",
            lambda: b.raw is not None and b.raw.role == Role.LEADER and b.raw.term > t,
        )
        s.sim.pinned = b.id
        s.step()
        writer._write(b"a", 0.0)
        s.until("the write through B answered", lambda: writer.pending is None)
        s.sim.pinned = a.id
        s.step()
        reader._read(b"a")  # through A, deposed but unaware
        s.drain(a)  # round 2's heartbeats are lost
        s.sim.cut.discard((c.id, a.id))
        s.release(late)  # C's late answer to round 1
        s.drain(a)
        s.sim.cut.clear()
        s.quiesce()


class StaleSnapshot(Schedule):
    """A snapshot arrives again after the follower has moved past it.

    Follower C is cut off while leader A commits entries and compacts its log.
    When C is back, A sends it a snapshot, which C installs; a copy of it is
    kept back. C then catches up by appends, applies more and compacts its own
    log past the snapshot. The copy arrives: it is older than what C has
    committed, and a correct follower ignores it; one that installs it goes
    back in time (its commit index and state machine).
    """

    name = "stale-snapshot"
    summary = (
        "a follower installs a leader's snapshot, moves on and compacts; a copy of the "
        "snapshot arrives late"
    )

    def configure(self, cfg: SimConfig) -> None:
        cfg.nodes = 3

    def script(self, s: Script) -> None:
        a = s.settled()
        b, c = s.others(a)
        s.quiesce()
        s.isolate(c)
        for k in range(4):
            s.propose(a, f"snapshot-{k}")
        target = a.raw.last_index if a.raw is not None else 0
        s.until("A applying its entries", lambda: a.sm.applied_index >= target)
        s.sim._compact(a, keep=0)
        snapshot = a.storage.snapshot().metadata.index
        sent: list[Message] = []

        def record(m: Message) -> bool:
            if m.type == MT.SNAP and m.to == c.id:
                sent.append(m)
            return False

        s.sim.drop_filter = record
        s.sim.cut.clear()
        s.until("C installing A's snapshot", lambda: c.sm.applied_index >= snapshot)
        s.sim.drop_filter = None
        if a.raw is None or a.raw.role != Role.LEADER or not sent:
            return
        for k in range(3):
            s.propose(a, f"after-snapshot-{k}")
        target = a.raw.last_index
        s.until("C applying the entries after it", lambda: c.sm.applied_index >= target)
        s.sim._compact(c, keep=0)
        s.release(sent[:1])  # the late copy
        s.quiesce()


class SnapshotOverHeldEntries(Schedule):
    """A follower that holds a snapshot's last entry, and acknowledged entries
    after it, receives that snapshot.

    Leader A sends B four appends, one entry each (``e1``..``e4``), all held
    back. B gets the second first and refuses it (it lacks ``e1``), so A backs
    B's ``next`` off to ``e1``. C saves ``e1``..``e3`` (not ``e4``): A commits
    and applies ``e3`` and compacts its log there. The held appends now reach
    B, which saves all four and acknowledges them (the answers are delayed);
    its commit index is still below ``e1``. A, which has no ``e1`` to send
    any more, sends B a snapshot ending at ``e3`` (held back too). B's late
    answers reach A, which commits ``e4`` with B's copy. Then the snapshot
    arrives. A correct follower only learns from it that ``e3`` is committed
    and keeps ``e4``; one that installs it anyway throws away ``e4``, a
    committed entry that is then on one disk of three.
    """

    name = "snapshot-over-held-entries"
    summary = (
        "reordered appends back a leader off; it compacts and sends a snapshot to a "
        "follower that holds the snapshot's last entry and a committed one after it"
    )

    def configure(self, cfg: SimConfig) -> None:
        cfg.nodes = 3
        cfg.max_size_per_msg = 1  # one entry per append
        cfg.max_inflight = 256  # all four in flight at once

    def script(self, s: Script) -> None:
        a = s.settled()
        b, c = s.others(a)
        s.quiesce()
        to_b: list[Message] = []
        to_c: list[Message] = []
        for k in range(4):
            s.propose(a, f"held-e{k + 1}")
            s.drain(a)  # the appends leave (all with A's commit index before e1)
            to_b += s.hold(b, a)
            to_c += s.hold(c, a)
        appends = [m for m in to_b if m.type == MT.APP and m.entries]
        s.release([m for m in to_c if m.type == MT.APP and m.entries][:3])  # not e4
        s.drain(c)
        s.deliver(a, c)  # A commits e3 with C
        if len(appends) != 4 or a.raw is None or a.raw.role != Role.LEADER:
            return
        e4 = appends[-1].entries[0].index
        released = {id(m) for m in appends}
        snapshots: list[Message] = []

        def held_back(m: Message) -> bool:
            if m.frm != a.id or id(m) in released:
                return False
            if m.to == c.id:  # C never gets e4
                return m.type == MT.APP and any(e.index >= e4 for e in m.entries)
            if m.to != b.id:
                return False
            if m.type == MT.SNAP:
                snapshots.append(m)
            return m.type in (MT.APP, MT.SNAP)  # only the held appends reach B

        s.sim.drop_filter = held_back
        s.release(appends[1:2])  # e2 before e1: B refuses it
        s.drain(b)
        s.deliver(a, b)  # A backs B's next off to e1
        s.drain(a)  # A applies e3
        s.sim._compact(a, keep=0)
        s.release(appends)  # now B saves e1..e4
        s.drain(b)
        answers = s.hold(a, b)  # B's acknowledgements, delayed
        s.until("A sending B a snapshot", lambda: bool(snapshots))
        s.release(answers)  # A commits e4 with B's copy
        s.drain(a)
        released.add(id(snapshots[0]))
        s.release(snapshots[:1])
        s.drain(b)
        s.sim.drop_filter = None
        s.quiesce()


class LearnersHoldAnEntry(Schedule):
    """An entry that only the leader and two learners hold.

    Leader A of voters {A, B, C} adds two learners, which catch up. Then A's
    links to B and C fail, and A proposes ``x``: the learners save it and
    acknowledge it. A correct leader does not commit ``x`` (one voter of
    three holds it); one that counts learners sees three members of five
    holding it and commits it, though B and C, a majority, may elect a leader
    without it.
    """

    name = "learners-hold-an-entry"
    summary = "the leader's links to the other voters fail; only learners acknowledge an entry"

    def configure(self, cfg: SimConfig) -> None:
        cfg.nodes = 3

    def script(self, s: Script) -> None:
        a = s.settled()
        b, c = s.others(a)
        learners = []
        for _ in range(2):
            node = s.sim._new_node(max(s.sim.nodes) + 1)
            s.start(node)
            learners.append(node)
            if a.raw is None or a.raw.role != Role.LEADER:
                return
            cc = ConfChange(ConfChangeType.ADD_LEARNER, node.id, f"node-{node.id}".encode())
            s.step()
            a.raw.propose_conf_change(cc)
            s.sim._after_step(a)

            def caught_up(node: SimNode = node) -> bool:
                leader = a.raw
                return (
                    node.raw is not None
                    and leader is not None
                    and node.id in leader.conf_state().learners
                    and node.sm.applied_index >= leader.commit_index
                )

            s.until(f"learner {node.id} added and caught up", caught_up)
        s.quiesce()
        if a.raw is None or a.raw.role != Role.LEADER:
            return
        s.sim.cut |= {(a.id, b.id), (a.id, c.id)}
        s.propose(a, "learners-x")
        s.drain(a)
        for node in learners:
            s.deliver(node, a)
            s.drain(node)
        s.deliver(a)  # the learners' acknowledgements: counting them commits x
        s.drain(a)
        s.sim.cut.clear()
        s.quiesce()


class LeaderRemovesItself(Schedule):
    """The leader of four voters removes itself.

    Once the removal is applied the leader is not a voter any more: it must
    step down, and the other three elect a leader. One that keeps leading
    goes on sending heartbeats, so nobody else campaigns, and it can commit
    nothing of its own (it refuses proposals: it is not a member), so the
    cluster is stuck.
    """

    name = "leader-removes-itself"
    summary = "the leader proposes its own removal and applies it"

    def configure(self, cfg: SimConfig) -> None:
        cfg.nodes = 4

    def script(self, s: Script) -> None:
        a = s.settled()
        s.quiesce()
        if a.raw is None:
            return
        s.step()
        a.raw.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, a.id))
        s.sim._after_step(a)
        s.until(
            "the leader applying its removal",
            lambda: a.raw is None or a.id not in a.sm.conf_state().voters,
        )
        s.until(
            "a leader among the others",
            lambda: any(
                n.raw is not None and n.raw.role == Role.LEADER and n is not a
                for n in s.sim.nodes.values()
            ),
        )


#: Every schedule, by name.
SCHEDULES: dict[str, Schedule] = {
    sch.name: sch
    for sch in (
        Figure8(),
        LeaderCrashBeforeSave(),
        VoterCrashBeforeSave(),
        NewLeaderRead(),
        ConcurrentConfChanges(),
        StaleVoteGrant(),
        OverwriteWhileSaving(),
        LaggingApplyRead(),
        StaleHeartbeatAck(),
        StaleSnapshot(),
        SnapshotOverHeldEntries(),
        LearnersHoldAnEntry(),
        LeaderRemovesItself(),
    )
}
SCHEDULE_NAMES: tuple[str, ...] = tuple(SCHEDULES)
