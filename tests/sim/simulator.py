"""A deterministic simulation of a raftdb cluster: Raft cores, a faulty network,
crashing disks, clients, membership changes — all driven by one seeded Random.

Each node is a :class:`~raftdb.raft.RawNode` over a
:class:`~raftdb.storage.memory.MemoryStorage` (its disk: what was saved survives a
crash) and a small key-value state machine in memory (lost on a crash, rebuilt
from the disk's snapshot plus the log, as the real driver does). The node's
driver handles a Ready in two separate events — first the messages that may
leave at once, then the save, the after-save messages and the apply — so a
crash can strike between them and lose exactly what was not saved.

The network drops, duplicates, delays (and so reorders) messages and can be
partitioned. Clients write (put, delete, compare-and-set) through any node and
read through ReadIndex on any node; every operation is recorded for the
linearizability checker. Invariants are checked as the run goes (see
``invariants.py``); the end of a run heals every fault and checks that the
cluster recovers, converges and stays linearizable.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
from dataclasses import dataclass, field
from random import Random
from typing import Any

from raftdb.raft import (
    ConfChange,
    ConfChangeError,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    ProposalDroppedError,
    RawNode,
    Ready,
    Role,
    apply_conf_change,
)
from raftdb.storage.memory import MemoryStorage
from raftdb.testing.linearizability import (
    CompareAndSet,
    Delete,
    Get,
    KVInput,
    KVOutput,
    Operation,
    Put,
)

from .invariants import Invariants, InvariantViolation

__all__ = ["SimConfig", "SimResult", "Simulation"]

KEYS = ("a", "b", "c")

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
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight: int = 256
    max_size_per_msg: int = 1 << 20
    election_tick: int = 10
    op_timeout: int = 60

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
        )


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


@dataclass
class _Op:
    client: str
    input: KVInput
    call: int
    req: str | None = None  # writes: the request id carried in the command
    ret: int | None = None
    output: KVOutput = None


class History:
    """The clients' operations, as the linearizability checker takes them.

    A write whose client got no answer (timeout, crash) is resolved at the end
    from what the cluster applied: if no node ever applied it, it had no effect
    and is left out; if one did, it took effect before the first node applied
    it, so it is recorded as returning then, with the result the state machine
    computed. Both are sound (the true execution is still a witness) and keep
    the checker's search small. An unanswered read has no effect and is left out.
    """

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim
        self._ops: dict[int, _Op] = {}
        self._next = 0
        self.first_applied: dict[str, tuple[int, KVOutput]] = {}  # req -> (step, result)

    def invoke(self, client: str, op: KVInput, req: str | None = None) -> int:
        self._next += 1
        self._ops[self._next] = _Op(client, op, self._sim.step_no, req)
        return self._next

    def complete(self, handle: int, output: KVOutput) -> None:
        op = self._ops[handle]
        op.ret, op.output = self._sim.step_no, output

    def fail(self, handle: int) -> None:
        del self._ops[handle]

    def unknown(self, handle: int) -> None:
        pass  # left open; resolved in operations()

    def applied(self, req: str, result: KVOutput) -> None:
        self.first_applied.setdefault(req, (self._sim.step_no, result))

    def operations(self) -> list[Operation[KVInput, KVOutput]]:
        out: list[Operation[KVInput, KVOutput]] = []
        for op in self._ops.values():
            if op.ret is not None:
                out.append(Operation(op.client, op.input, op.output, op.call, op.ret))
            elif op.req is not None and op.req in self.first_applied:
                step, result = self.first_applied[op.req]
                out.append(Operation(op.client, op.input, result, op.call, max(step, op.call)))
        return out

    def answered(self, handle: int) -> bool:
        op = self._ops.get(handle)
        return op is not None and op.ret is not None

    def unanswered(self) -> int:
        return sum(1 for op in self._ops.values() if op.ret is None)


class StateMachine:
    """The simulated KV state machine: dict data, request dedup, membership."""

    def __init__(self) -> None:
        self.kv: dict[str, str] = {}
        self.seen: set[str] = set()
        self.applied = 0
        self.conf = ConfState()

    def encode(self) -> bytes:
        """A snapshot of this state."""
        return json.dumps(
            {
                "kv": self.kv,
                "seen": sorted(self.seen),
                "applied": self.applied,
                "voters": list(self.conf.voters),
                "learners": list(self.conf.learners),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> StateMachine:
        """Rebuild from :meth:`encode`'s output (empty data: a fresh machine)."""
        sm = cls()
        if data:
            obj = json.loads(data)
            sm.kv = dict(obj["kv"])
            sm.seen = set(obj["seen"])
            sm.applied = obj["applied"]
            sm.conf = ConfState(tuple(obj["voters"]), tuple(obj["learners"]))
        return sm

    def apply(self, entry: Entry) -> tuple[str, Any] | None:
        """Apply one committed entry; ``(request id, result)`` for a client command."""
        self.applied = entry.index
        if entry.type == EntryType.CONF_CHANGE:
            # The same change the core ignores is ignored here: same function.
            with contextlib.suppress(ValueError, ConfChangeError):
                self.conf = apply_conf_change(self.conf, ConfChange.decode(entry.data))
            return None
        if not entry.data:
            return None
        cmd = json.loads(entry.data)
        req = cmd["req"]
        if req in self.seen:
            return None  # a duplicate of an applied command (client sessions, §6.3)
        self.seen.add(req)
        op, key = cmd["op"], cmd["key"]
        result: Any = None
        if op == "put":
            self.kv[key] = cmd["value"]
        elif op == "delete":
            result = self.kv.pop(key, None) is not None
        elif op == "cas":
            result = self.kv.get(key) == cmd["expected"]
            if result:
                self.kv[key] = cmd["value"]
        return req, result


