"""A deterministic simulation of a raftdb cluster: Raft cores, a faulty network,
crashing disks, clients, membership changes, leases — all driven by one seeded
Random.

Each node is a :class:`~raftdb.raft.RawNode` over a
:class:`~raftdb.storage.memory.MemoryStorage` (its disk: what was saved
survives a crash) and raftdb's own :class:`~raftdb.kv.state_machine.MemoryStateMachine`
(the real Applier: sessions, transactions, leases, the watch history), lost on
a crash and rebuilt from the disk's snapshot plus the log, as the real driver
does. The node's driver handles a Ready in two separate events — first the
messages that may leave at once, then the save, the after-save messages and
the apply (in batches cut at random, as the real apply worker's are) — so a
crash can strike between them and lose exactly what was not saved.

Each node also runs raftdb's :class:`~raftdb.kv.expiry.LeaseClock` on its own
simulated monotonic clock (``TICK_S`` seconds per tick, from an origin of its
own), as ``raftdb/node/leases.py`` does with ``loop.time()``: deadlines from
its apply times, a full TTL for every lease when it becomes leader, and, while
it leads, a ``LEASE_EXPIRE`` proposal for each lease due, once per tick.

The network drops, duplicates, delays (and so reorders) messages and can be
partitioned. The clients (``workload.py``) write through any node, retrying
in their session, and read through ReadIndex or transactions; the lease
workers grant, attach, keep alive, abandon and revoke leases while leaders
change. Invariants are checked as the run goes (``invariants.py``); the end of
a run heals every fault and checks that the cluster recovers, that every lease
left expires in time, that the members converge, and that the history is
linearizable.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from random import Random

from raftdb.kv.commands import (
    Command,
    InvalidCommandError,
    KVResult,
    Op,
    parse_command,
)
from raftdb.kv.expiry import LeaseClock
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    Entry,
    Message,
    MessageType,
    ProposalDroppedError,
    RawNode,
    Ready,
    Role,
)
from raftdb.storage.memory import MemoryStorage

from .invariants import Invariants, InvariantViolation
from .schedules import SCHEDULE_NAMES, SCHEDULES
from .workload import TICK_S, Workload

__all__ = ["SimConfig", "SimResult", "Simulation"]

_quiet = logging.getLogger("raftdb.sim.quiet")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


@dataclass
class SimConfig:
    """The shape of one run; :meth:`from_seed` draws a varied one from a seed."""

    seed: int
    nodes: int = 3
    rounds: int = 1000
    drop: float = 0.02
    duplicate: float = 0.02
    max_delay: int = 3
    crash_rate: float = 0.01
    partition_rate: float = 0.01
    conf_change_rate: float = 0.01
    transfer_rate: float = 0.005
    compact_rate: float = 0.05
    client_rate: float = 0.5
    clients: int = 4
    lease_workers: int = 2
    leader_fault_rate: float = 0.0
    watch_history: int = 50_000
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight: int = 256
    max_size_per_msg: int = 1 << 20
    election_tick: int = 10
    op_timeout: int = 60
    #: A targeted fault sequence played before the random faults (``schedules.py``).
    schedule: str | None = None

    @classmethod
    def from_seed(cls, seed: int) -> SimConfig:
        """A run whose fault rates and settings are drawn from ``seed``."""
        rng = Random(f"config-{seed}")
        return cls(
            seed=seed,
            nodes=rng.choice((3, 3, 4, 5)),
            drop=rng.choice((0.0, 0.01, 0.05, 0.15)),
            duplicate=rng.choice((0.0, 0.02, 0.1)),
            max_delay=rng.choice((1, 3, 8)),
            crash_rate=rng.choice((0.0, 0.01, 0.03, 0.06)),
            partition_rate=rng.choice((0.0, 0.01, 0.03, 0.06)),
            conf_change_rate=rng.choice((0.0, 0.01, 0.03)),
            transfer_rate=rng.choice((0.0, 0.005, 0.02)),
            compact_rate=rng.choice((0.0, 0.05, 0.2)),
            pre_vote=rng.random() < 0.8,
            check_quorum=rng.random() < 0.8,
            max_inflight=rng.choice((1, 4, 256)),
            max_size_per_msg=rng.choice((200, 1 << 20)),
            lease_workers=rng.choice((1, 2, 3)),
            leader_fault_rate=rng.choice((0.0, 0.005, 0.01, 0.02)),
            # A small window makes trimming (and snapshots of a trimmed
            # window) happen in most runs.
            watch_history=rng.choice((4, 16, 64, 50_000)),
        ).with_schedule(rng.choice(SCHEDULE_NAMES) if rng.random() < 0.1 else None)

    def with_schedule(self, name: str | None) -> SimConfig:
        """This run with the targeted schedule ``name`` first (and the settings it needs)."""
        if name is not None:
            self.schedule = name
            SCHEDULES[name].configure(self)
        return self


@dataclass
class SimResult:
    """What a run did and found."""

    seed: int
    ops: int
    unknown_ops: int
    faults: dict[str, int]
    elections: int
    committed: int
    linearizable: bool
    txns: int = 0
    bank_reads: int = 0
    duplicates: int = 0
    leases: dict[str, int] = field(default_factory=dict)


@dataclass
class SimNode:
    """One simulated server: its disk, its clock, and (while up) its core and memory."""

    id: int
    storage: MemoryStorage
    clock_origin: float
    raw: RawNode | None = None
    pending: Ready | None = None
    sm: MemoryStateMachine = field(default_factory=MemoryStateMachine)
    leases: LeaseClock = field(default_factory=LeaseClock)
    leading: bool = False
    leader_since: float = 0.0
    renewed_at: dict[int, float] = field(default_factory=dict)  # lease -> when it got its TTL
    waiting_reads: dict[bytes, tuple[Callable[[SimNode], None], Callable[[], None]]] = field(
        default_factory=dict
    )
    ready_reads: list[tuple[int, bytes]] = field(default_factory=list)  # (index, ctx)


def image(sm: MemoryStateMachine) -> bytes:
    """A state machine's whole replicated state, as its snapshot stream."""
    return b"".join(sm.snapshot())


