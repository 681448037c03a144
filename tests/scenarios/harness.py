"""InteractionEnv: Raft cores driven step by step from scenario files.

The environment holds nodes (a :class:`RawNode`, its :class:`MemoryStorage`
as the node's disk, and a tiny state machine: the list of applied entries),
the messages in flight per recipient, and a network partition. Each directive
of a scenario file maps to one ``handle_*`` method; its docstring starts with
an example. Everything printed comes from :mod:`raftdb.raft.describe` and from
the core's own logger, which is routed into the output, so that a scenario's
expected output reads as a trace of what the cluster did.

Time is fully scripted: a node's randomized election timeout is its
``election`` setting plus its ``jitter`` (0 unless given), so
``tick-election`` makes a follower campaign exactly when the paper says.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random

from raftdb.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    RaftError,
    RawNode,
    Ready,
    Snapshot,
    SnapshotMetadata,
)
from raftdb.raft.confchange import ConfChangeError, apply_conf_change
from raftdb.raft.describe import (
    describe_entry,
    describe_message,
    describe_ready,
    describe_status,
)
from raftdb.raft.errors import NotLeaderError
from raftdb.storage.memory import MemoryStorage
from tests.scenarios.datadriven import DataDrivenError, TestCase

__all__ = ["InteractionEnv"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "none": logging.CRITICAL + 1,
}

_CONF_CHANGE_KEYS = {
    "add-voter": ConfChangeType.ADD_VOTER,
    "add-learner": ConfChangeType.ADD_LEARNER,
    "remove": ConfChangeType.REMOVE_NODE,
}


class _JitterRandom(Random):
    """A Random whose ``randrange`` returns a fixed jitter: scripted election timeouts."""

    def __init__(self, jitter: int) -> None:
        super().__init__(0)
        self.jitter = jitter

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        limit = start if stop is None else stop - start
        return min(self.jitter, max(limit - 1, 0)) + (0 if stop is None else start)


class _TraceHandler(logging.Handler):
    """Appends each log record, as ``LEVEL message``, to the scenario output."""

    def __init__(self, out: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        self.out.append(f"{record.levelname} {record.getMessage()}")


@dataclass
class _StateMachine:
    """The applied log of one node: normal entries' data, and membership by index."""

    applied: list[tuple[int, str]] = field(default_factory=list)
    confs: list[tuple[int, ConfState]] = field(default_factory=list)
    index: int = 0

    def apply(self, entries: list[Entry]) -> None:
        for e in entries:
            if e.index <= self.index:
                raise AssertionError(f"entry {e.index} applied twice (applied {self.index})")
            self.index = e.index
            if e.type == EntryType.CONF_CHANGE:
                cur = self.confs[-1][1] if self.confs else ConfState()
                # Every node ignores an invalid change alike.
                with contextlib.suppress(ValueError, ConfChangeError):
                    self.confs.append((e.index, apply_conf_change(cur, ConfChange.decode(e.data))))
            elif e.data:
                self.applied.append((e.index, e.data.decode("utf-8", "backslashreplace")))

    def conf_at(self, index: int) -> ConfState:
        cur = ConfState()
        for i, cs in self.confs:
            if i <= index:
                cur = cs
        return cur

    def snapshot_data(self, index: int) -> bytes:
        return json.dumps([[i, d] for i, d in self.applied if i <= index]).encode()

    def restore(self, snapshot: Snapshot) -> None:
        meta = snapshot.metadata
        pairs = json.loads(snapshot.data) if snapshot.data else []
        self.applied = [(int(i), str(d)) for i, d in pairs]
        self.confs = [(meta.index, meta.conf_state)]
        self.index = meta.index


@dataclass
class _Options:
    election: int = 10
    heartbeat: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight: int = 256
    max_inflight_bytes: int = 0
    max_size: int = 1024 * 1024
    max_uncommitted: int = 0
    max_committed_size: int = 64 * 1024 * 1024
    forwarding: bool = True
    jitter: int = 0


@dataclass
class _Node:
    id: int
    storage: MemoryStorage
    options: _Options
    raw: RawNode | None = None
    sm: _StateMachine = field(default_factory=_StateMachine)
    # A Ready taken by ``take-ready`` whose save has not happened yet.
    held: Ready | None = None