@dataclass
class SimNode:
    """One simulated server: its disk, and (while up) its core and memory."""

    id: int
    storage: MemoryStorage
    raw: RawNode | None = None
    pending: Ready | None = None
    sm: StateMachine = field(default_factory=StateMachine)
    waiting_writes: dict[str, int] = field(default_factory=dict)  # request id -> handle
    waiting_reads: dict[bytes, tuple[int, str]] = field(default_factory=dict)  # ctx -> op
    ready_reads: list[tuple[int, bytes]] = field(default_factory=list)  # (index, ctx)


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
        self.history = History(self)
        # handle -> (client slot, (node id, deadline))
        self.op_deadline: dict[int, tuple[int, tuple[int, int]]] = {}
        self.next_req = 0
        self.faults: dict[str, int] = {}
        self.inv = Invariants()
        self.crashed_at: dict[int, int] = {}
        self.faulty = True
        self.written: dict[str, int] = {}
        self.ops = 0
        peers = [(i, f"node-{i}".encode()) for i in range(1, cfg.nodes + 1)]
        for i in range(1, cfg.nodes + 1):
            node = SimNode(i, MemoryStorage())
            self.nodes[i] = node
            self._start(node)
            assert node.raw is not None
            node.raw.bootstrap(peers)

    # -- node life ---------------------------------------------------------------

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

    def _start(self, node: SimNode) -> None:
        """Boot (or reboot) ``node`` from its disk, as the real driver does."""
        snap = node.storage.snapshot()
        node.sm = StateMachine.decode(snap.data)
        node.raw = RawNode(self._config(node.id, node.sm.applied))
        node.pending = None
        node.waiting_writes.clear()
        node.waiting_reads.clear()
        node.ready_reads.clear()
        self.inv.node_started(node.id)

    def _crash(self, node: SimNode) -> None:
        """Kill ``node``: memory and the unsaved Ready are lost, its clients see no answer."""
        for handle in node.waiting_writes.values():
            self._unknown(handle)
        for handle, _ in node.waiting_reads.values():
            self._unknown(handle)
        node.raw = None
        node.pending = None
        node.waiting_writes.clear()
        node.waiting_reads.clear()
        node.ready_reads.clear()
        self.crashed_at[node.id] = self.now
        self._count("crash")

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
        node = self.nodes.get(m.to)
        if (m.frm, m.to) in self.cut or node is None or node.raw is None:
            self._report_snapshot(m, ok=False)
            return True
        node.raw.step(m)
        self._report_snapshot(m, ok=True)
        self._after_step(node)
        return True

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
        node.storage.save(rd.hard_state, rd.entries, rd.snapshot)
        self.inv.saved(node.id, node.storage)
        self._send(rd.messages_after_save)
        if rd.snapshot is not None:
            node.sm = StateMachine.decode(rd.snapshot.data)
            self.inv.restored(node.id, rd.snapshot.metadata.index, node.sm.encode())
        for entry in rd.committed_entries:
            if entry.index <= node.sm.applied:
                continue  # re-delivered after a restart: already in the snapshot
            self.inv.applied(node.id, entry, node.sm.applied)
            outcome = node.sm.apply(entry)
            if outcome is not None:
                req, result = outcome
                self.history.applied(req, result)
                handle = node.waiting_writes.pop(req, None)
                if handle is not None:
                    self._complete(handle, result)
        node.ready_reads.extend((rs.index, rs.context) for rs in rd.read_states)
        raw.advance(rd)
        self._serve_reads(node)
        self._after_step(node)
        return True

    def _serve_reads(self, node: SimNode) -> None:
        keep: list[tuple[int, bytes]] = []
        for index, ctx in node.ready_reads:
            if index > node.sm.applied:
                keep.append((index, ctx))
                continue
            op = node.waiting_reads.pop(ctx, None)
            if op is not None:
                handle, key = op
                self._complete(handle, node.sm.kv.get(key))
        node.ready_reads = keep

    def _after_step(self, node: SimNode) -> None:
        raw = node.raw
        assert raw is not None
        self.inv.observe(node.id, raw)

    # -- clients -------------------------------------------------------------------

    def _complete(self, handle: int, result: KVOutput) -> None:
        if handle in self.op_deadline:
            del self.op_deadline[handle]
            self.history.complete(handle, result)

    def _unknown(self, handle: int) -> None:
        if handle in self.op_deadline:
            del self.op_deadline[handle]
            self.history.unknown(handle)

    def _client_op(self, client: int) -> None:
        live = [n for n in self.nodes.values() if n.raw is not None]
        if not live:
            return
        node = self.rng.choice(live)
        raw = node.raw
        assert raw is not None
        key = self.rng.choice(KEYS)
        kind = self.rng.random()
        self.ops += 1
        if kind < 0.45:
            self._read(client, node, raw, key)
            return
        self.next_req += 1
        req = f"r{self.next_req}"
        value = f"v{self.next_req}"
        op: KVInput
        cmd: dict[str, Any] = {"req": req, "key": key}
        if kind < 0.8:
            op, cmd["op"], cmd["value"] = Put(key, value), "put", value
        elif kind < 0.9:
            op, cmd["op"] = Delete(key), "delete"
        else:
            expected = self.written.get(key)
            exp_value = f"v{expected}" if expected is not None else "none"
            op = CompareAndSet(key, exp_value, value)
            cmd["op"], cmd["expected"], cmd["value"] = "cas", exp_value, value
        handle = self.history.invoke(f"c{self.next_req}", op, req)
        try:
            raw.propose(json.dumps(cmd).encode())
        except ProposalDroppedError:
            self.history.fail(handle)  # refused before it was appended anywhere
            return
        self.written[key] = self.next_req
        node.waiting_writes[req] = handle
        self.op_deadline[handle] = (client, (node.id, self.now + self.cfg.op_timeout))
        self._after_step(node)

    def _read(self, client: int, node: SimNode, raw: RawNode, key: str) -> None:
        self.next_req += 1
        handle = self.history.invoke(f"c{self.next_req}", Get(key))
        ctx = f"read-{self.next_req}".encode()
        try:
            raw.read_index(ctx)
        except ProposalDroppedError:
            self.history.fail(handle)
            return
        node.waiting_reads[ctx] = (handle, key)
        self.op_deadline[handle] = (client, (node.id, self.now + self.cfg.op_timeout))
        self._after_step(node)

    def _expire_ops(self) -> None:
        for handle, (_, (node_id, deadline)) in list(self.op_deadline.items()):
            if deadline <= self.now:
                node = self.nodes[node_id]
                for req, h in list(node.waiting_writes.items()):
                    if h == handle:
                        del node.waiting_writes[req]
                for ctx, (h, _) in list(node.waiting_reads.items()):
                    if h == handle:
                        del node.waiting_reads[ctx]
                self._unknown(handle)

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
            leader = self._leader()
            if leader is not None and leader.raw is not None:
                voters = [v for v in leader.raw.conf_state().voters if v != leader.id]
                if voters:
                    try:
                        leader.raw.transfer_leader(rng.choice(voters))
                        self._count("transfer")
                    except ProposalDroppedError:
                        pass
        if rng.random() < cfg.compact_rate:
            self._compact(rng.choice(list(self.nodes.values())))

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
            node = SimNode(new_id, MemoryStorage())
            self.nodes[new_id] = node
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

    def _compact(self, node: SimNode) -> None:
        """Snapshot the state machine and compact the log, keeping a few entries."""
        if node.raw is None:
            return
        applied = node.sm.applied
        snap_index = node.storage.snapshot().metadata.index
        if applied <= snap_index or applied > node.storage.last_index():
            return
        data = node.sm.encode()
        node.storage.create_snapshot(applied, node.sm.conf, data)
        self.inv.snapshotted(node.id, applied, data)
        keep = self.rng.choice((0, 2, 10))
        node.storage.compact(max(applied - keep, node.storage.first_index() - 1))
        self._count("compact")

    # -- the run -------------------------------------------------------------------

    def _round(self) -> None:
        """One tick of simulated time: faults, clients, message and Ready handling, ticks."""
        rng = self.rng
        if self.faulty:
            self._faults()
            # A fixed set of clients, each with at most one operation open (as in
            # Jepsen); a client whose operation timed out is replaced by a new one.
            busy = {client for client, _ in self.op_deadline.values()}
            for client in range(self.cfg.clients):
                if client not in busy and rng.random() < self.cfg.client_rate:
                    self._client_op(client)
        self._expire_ops()
        # Work until quiet, or (sometimes) stop early so that Readys stay half
        # handled across ticks: deliveries and Ready halves in random order, and
        # crashes that can strike between a Ready's two halves.
        budget = 500 if rng.random() < 0.8 else rng.randrange(1, 20)
        midflight = self.cfg.crash_rate / 40 if self.faulty else 0.0
        for _ in range(budget):
            self.step_no += 1
            if midflight and rng.random() < midflight:
                live = [n for n in self.nodes.values() if n.raw is not None]
                if live:
                    self._crash(rng.choice(live))
            candidates = [n for n in self.nodes.values() if n.raw is not None]
            rng.shuffle(candidates)
            moved = False
            if rng.random() < 0.5:
                moved = self._deliver_one()
            if not moved:
                for node in candidates:
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
        """Run the faulty phase, then heal and check recovery and linearizability."""
        try:
            for _ in range(self.cfg.rounds):
                self._round()
                if self.now % 25 == 0:
                    self.inv.check_logs(self._live_logs())
            self._heal_and_check()
        except InvariantViolation:
            raise
        history = self.history.operations()
        ok = self.inv.check_linearizable(history)
        return SimResult(
            seed=self.cfg.seed,
            ops=len(history),
            unknown_ops=self.history.unanswered(),
            faults=dict(self.faults),
            elections=self.inv.elections,
            committed=max(self.inv.committed, default=0),
            linearizable=ok,
        )

    def _live_logs(self) -> dict[int, RawNode]:
        return {n.id: n.raw for n in self.nodes.values() if n.raw is not None}

    def _heal_and_check(self) -> None:
        """Stop every fault; the cluster must elect, commit and converge in bounded time."""
        self.faulty = False
        self.cut.clear()
        for node in self._members():
            if node.raw is None:
                self._start(node)
        # Liveness: within a bounded number of ticks, a leader commits a new write
        # and every member applies everything committed.
        deadline = self.now + 40 * self.cfg.election_tick
        probe: int | None = None  # the current attempt at a final write
        probe_done = False
        while self.now < deadline:
            self._round()
            leader = self._leader()
            if leader is None or leader.raw is None:
                continue
            if not probe_done:
                if probe is not None and probe in self.op_deadline:
                    continue  # still waiting for it
                if probe is not None and self.history.answered(probe):
                    probe_done = True
                else:
                    # First attempt, or the last one was lost with a leader: retry,
                    # as a client would.
                    probe = self._final_write(leader)
                    continue
            if self._converged(leader):
                self.inv.check_logs(self._live_logs())
                return
        raise InvariantViolation(
            f"no recovery within {40 * self.cfg.election_tick} ticks after healing: "
            + "; ".join(
                f"{n.id}: {'down' if n.raw is None else n.raw.status().role.value} "
                f"term={n.raw.term if n.raw else '-'} "
                f"commit={n.raw.commit_index if n.raw else '-'} "
                f"applied={n.sm.applied}"
                for n in self.nodes.values()
            )
        )

    def _final_write(self, leader: SimNode) -> int | None:
        assert leader.raw is not None
        self.next_req += 1
        req = f"r{self.next_req}"
        cmd = {"req": req, "op": "put", "key": "final", "value": req}
        handle = self.history.invoke("final", Put("final", req), req)
        try:
            leader.raw.propose(json.dumps(cmd).encode())
        except ProposalDroppedError:
            self.history.fail(handle)
            return None
        leader.waiting_writes[req] = handle
        self.op_deadline[handle] = (-1, (leader.id, self.now + 3 * self.cfg.election_tick))
        return handle

    def _converged(self, leader: SimNode) -> bool:
        assert leader.raw is not None
        conf = leader.raw.conf_state()
        members = [self.nodes[i] for i in (*conf.voters, *conf.learners)]
        target = leader.raw.commit_index
        if any(n.raw is None or n.sm.applied < target for n in members):
            return False
        digests = {n.sm.encode() for n in members if n.sm.applied == target}
        if len(digests) != 1:
            raise InvariantViolation(f"members applied to {target} but their state machines differ")
        return True