class Simulation:
    """One seeded run; :meth:`run` returns a :class:`SimResult` or raises."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = Random(cfg.seed)
        self.step_no = 0
        self.now = 0  # in ticks
        self.nodes: dict[int, SimNode] = {}
        self.network: list[tuple[int, int, Message]] = []
        self.msg_seq = 0
        self.cut: set[tuple[int, int]] = set()
        self.partition_heal_at = 0
        self.faults: dict[str, int] = {}
        self.inv = Invariants(cfg.watch_history, self._disk)
        # Set by a targeted schedule: messages the network loses (on top of the
        # cuts), and the node that clients and reads go through.
        self.drop_filter: Callable[[Message], bool] | None = None
        self.pinned: int | None = None
        # Steps a round without faults may take to go quiet (a schedule lowers
        # it: a core that loops sending must fail fast, not spin for minutes).
        self.quiet_budget = 100_000
        self.crashed_at: dict[int, int] = {}
        self.faulty = True
        self.next_ctx = 0
        self.heal_tick = 0
        self.leader_since_tick: dict[int, int] = {}
        self.read_deadlines: dict[bytes, tuple[int, int]] = {}  # ctx -> (node id, tick)
        self._decoded: dict[int, tuple[tuple[bytes, int] | None, Command | None]] = {}
        self.workload = Workload(self)
        peers = [(i, f"node-{i}".encode()) for i in range(1, cfg.nodes + 1)]
        for i in range(1, cfg.nodes + 1):
            node = self._new_node(i)
            self._start(node)
            assert node.raw is not None
            node.raw.bootstrap(peers)

    # -- node life ---------------------------------------------------------------

    def _new_node(self, node_id: int) -> SimNode:
        # Each member's monotonic clock has an origin of its own, as
        # loop.time() on different hosts: only its differences mean anything.
        node = SimNode(node_id, MemoryStorage(), self.rng.uniform(0, 100_000))
        self.nodes[node_id] = node
        return node

    def _config(self, node_id: int, applied: int) -> Config:
        cfg = self.cfg
        return Config(
            id=node_id,
            storage=self.nodes[node_id].storage,
            election_tick=cfg.election_tick,
            heartbeat_tick=1,
            applied=applied,
            pre_vote=cfg.pre_vote,
            check_quorum=cfg.check_quorum,
            max_inflight_msgs=cfg.max_inflight,
            max_size_per_msg=cfg.max_size_per_msg,
            rng=Random(f"{cfg.seed}-{node_id}-{self.step_no}"),
            logger=_quiet,
        )

    def _disk(self, node_id: int) -> MemoryStorage | None:
        node = self.nodes.get(node_id)
        return None if node is None else node.storage

    def clock(self, node: SimNode) -> float:
        """``node``'s monotonic clock, in seconds."""
        return node.clock_origin + self.now * TICK_S

    def _start(self, node: SimNode) -> None:
        """Boot (or reboot) ``node`` from its disk, as the real driver does."""
        snap = node.storage.snapshot()
        node.sm = MemoryStateMachine(watch_history=self.cfg.watch_history)
        if snap.data:
            node.sm.restore([snap.data])
        node.raw = RawNode(self._config(node.id, node.sm.applied_index))
        node.pending = None
        node.waiting_reads.clear()
        node.ready_reads.clear()
        # The lease keeper starts as a follower tracking what the snapshot holds.
        now = self.clock(node)
        node.leases = LeaseClock()
        node.leases.track(now, node.sm.leases())
        node.leading = False
        node.renewed_at = {lease.id: now for lease in node.sm.leases()}
        self.inv.node_started(node.id)

    def _crash(self, node: SimNode, why: str = "crash") -> None:
        """Kill ``node``: memory and the unsaved Ready are lost, its clients see no answer."""
        for _, lost in node.waiting_reads.values():
            lost()
        node.raw = None
        node.pending = None
        node.waiting_reads.clear()
        node.ready_reads.clear()
        node.leading = False
        self.workload.node_lost(node.id)
        self.crashed_at[node.id] = self.now
        self._count(why)

    def live_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raw is not None]

    def propose(self, node: SimNode, data: bytes) -> bool:
        """Propose ``data`` on ``node``; False if refused (it was not appended anywhere)."""
        raw = node.raw
        assert raw is not None
        try:
            raw.propose(data)
        except ProposalDroppedError:
            return False
        self._after_step(node)
        return True

    def read_index(
        self, handle: int, done: Callable[[SimNode], None], lost: Callable[[], None]
    ) -> bool:
        """Start a ReadIndex read on a random live node: ``done(node)`` once it may
        serve it, ``lost()`` if it never will (timeout, crash); False if refused."""
        live = self.live_nodes()
        if not live:
            return False
        pinned = [n for n in live if n.id == self.pinned]
        node = pinned[0] if pinned else self.rng.choice(live)
        raw = node.raw
        assert raw is not None
        self.next_ctx += 1
        ctx = f"read-{self.next_ctx}".encode()
        try:
            raw.read_index(ctx)
        except ProposalDroppedError:
            return False
        node.waiting_reads[ctx] = (done, lost)
        self.read_deadlines[ctx] = (node.id, self.now + self.cfg.op_timeout)
        self._after_step(node)
        return True

    # -- network -----------------------------------------------------------------

    def _send(self, msgs: list[Message]) -> None:
        cfg = self.cfg
        for m in msgs:
            if self.faulty and self.rng.random() < cfg.drop:
                self._report_snapshot(m, ok=False)
                continue
            copies = 2 if self.faulty and self.rng.random() < cfg.duplicate else 1
            for _ in range(copies):
                delay = self.rng.randrange(cfg.max_delay + 1) if self.faulty else 0
                self.msg_seq += 1
                heapq.heappush(self.network, (self.now + delay, self.msg_seq, m))

    def _deliver_one(self) -> bool:
        """Deliver one due message, picked at random among the first few (reordering).

        The few are popped and the others pushed back: O(log n) however long
        the queue grows (re-heapifying the whole queue per delivery made a
        backlogged seed take minutes).
        """
        network = self.network
        due: list[tuple[int, int, Message]] = []
        while network and network[0][0] <= self.now and len(due) < 4:
            due.append(heapq.heappop(network))
        if not due:
            return False
        _, _, m = due.pop(self.rng.randrange(len(due)))
        for item in due:
            heapq.heappush(network, item)
        self._deliver(m)
        return True

    def _deliver(self, m: Message) -> None:
        """Hand ``m`` to its recipient, unless a cut or the schedule's filter loses it."""
        node = self.nodes.get(m.to)
        lost = self.drop_filter is not None and self.drop_filter(m)
        if lost or (m.frm, m.to) in self.cut or node is None or node.raw is None:
            self._report_snapshot(m, ok=False)
            return
        node.raw.step(m)
        self._report_snapshot(m, ok=True)
        self._after_step(node)

    def deliver_matching(self, wanted: Callable[[Message], bool]) -> int:
        """Deliver, in order, every due message ``wanted`` picks (the rest wait);
        how many were taken. For the targeted schedules' step-by-step sequences."""
        taken = [item for item in self.network if item[0] <= self.now and wanted(item[2])]
        if not taken:
            return 0
        ids = {item[1] for item in taken}
        self.network = [item for item in self.network if item[1] not in ids]
        heapq.heapify(self.network)
        for item in sorted(taken):
            self._deliver(item[2])
        return len(taken)

    def _report_snapshot(self, m: Message, ok: bool) -> None:
        """The transport tells the sender how a snapshot transfer ended, as raftdb's does."""
        if m.type != MessageType.SNAP:
            return
        sender = self.nodes.get(m.frm)
        if sender is not None and sender.raw is not None:
            sender.raw.report_snapshot(m.to, ok)
            self._after_step(sender)

    # -- the driver ----------------------------------------------------------------

    def _ready_phase(self, node: SimNode) -> bool:
        """One half of handling a Ready. True if anything was done."""
        raw = node.raw
        if raw is None:
            return False
        if node.pending is None:
            if not raw.has_ready():
                return False
            rd = raw.ready()
            node.pending = rd
            self._send(rd.messages)
            return True
        rd = node.pending
        node.pending = None
        held = self.inv.committed_held(node.storage) if rd.snapshot is not None else []
        node.storage.save(rd.hard_state, rd.entries, rd.snapshot)
        self.inv.saved(node.id, node.storage)
        self.inv.kept(node.id, held)
        self._send(rd.messages_after_save)
        if rd.snapshot is not None:
            node.sm.restore([rd.snapshot.data])
            self.inv.restored(node.id, rd.snapshot.metadata.index, self._image(node))
            now = self.clock(node)
            node.leases.track(now, node.sm.leases())
            for lease in node.sm.leases():
                deadline = node.leases.deadline(lease.id)
                assert deadline is not None
                node.renewed_at[lease.id] = deadline - lease.ttl
        entries = [e for e in rd.committed_entries if e.index > node.sm.applied_index]
        # Batches cut at random: the outcome must not depend on where.
        while entries:
            cut = len(entries) if self.rng.random() < 0.5 else self.rng.randint(1, len(entries))
            self._apply(node, entries[:cut])
            entries = entries[cut:]
        node.ready_reads.extend((rs.index, rs.context) for rs in rd.read_states)
        raw.advance(rd)
        if node.sm.applied_index == raw.commit_index and raw.conf_state() != node.sm.conf_state():
            raise InvariantViolation(
                f"node {node.id}'s core has membership {raw.conf_state()}, its state machine "
                f"{node.sm.conf_state()}, both at index {raw.commit_index}"
            )
        self._serve_reads(node)
        self._after_step(node)
        return True

    def _apply(self, node: SimNode, batch: Sequence[Entry]) -> None:
        """Apply one batch, answer the clients waiting on ``node``, feed its lease keeper."""
        prev = node.sm.applied_index
        for entry in batch:
            self.inv.applied(node.id, entry, prev)
            prev = entry.index
        results = node.sm.apply(batch)
        workload, inv = self.workload, self.inv
        now = self.clock(node)
        renewed: list[int] = []
        for entry, result in zip(batch, results, strict=True):
            first = inv.result(node.id, entry.index, result)
            if not isinstance(result, KVResult):
                continue
            session, cmd = self._decode(entry)
            if first:
                inv.command_committed(entry.index, cmd, result)
                workload.committed(session, cmd, result)
            if session is not None:
                workload.answer(node, session, result)
            if cmd is None or result.duplicate or not result.ok:
                continue
            if cmd.op in (Op.LEASE_GRANT, Op.LEASE_KEEPALIVE):
                renewed.append(result.lease)
            elif cmd.op in (Op.LEASE_REVOKE, Op.LEASE_EXPIRE):
                node.leases.ended(result.lease)
                node.renewed_at.pop(result.lease, None)
        for lease_id in renewed:
            lease = node.sm.lease(lease_id)
            if lease is not None:  # (not ended later in the same batch)
                node.leases.renewed(lease, now)
                node.renewed_at[lease_id] = now
        inv.batch_applied(node.id, node.sm, image)

    def _decode(self, entry: Entry) -> tuple[tuple[bytes, int] | None, Command | None]:
        """The entry's session and command (None for one that is not a command);
        cached by index: every node has the same entry there (checked)."""
        known = self._decoded.get(entry.index)
        if known is not None:
            return known
        try:
            fields = parse_command(entry.data)
            cmd = Command.decode(entry.data)
        except InvalidCommandError:
            decoded: tuple[tuple[bytes, int] | None, Command | None] = (None, None)
        else:
            session = None if fields[5] is None else (fields[5], fields[6])
            decoded = (session, cmd)
        self._decoded[entry.index] = decoded
        return decoded

    def _image(self, node: SimNode) -> bytes:
        return image(node.sm)

    def _serve_reads(self, node: SimNode) -> None:
        keep: list[tuple[int, bytes]] = []
        for index, ctx in node.ready_reads:
            if index > node.sm.applied_index:
                keep.append((index, ctx))
                continue
            waiting = node.waiting_reads.pop(ctx, None)
            self.read_deadlines.pop(ctx, None)
            if waiting is not None:
                waiting[0](node)
        node.ready_reads = keep

    def _expire_reads(self) -> None:
        for ctx, (node_id, deadline) in list(self.read_deadlines.items()):
            if deadline <= self.now:
                del self.read_deadlines[ctx]
                waiting = self.nodes[node_id].waiting_reads.pop(ctx, None)
                if waiting is not None:
                    waiting[1]()

    def _after_step(self, node: SimNode) -> None:
        raw = node.raw
        assert raw is not None
        self.inv.observe(node.id, raw)
        leader = raw.role == Role.LEADER
        if leader != node.leading:
            # The lease keeper follows the role, as raftdb/node/leases.py does on
            # each Ready's soft state: a new leader gives every lease a full TTL.
            node.leading = leader
            if leader:
                now = self.clock(node)
                node.leader_since = now
                node.leases.become_leader(now, node.sm.leases())
                self.leader_since_tick[node.id] = self.now
                self.workload.leader_changed()
            else:
                node.leases.become_follower()

    def _expire_leases(self, node: SimNode) -> None:
        """The leader's keeper tick: propose an expiry for each lease due."""
        now = self.clock(node)
        for lease_id, renewed_index in node.leases.due(now):
            lease = node.sm.lease(lease_id)
            if lease is None or lease.renewed_index != renewed_index:
                raise InvariantViolation(
                    f"node {node.id}'s lease clock names lease {lease_id} renewed at "
                    f"{renewed_index}, its state machine has {lease}"
                )
            # Due no sooner than a full TTL after the leader took over and
            # after it applied the renewal (etcd's rule: a leader change never
            # shortens a lease).
            since = max(node.leader_since, node.renewed_at.get(lease_id, node.leader_since))
            if now < since + lease.ttl - 1e-6:
                raise InvariantViolation(
                    f"leader {node.id} found lease {lease_id} (ttl {lease.ttl}s) due "
                    f"{now - since:.2f}s after it took over or applied its renewal"
                )
            cmd = Command.lease_expire(lease_id, renewed_index)
            if self.propose(node, cmd.encode()):
                self._count("lease-expire-proposed")

    # -- faults --------------------------------------------------------------------

    def _count(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    def _members(self) -> list[SimNode]:
        # Removed members stay up (as a real removed server may, until told):
        # they may crash and restart like any other.
        return list(self.nodes.values())

    def _leader(self) -> SimNode | None:
        best: SimNode | None = None
        for n in self.nodes.values():
            if (
                n.raw is not None
                and n.raw.role == Role.LEADER
                and (best is None or best.raw is None or n.raw.term > best.raw.term)
            ):
                best = n
        return best

    def _faults(self) -> None:
        cfg, rng = self.cfg, self.rng
        if self.cut and self.now >= self.partition_heal_at:
            self.cut.clear()
        for node in self.nodes.values():
            down_for = self.now - self.crashed_at.get(node.id, 0)
            if node.raw is None and down_for >= 20 and rng.random() < 0.2:
                self._start(node)
                self._count("restart")
        if rng.random() < cfg.crash_rate:
            live = [n for n in self._members() if n.raw is not None]
            if live:
                self._crash(rng.choice(live))
        if rng.random() < cfg.partition_rate and not self.cut:
            self._partition()
        if rng.random() < cfg.conf_change_rate:
            self._membership_change()
        if rng.random() < cfg.transfer_rate:
            self._transfer()
        if rng.random() < cfg.leader_fault_rate and self.workload.lease_live():
            # A leader change while a lease's TTL runs: the new leader must give
            # every lease a full TTL, and keep-alives must reach it.
            leader = self._leader()
            if leader is not None and rng.random() < 0.5:
                self._crash(leader, "leader-crash")
            else:
                self._transfer()
        if rng.random() < cfg.compact_rate:
            self._compact(rng.choice(list(self.nodes.values())))

    def _transfer(self) -> None:
        leader = self._leader()
        if leader is None or leader.raw is None:
            return
        voters = [v for v in leader.raw.conf_state().voters if v != leader.id]
        if voters:
            try:
                leader.raw.transfer_leader(self.rng.choice(voters))
                self._count("transfer")
            except ProposalDroppedError:
                pass

    def _partition(self) -> None:
        ids = [n.id for n in self.nodes.values()]
        self.rng.shuffle(ids)
        leader = self._leader()
        roll = self.rng.random()
        if roll < 0.4 and leader is not None:
            side = {leader.id}  # isolate the leader: the classic stale-leader test
        elif roll < 0.7:
            side = set(ids[:1])  # isolate one node
        else:
            side = set(ids[: len(ids) // 2])
        for a in ids:
            for b in ids:
                if (a in side) != (b in side):
                    if self.rng.random() < 0.8:
                        self.cut.add((a, b))
                    else:
                        self.cut.add((a, b))
                        self.cut.add((b, a))
        # Usually symmetric; sometimes one-way only (asymmetric link failure).
        if self.rng.random() < 0.7:
            self.cut |= {(b, a) for a, b in self.cut}
        self.partition_heal_at = self.now + self.rng.randrange(10, 60)
        self._count("partition")

    def _membership_change(self) -> None:
        leader = self._leader()
        if leader is None or leader.raw is None:
            return
        raw = leader.raw
        conf = raw.conf_state()
        rng = self.rng
        cc: ConfChange | None = None
        learners = list(conf.learners)
        if learners:
            status = raw.status()
            learner = learners[0]
            pr = status.progress.get(learner)
            if pr is not None and pr.match + 5 >= status.commit:
                cc = ConfChange(ConfChangeType.ADD_VOTER, learner)
        elif len(conf.voters) > 3 and rng.random() < 0.5:
            cc = ConfChange(ConfChangeType.REMOVE_NODE, rng.choice(conf.voters))
        elif len(conf.voters) < 5:
            new_id = max(self.nodes) + 1
            node = self._new_node(new_id)
            self._start(node)
            cc = ConfChange(ConfChangeType.ADD_LEARNER, new_id, f"node-{new_id}".encode())
        if cc is None:
            return
        try:
            raw.propose_conf_change(cc)
        except ProposalDroppedError:
            return
        self._count(f"conf-{cc.type.name.lower()}")
        self._after_step(leader)

    def _compact(self, node: SimNode, keep: int | None = None) -> None:
        """Snapshot the state machine and compact the log, keeping a few entries
        (``keep``, or 0, 2 or 10 at random)."""
        if node.raw is None:
            return
        applied = node.sm.applied_index
        snap_index = node.storage.snapshot().metadata.index
        if applied <= snap_index or applied > node.storage.last_index():
            return
        data = self._image(node)
        node.storage.create_snapshot(applied, node.sm.conf_state(), data)
        self.inv.snapshotted(node.id, applied, data)
        if keep is None:
            keep = self.rng.choice((0, 2, 10))
        node.storage.compact(max(applied - keep, node.storage.first_index() - 1))
        self._count("compact")

    # -- the run -------------------------------------------------------------------

    def _round(self) -> None:
        """One tick of simulated time: faults, lease expiries, clients, messages and
        Ready handling, ticks."""
        rng = self.rng
        if self.faulty:
            self._faults()
        for node in list(self.nodes.values()):
            if node.raw is not None and node.leading:
                self._expire_leases(node)
        self.workload.round(act=self.faulty)
        self._expire_reads()
        # Work until quiet, or (sometimes) stop early so that Readys stay half
        # handled across ticks: deliveries and Ready halves in random order, and
        # crashes that can strike between a Ready's two halves.
        # Once healed, the network is healthy: a round works until quiet, so a
        # backlog left by the faults (thousands of small appends) drains at once
        # instead of delaying commits by tens of ticks.
        if not self.faulty:
            budget = self.quiet_budget
        elif rng.random() < 0.8:
            budget = 500
        else:
            budget = rng.randrange(1, 20)
        midflight = self.cfg.crash_rate / 40 if self.faulty else 0.0
        # The nodes in a random rotation per step (one draw, not a shuffle: this
        # loop is most of a run's time); a node that crashes meanwhile has no
        # Ready, and no node starts within it.
        nodes = list(self.nodes.values())
        for _ in range(budget):
            self.step_no += 1
            if midflight and rng.random() < midflight:
                live = self.live_nodes()
                if live:
                    self._crash(rng.choice(live))
            moved = False
            if rng.random() < 0.5:
                moved = self._deliver_one()
            if not moved:
                start = rng.randrange(len(nodes))
                for node in (*nodes[start:], *nodes[:start]):
                    if self._ready_phase(node):
                        moved = True
                        break
            if not moved:
                moved = self._deliver_one()
            if not moved:
                break
        for node in self.nodes.values():
            if node.raw is not None and (not self.faulty or rng.random() < 0.95):
                node.raw.tick()
                self._after_step(node)
        self.now += 1

    def run(self) -> SimResult:
        """Run the faulty phase, then heal and check recovery, lease expiry,
        convergence and linearizability."""
        if self.cfg.schedule is not None:
            SCHEDULES[self.cfg.schedule].play(self)
        for _ in range(self.cfg.rounds):
            self._round()
            if self.now % 25 == 0:
                self.inv.check_logs(self._live_logs())
                self._check_histories()
        self._heal_and_check()
        history = self.workload.history.operations()
        ok = self.inv.check_linearizable(history)
        w = self.workload
        return SimResult(
            seed=self.cfg.seed,
            ops=len(history),
            unknown_ops=w.history.unanswered(),
            faults=dict(self.faults),
            elections=self.inv.elections,
            committed=self.inv.last_committed,
            linearizable=ok,
            txns=w.txns,
            bank_reads=w.bank_reads,
            duplicates=w.duplicates,
            leases=w.lease_summary(),
        )

    def _live_logs(self) -> dict[int, RawNode]:
        return {n.id: n.raw for n in self.nodes.values() if n.raw is not None}

    def _check_histories(self) -> None:
        for node in self.live_nodes():
            self.inv.check_history(node.id, node.sm)

    def _heal_and_check(self) -> None:
        """Stop every fault; the cluster must elect, commit and converge in bounded
        time, and every lease left must expire within its TTL and an election timeout."""
        self.faulty = False
        self.heal_tick = self.now
        self.workload.stop()
        self.cut.clear()
        for node in self._members():
            if node.raw is None:
                self._start(node)
        # Liveness: within a bounded number of ticks, a leader commits a new write,
        # every lease left is expired, and every member applies everything committed.
        budget = 40 * self.cfg.election_tick + max(self.workload.ttl_ticks(), default=0)
        deadline = self.now + budget
        while self.now < deadline:
            self._round()
            leader = self._leader()
            if leader is None or leader.raw is None:
                continue
            self._decommission(leader)
            if not self.workload.final_done:
                self.workload.final_write()
                continue
            if leader.sm.leases():
                continue  # every lease left must expire: no one keeps them alive now
            if self._converged(leader):
                self.inv.check_logs(self._live_logs())
                self._check_histories()
                final = self.leader_since_tick.get(leader.id, 0)
                self.workload.check_expired_after_heal(
                    self.heal_tick, final, self.cfg.election_tick
                )
                self.workload.check_final_state(leader.sm)
                return
        raise InvariantViolation(
            f"no recovery within {budget} ticks after healing "
            f"(final write {'done' if self.workload.final_done else 'not done'}): "
            + "; ".join(
                f"{n.id}: {'down' if n.raw is None else n.raw.status().role.value} "
                f"term={n.raw.term if n.raw else '-'} "
                f"commit={n.raw.commit_index if n.raw else '-'} "
                f"applied={n.sm.applied_index} leases={[x.id for x in n.sm.leases()]}"
                for n in self.nodes.values()
            )
        )

    def _decommission(self, leader: SimNode) -> None:
        """Stop the nodes the newest applied membership does not have, as an
        operator shuts down a removed member: without pre-vote, a removed
        server left running campaigns with ever higher terms and deposes every
        leader (Raft thesis §4.2.3); the cluster still commits, but a leader
        never lasts a TTL, and only a lasting leader expires leases.

        The membership is that of the live node that applied the most, not the
        leader's: a removed leader cut off from the others may still lead its
        old membership (without CheckQuorum nothing tells it), and stopping the
        real members by its view would leave the cluster without a quorum. A
        node stopped while its addition was still on its way is started again
        once the membership has it (the operator starts every member). A leader
        whose own applied membership lacks it should have stepped down: it is
        left running, and the run fails to recover."""
        own = leader.sm.conf_state()
        if leader.id not in {*own.voters, *own.learners}:
            return
        newest = max(self.live_nodes(), key=lambda n: n.sm.applied_index)
        conf = newest.sm.conf_state()
        members = {*conf.voters, *conf.learners}
        for node in self.nodes.values():
            if node.raw is not None and node.id not in members:
                self._crash(node, "decommission")
            elif node.raw is None and node.id in members:
                # Stopped while its addition was not yet applied: a member now.
                self._start(node)
                self._count("recommission")

    def _converged(self, leader: SimNode) -> bool:
        assert leader.raw is not None
        conf = leader.raw.conf_state()
        members = [self.nodes[i] for i in (*conf.voters, *conf.learners)]
        target = leader.raw.commit_index
        if any(n.raw is None or n.sm.applied_index < target for n in members):
            return False
        images = {self._image(n) for n in members if n.sm.applied_index == target}
        if len(images) != 1:
            raise InvariantViolation(f"members applied to {target} but their state machines differ")
        return True