class InteractionEnv:
    """Nodes, messages in flight per recipient, a partition, and the trace output."""

    def __init__(self) -> None:
        self.nodes: dict[int, _Node] = {}
        self.inflight: dict[int, list[Message]] = {}
        self.isolated: set[int] = set()
        # ids of in-flight messages sent across a partition: they will be dropped.
        self.cut: set[int] = set()
        self.out: list[str] = []
        self.logger = logging.Logger("raftdb.scenario", logging.INFO)
        self.logger.addHandler(_TraceHandler(self.out))
        self.handlers: dict[str, Callable[[TestCase], None]] = {
            "add-nodes": self.handle_add_nodes,
            "campaign": self.handle_campaign,
            "propose": self.handle_propose,
            "propose-conf-change": self.handle_propose_conf_change,
            "tick": self.handle_tick,
            "tick-election": self.handle_tick_election,
            "tick-heartbeat": self.handle_tick_heartbeat,
            "deliver-msgs": self.handle_deliver_msgs,
            "process-ready": self.handle_process_ready,
            "take-ready": self.handle_take_ready,
            "persist-ready": self.handle_persist_ready,
            "stabilize": self.handle_stabilize,
            "raft-log": self.handle_raft_log,
            "raft-state": self.handle_raft_state,
            "status": self.handle_status,
            "applied": self.handle_applied,
            "compact": self.handle_compact,
            "read-index": self.handle_read_index,
            "transfer-leader": self.handle_transfer_leader,
            "isolate": self.handle_isolate,
            "heal": self.handle_heal,
            "crash": self.handle_crash,
            "restart": self.handle_restart,
            "report-unreachable": self.handle_report_unreachable,
            "log-level": self.handle_log_level,
        }

    # -- dispatch ----------------------------------------------------------------

    def handle(self, case: TestCase) -> str:
        """Run one directive and return everything it printed."""
        fn = self.handlers.get(case.cmd)
        if fn is None:
            raise DataDrivenError(f"{case.pos}: unknown command {case.cmd!r}")
        self.out.clear()
        fn(case)
        text = "\n".join(self.out)
        self.out.clear()
        return text if text else "ok"

    def _print(self, line: str) -> None:
        self.out.append(line)

    def _node(self, case: TestCase, node_id: int) -> _Node:
        node = self.nodes.get(node_id)
        if node is None:
            raise DataDrivenError(f"{case.pos}: no node {node_id}")
        return node

    def _raw(self, case: TestCase, node_id: int) -> RawNode:
        raw = self._node(case, node_id).raw
        if raw is None:
            raise DataDrivenError(f"{case.pos}: node {node_id} is crashed")
        return raw

    def _ids(self, case: TestCase) -> list[int]:
        """The node ids named by the directive, or every node."""
        ids = case.positional_ints()
        for i in ids:
            self._node(case, i)
        return ids or sorted(self.nodes)

    def _single_id(self, case: TestCase) -> int:
        ids = case.positional_ints()
        if len(ids) != 1:
            raise DataDrivenError(f"{case.pos}: {case.cmd} takes one node id")
        self._node(case, ids[0])
        return ids[0]

    def _error(self, e: RaftError) -> None:
        line = f"error: {type(e).__name__}: {e}"
        if isinstance(e, NotLeaderError):
            line += f" (leader hint: {e.leader})"
        self._print(line)

    # -- building nodes ------------------------------------------------------------

    def _config(self, node: _Node) -> Config:
        o = node.options
        return Config(
            id=node.id,
            storage=node.storage,
            election_tick=o.election,
            heartbeat_tick=o.heartbeat,
            max_size_per_msg=o.max_size,
            max_committed_size_per_ready=o.max_committed_size,
            max_uncommitted_entries_size=o.max_uncommitted,
            max_inflight_msgs=o.max_inflight,
            max_inflight_bytes=o.max_inflight_bytes,
            check_quorum=o.check_quorum,
            pre_vote=o.pre_vote,
            disable_proposal_forwarding=not o.forwarding,
            rng=_JitterRandom(o.jitter),
            logger=self.logger,
        )

    def handle_add_nodes(self, case: TestCase) -> None:
        """Example: ``add-nodes 3 voters=(1,2,3) pre-vote=false check-quorum=false``.

        Adds n nodes with the next free ids. By default they bootstrap a new
        cluster of ``voters`` (default: the new ids) through RawNode.bootstrap.
        ``index=I`` (or any ``learners=``) instead starts each storage from a
        snapshot at index I (term 1) holding the membership, followed by
        entries of the terms in ``log=(t1,t2,...)``, with hard state
        ``term=``/``vote=``/``commit=``. ``join=true`` leaves the storage empty
        (a node about to be added). Core options: ``election=``,
        ``heartbeat=``, ``pre-vote=``, ``check-quorum=``, ``max-inflight=``,
        ``max-inflight-bytes=``, ``max-size=``, ``max-uncommitted=``,
        ``max-committed-size=``, ``forwarding=``, ``jitter=``.
        """
        counts = case.positional_ints()
        if len(counts) != 1 or counts[0] <= 0:
            raise DataDrivenError(f"{case.pos}: add-nodes takes a positive count")
        first = max(self.nodes, default=0) + 1
        ids = list(range(first, first + counts[0]))
        voters = case.int_list("voters")
        learners = case.int_list("learners") or []
        voters = ids if voters is None else voters
        d = _Options()
        options = _Options(
            election=case.int_arg("election", d.election),
            heartbeat=case.int_arg("heartbeat", d.heartbeat),
            pre_vote=case.bool_arg("pre-vote", d.pre_vote),
            check_quorum=case.bool_arg("check-quorum", d.check_quorum),
            max_inflight=case.int_arg("max-inflight", d.max_inflight),
            max_inflight_bytes=case.int_arg("max-inflight-bytes", d.max_inflight_bytes),
            max_size=case.int_arg("max-size", d.max_size),
            max_uncommitted=case.int_arg("max-uncommitted", d.max_uncommitted),
            max_committed_size=case.int_arg("max-committed-size", d.max_committed_size),
            forwarding=case.bool_arg("forwarding", d.forwarding),
            jitter=case.int_arg("jitter", d.jitter),
        )
        join = case.bool_arg("join", False)
        from_snapshot = case.has("index") or bool(learners) or case.has("log")
        for node_id in ids:
            storage = MemoryStorage()
            node = _Node(node_id, storage, options)
            if from_snapshot and not join:
                self._init_storage(case, node, voters, learners)
            node.raw = RawNode(self._config(node))
            if not from_snapshot and not join:
                node.raw.bootstrap([(v, b"") for v in voters])
            self.nodes[node_id] = node
            self.inflight.setdefault(node_id, [])
        self._print(f"added nodes {','.join(str(i) for i in ids)}")

    def _init_storage(
        self, case: TestCase, node: _Node, voters: list[int], learners: list[int]
    ) -> None:
        index = case.int_arg("index", 1)
        terms = case.int_list("log") or []
        cs = ConfState(voters=tuple(sorted(voters)), learners=tuple(sorted(learners)))
        snap = Snapshot(SnapshotMetadata(index, 1, cs), b"")
        entries = [Entry(t, index + 1 + k) for k, t in enumerate(terms)]
        term = case.int_arg("term", max([1, *terms]))
        hs = HardState(term, case.int_arg("vote", 0), case.int_arg("commit", index))
        node.storage.save(hs, entries, snap)
        node.sm.restore(snap)

    # -- inputs -------------------------------------------------------------------

    def handle_campaign(self, case: TestCase) -> None:
        """Example: ``campaign 1``: node 1 starts an election (a pre-vote first if enabled)."""
        self._raw(case, self._single_id(case)).campaign()

    def handle_propose(self, case: TestCase) -> None:
        """Example: ``propose 1 x y``: node 1 proposes ``x`` then ``y``, one call each."""
        words = case.positional()
        if len(words) < 2:
            raise DataDrivenError(f"{case.pos}: propose <node> <data>...")
        raw = self._raw(case, int(words[0]))
        for data in words[1:]:
            try:
                raw.propose(data.encode())
            except RaftError as e:
                self._error(e)

    def handle_propose_conf_change(self, case: TestCase) -> None:
        """Example: ``propose-conf-change 1 add-learner=4`` (or ``add-voter=``, ``remove=``)."""
        raw = self._raw(case, self._single_id(case))
        changes = [(k, case.int_arg(k, 0)) for k in _CONF_CHANGE_KEYS if case.has(k)]
        if len(changes) != 1:
            raise DataDrivenError(f"{case.pos}: give exactly one of {', '.join(_CONF_CHANGE_KEYS)}")
        key, target = changes[0]
        try:
            raw.propose_conf_change(ConfChange(_CONF_CHANGE_KEYS[key], target))
        except RaftError as e:
            self._error(e)

    def _tick(self, case: TestCase, count: Callable[[_Options], int]) -> None:
        for i in self._ids(case):
            node = self.nodes[i]
            if node.raw is None:
                continue
            for _ in range(count(node.options)):
                node.raw.tick()

    def handle_tick(self, case: TestCase) -> None:
        """Example: ``tick 1 2 n=3``: tick nodes 1 and 2 three times each (all nodes if none)."""
        n = case.int_arg("n", 1)
        self._tick(case, lambda _o: n)

    def handle_tick_election(self, case: TestCase) -> None:
        """Example: ``tick-election 1``: tick node 1 ``election`` times (a follower campaigns)."""
        self._tick(case, lambda o: o.election)

    def handle_tick_heartbeat(self, case: TestCase) -> None:
        """Example: ``tick-heartbeat 1``: tick node 1 ``heartbeat`` times (a leader beats)."""
        self._tick(case, lambda o: o.heartbeat)

    def handle_read_index(self, case: TestCase) -> None:
        """Example: ``read-index 2 r1 r2``: node 2 asks for read points ``r1`` and ``r2``."""
        words = case.positional()
        if len(words) < 2:
            raise DataDrivenError(f"{case.pos}: read-index <node> <context>...")
        raw = self._raw(case, int(words[0]))
        for ctx in words[1:]:
            try:
                raw.read_index(ctx.encode())
            except RaftError as e:
                self._error(e)

    def handle_transfer_leader(self, case: TestCase) -> None:
        """Example: ``transfer-leader 1 to=3``: ask node 1 to hand leadership to node 3."""
        raw = self._raw(case, self._single_id(case))
        try:
            raw.transfer_leader(case.int_arg("to", 0))
        except RaftError as e:
            self._error(e)

    def handle_report_unreachable(self, case: TestCase) -> None:
        """Example: ``report-unreachable 1 2``: node 1's transport could not reach node 2."""
        ids = case.positional_ints()
        if len(ids) != 2:
            raise DataDrivenError(f"{case.pos}: report-unreachable <node> <peer>")
        self._raw(case, ids[0]).report_unreachable(ids[1])

    # -- the network ------------------------------------------------------------------

    def _partitioned(self, m: Message) -> bool:
        return m.frm != m.to and (m.frm in self.isolated or m.to in self.isolated)

    def _send(self, msgs: list[Message]) -> None:
        for m in msgs:
            self.inflight.setdefault(m.to, []).append(m)
            if self._partitioned(m):
                # Lost even if the partition heals before it is delivered.
                self.cut.add(id(m))

    def _blocked(self, m: Message) -> str:
        node = self.nodes.get(m.to)
        if node is None:
            return f"node {m.to} does not exist"
        if node.raw is None:
            return f"node {m.to} is down"
        if id(m) in self.cut or self._partitioned(m):
            return "partitioned"
        return ""

    def _deliver(
        self,
        recipients: list[int],
        drop: set[int],
        types: set[str],
        senders: set[int],
    ) -> bool:
        """Deliver (or drop) the matching messages in flight; True if any moved."""
        moved = False
        for to in sorted(self.inflight):
            if to not in recipients and to not in drop:
                continue
            queue = self.inflight[to]
            take = [
                m
                for m in queue
                if (not types or m.type.name in types) and (not senders or m.frm in senders)
            ]
            if not take:
                continue
            self.inflight[to] = [m for m in queue if not any(m is t for t in take)]
            self.cut.difference_update(id(m) for m in take)
            moved = True
            if to in drop:
                for m in take:
                    self._print(f"dropped: {describe_message(m)}")
                continue
            self._print(f"> {to} receiving messages")
            for m in take:
                why = self._blocked(m)
                if why:
                    self._print(f"  dropped ({why}): {describe_message(m)}")
                    continue
                self._print(f"  {describe_message(m)}")
                raw = self.nodes[to].raw
                assert raw is not None
                start = len(self.out)
                try:
                    raw.step(m)
                except RaftError as e:
                    self._error(e)
                self._indent_from(start)
        return moved

    def _indent_from(self, start: int) -> None:
        for k in range(start, len(self.out)):
            self.out[k] = "  " + self.out[k]

    def handle_deliver_msgs(self, case: TestCase) -> None:
        """Example: ``deliver-msgs 2 drop=(3) type=(APP) from=1``: step messages into 2, drop 3's.

        Without node ids and without ``drop=`` every message in flight is
        delivered. ``type=`` and ``from=`` restrict which messages move; the
        others stay in flight.
        """
        recipients = case.positional_ints()
        drop = set(case.int_list("drop") or [])
        if not recipients and not drop:
            recipients = sorted(self.inflight)
        types = set(case.vals("type"))
        senders = set(case.int_list("from") or [])
        if not self._deliver(recipients, drop, types, senders):
            self._print("no messages")

    def handle_isolate(self, case: TestCase) -> None:
        """Example: ``isolate 1``: cut node 1 off from every other node until ``heal``."""
        for i in case.positional_ints():
            self._node(case, i)
            self.isolated.add(i)

    def handle_heal(self, case: TestCase) -> None:
        """Example: ``heal``: end every partition (``heal 1``: just node 1's)."""
        ids = case.positional_ints()
        if ids:
            self.isolated.difference_update(ids)
        else:
            self.isolated.clear()
        lost = 0
        for to, queue in self.inflight.items():
            kept = [m for m in queue if id(m) not in self.cut]
            lost += len(queue) - len(kept)
            self.inflight[to] = kept
        self.cut.clear()
        if lost:
            self._print(f"{lost} messages sent across the partition were lost")

    # -- Readys --------------------------------------------------------------------

    def _take_ready(self, node: _Node) -> Ready:
        raw = node.raw
        assert raw is not None
        rd = raw.ready()
        self._print(f"> {node.id} handling Ready")
        self._print("  " + describe_ready(rd).replace("\n", "\n  "))
        # Messages that need no save may leave at once (thesis §10.2.1).
        self._send(rd.messages)
        return rd

    def _persist_ready(self, node: _Node, rd: Ready) -> None:
        raw = node.raw
        assert raw is not None
        node.storage.save(rd.hard_state, rd.entries, rd.snapshot)
        self._send(rd.messages_after_save)
        if rd.snapshot is not None:
            node.sm.restore(rd.snapshot)
        node.sm.apply(rd.committed_entries)
        start = len(self.out)
        raw.advance(rd)
        self._indent_from(start)

    def _process_ready(self, node_id: int) -> bool:
        node = self.nodes[node_id]
        if node.raw is None or node.held is not None or not node.raw.has_ready():
            return False
        rd = self._take_ready(node)
        self._persist_ready(node, rd)
        return True

    def handle_process_ready(self, case: TestCase) -> None:
        """Example: ``process-ready 1 2``: save, send, apply and advance one Ready of each."""
        if not any([self._process_ready(i) for i in self._ids(case)]):
            self._print("no Ready")

    def handle_take_ready(self, case: TestCase) -> None:
        """Example: ``take-ready 2``: take node 2's Ready and send what needs no save; hold it."""
        node = self._node(case, self._single_id(case))
        if node.raw is None or node.held is not None:
            raise DataDrivenError(f"{case.pos}: node {node.id} is down or holds a Ready")
        if not node.raw.has_ready():
            self._print("no Ready")
            return
        node.held = self._take_ready(node)

    def handle_persist_ready(self, case: TestCase) -> None:
        """Example: ``persist-ready 2``: save node 2's held Ready, then send, apply, advance."""
        node = self._node(case, self._single_id(case))
        if node.held is None:
            raise DataDrivenError(f"{case.pos}: node {node.id} holds no Ready")
        rd, node.held = node.held, None
        self._print(f"> {node.id} persisted its Ready")
        if rd.messages_after_save:
            self._print("  now sending:")
            for m in rd.messages_after_save:
                self._print(f"    {describe_message(m)}")
        self._persist_ready(node, rd)

    def handle_stabilize(self, case: TestCase) -> None:
        """Example: ``stabilize``: handle Readys and deliver messages until nothing moves.

        With node ids, only those nodes handle Readys and receive messages.
        ``quiet=true`` prints nothing (for set-up steps that other files trace).
        """
        ids = self._ids(case)
        start = len(self.out)
        for _ in range(1000):
            moved = False
            for i in ids:
                moved = self._process_ready(i) or moved
            moved = self._deliver(ids, set(), set(), set()) or moved
            if not moved:
                if case.bool_arg("quiet", False):
                    del self.out[start:]
                return
        raise DataDrivenError(f"{case.pos}: no fixed point after 1000 rounds")

    # -- inspection -------------------------------------------------------------------

    def handle_raft_log(self, case: TestCase) -> None:
        """Example: ``raft-log 1``: node 1's durable log (its MemoryStorage)."""
        node = self._node(case, self._single_id(case))
        s = node.storage
        first, last = s.first_index(), s.last_index()
        snap = s.snapshot().metadata
        head = f"first={first} last={last}"
        if snap.index:
            head += f" snapshot={snap.term}/{snap.index}"
        self._print(head if first <= last else f"log is empty: {head}")
        for e in s.all_entries():
            self._print(describe_entry(e))

    def handle_raft_state(self, case: TestCase) -> None:
        """Example: ``raft-state``: one line per node: role, membership, term, leader."""
        for i in self._ids(case):
            node = self.nodes[i]
            if node.raw is None:
                self._print(f"{i}: down")
                continue
            st = node.raw.status()
            kind = "learner" if st.is_learner else "voter"
            if i not in st.conf_state.ids():
                kind = "non-member"
            line = f"{i}: {st.role.value} ({kind}) term={st.term} lead={st.lead}"
            if i in self.isolated:
                line += " [isolated]"
            self._print(line)

    def handle_status(self, case: TestCase) -> None:
        """Example: ``status 1``: node 1's Status, with per-peer progress if it leads."""
        for i in self._ids(case):
            raw = self._raw(case, i)
            self._print(describe_status(raw.status()))

    def handle_applied(self, case: TestCase) -> None:
        """Example: ``applied 1 2``: what each node's state machine applied (index: data)."""
        for i in self._ids(case):
            sm = self.nodes[i].sm
            items = " ".join(f"{idx}:{d}" for idx, d in sm.applied)
            self._print(f"{i}: applied={sm.index} [{items}]")

    # -- storage and lifecycle -----------------------------------------------------

    def handle_compact(self, case: TestCase) -> None:
        """Example: ``compact 1 index=5``: snapshot node 1's state machine at 5, compact its log.

        ``index`` defaults to what node 1 has applied.
        """
        node = self._node(case, self._single_id(case))
        index = case.int_arg("index", node.sm.index)
        if index > node.sm.index:
            raise DataDrivenError(f"{case.pos}: index {index} is not applied on {node.id}")
        snap = node.storage.create_snapshot(
            index, node.sm.conf_at(index), node.sm.snapshot_data(index)
        )
        node.storage.compact(index)
        self._print(
            f"snapshot at {snap.metadata.term}/{index}; log now "
            f"[{node.storage.first_index()}, {node.storage.last_index()}]"
        )

    def handle_crash(self, case: TestCase) -> None:
        """Example: ``crash 2``: node 2 stops; what it had not saved (and its memory) is lost.

        Messages in flight to it are lost too (its connections broke).
        """
        for i in case.positional_ints():
            node = self._node(case, i)
            node.raw = None
            node.held = None
            node.sm = _StateMachine()
            lost = self.inflight.get(i, [])
            self.inflight[i] = []
            self.cut.difference_update(id(m) for m in lost)
            self._print(f"{i} crashed" + (f"; {len(lost)} messages to it lost" if lost else ""))

    def handle_restart(self, case: TestCase) -> None:
        """Example: ``restart 2``: rebuild node 2's RawNode from its storage (its disk)."""
        for i in case.positional_ints():
            node = self._node(case, i)
            if node.raw is not None:
                raise DataDrivenError(f"{case.pos}: node {i} is running")
            node.sm = _StateMachine()
            snap = node.storage.snapshot()
            if not snap.is_empty():
                node.sm.restore(snap)
            node.raw = RawNode(self._config(node))
            st = node.raw.status()
            self._print(
                f"{i} restarted: term={st.term} vote={st.vote} commit={st.commit} "
                f"log=[{st.first_index}, {st.last_index}]"
            )

    def handle_log_level(self, case: TestCase) -> None:
        """Example: ``log-level debug``: how much of the core's log to print (none..debug)."""
        words = case.positional()
        if len(words) != 1 or words[0] not in _LEVELS:
            raise DataDrivenError(f"{case.pos}: log-level {'|'.join(_LEVELS)}")
        self.logger.setLevel(_LEVELS[words[0]])
