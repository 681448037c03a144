"""The step-by-step control the targeted schedules play their sequences with.

A :class:`Schedule` (``schedules.py``) plays one sequence at the start of a
run with :class:`Script`: a simulation without random faults, lost messages
or client activity, in which the sequence lets ticks pass until something
happens, or goes message by message and Ready half by Ready half where the
timing matters, cutting links, holding messages back and crashing nodes at
exact points.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from raftdb.kv.commands import Command
from raftdb.raft import CompactedError

from .invariants import InvariantViolation
from .workload import KVClient

if TYPE_CHECKING:
    from raftdb.raft import Message

    from .simulator import SimConfig, SimNode, Simulation

__all__ = ["Schedule", "Script"]

#: Ticks a schedule waits for one step (an election, a save) before it gives up.
_WAIT = 300


class Schedule(ABC):
    """One targeted sequence of faults, played at the start of a run."""

    name: ClassVar[str]
    #: What the sequence does, for the docs and the failure messages.
    summary: ClassVar[str]

    @abstractmethod
    def configure(self, cfg: SimConfig) -> None:
        """Adjust the run's settings to what the sequence needs."""

    def play(self, sim: Simulation) -> None:
        """Play the sequence on ``sim``, then hand the run back to its random faults."""
        sim.faulty = False  # no random faults, no lost messages, clients idle
        sim.quiet_budget = 5_000
        try:
            self.script(Script(sim, self.name))
        finally:
            sim.drop_filter = None
            sim.pinned = None
            sim.cut.clear()
            sim.quiet_budget = 100_000
            sim.faulty = True
            sim._count(f"schedule-{self.name}")

    @abstractmethod
    def script(self, s: Script) -> None:
        """The sequence itself."""


class Script:
    """Step-by-step control of a simulation, for the schedules."""

    def __init__(self, sim: Simulation, name: str) -> None:
        self.sim = sim
        self.name = name

    # -- time ----------------------------------------------------------------------

    def rounds(self, n: int) -> None:
        """Let ``n`` ticks pass (each worked until the network is quiet)."""
        for _ in range(n):
            self.sim._round()

    def until(self, what: str, done: Callable[[], bool], ticks: int = _WAIT) -> None:
        """Let ticks pass until ``done()``.

        Raises:
            InvariantViolation: it did not happen within ``ticks``: with a correct
                core every step of a schedule happens, so this is a liveness failure.
        """
        for _ in range(ticks):
            if done():
                return
            self.sim._round()
        if not done():
            raise InvariantViolation(
                f"schedule {self.name}: {what} did not happen in {ticks} ticks"
            )

    # -- nodes ---------------------------------------------------------------------

    def leader(self) -> SimNode | None:
        """The live leader of the highest term, if any."""
        return self.sim._leader()

    def settled(self) -> SimNode:
        """Wait for a leader that has committed an entry of its term, with every
        live node applied up to its commit index; return it."""
        found: list[SimNode] = []

        def ready() -> bool:
            leader = self.leader()
            if leader is None or leader.raw is None:
                return False
            r = leader.raw._raft
            if not r.committed_entry_in_current_term():
                return False
            if any(n.sm.applied_index < leader.raw.commit_index for n in self.sim.live_nodes()):
                return False
            found[:] = [leader]
            return True

        self.until("a settled leader", ready)
        return found[0]

    def others(self, *exclude: SimNode) -> list[SimNode]:
        """The other voters of the first members, in an order drawn from the run's Random."""
        ids = {n.id for n in exclude}
        rest = [n for n in self.sim.nodes.values() if n.id not in ids]
        self.sim.rng.shuffle(rest)
        return rest

    def step(self) -> None:
        """Move the history's clock: the steps of a sequence happen one after
        another, as the steps of a round do (clients' calls and returns are
        ordered by it)."""
        self.sim.step_no += 1

    def crash(self, node: SimNode) -> None:
        self.step()
        if node.raw is not None:
            self.sim._crash(node, f"schedule-crash-{self.name}")

    def start(self, node: SimNode) -> None:
        self.step()
        if node.raw is None:
            self.sim._start(node)

    def campaign(self, node: SimNode) -> None:
        """Make ``node`` start an election now."""
        assert node.raw is not None
        self.step()
        node.raw.campaign()
        self.sim._after_step(node)

    def clients(self) -> list[KVClient]:
        """The key-value clients (idle during a schedule until it uses them)."""
        return [cl for cl in self.sim.workload.clients if isinstance(cl, KVClient)]

    def drain(self, node: SimNode) -> None:
        """Handle every Ready ``node`` has, completely (both halves, repeatedly)."""
        while self.sim._ready_phase(node):
            self.step()

    def half(self, node: SimNode) -> bool:
        """One half of handling a Ready: send its messages, or save and apply it."""
        self.step()
        return self.sim._ready_phase(node)

    def deliver(self, to: SimNode, frm: SimNode | None = None) -> int:
        """Deliver the due messages for ``to`` (from ``frm`` only, if given)."""

        def wanted(m: Message) -> bool:
            return m.to == to.id and (frm is None or m.frm == frm.id)

        self.step()
        return self.sim.deliver_matching(wanted)

    def hold(self, to: SimNode, frm: SimNode) -> list[Message]:
        """Take the due messages from ``frm`` to ``to`` out of the network (a long delay)."""
        held = [item for item in self.sim.network if item[2].to == to.id and item[2].frm == frm.id]
        ids = {item[1] for item in held}
        self.sim.network = [item for item in self.sim.network if item[1] not in ids]
        heapq.heapify(self.sim.network)
        return [item[2] for item in sorted(held)]

    def release(self, held: list[Message]) -> None:
        """Deliver messages taken out with :meth:`hold`, now."""
        self.step()
        for m in held:
            self.sim._deliver(m)

    def quiesce(self) -> None:
        """Deliver and handle Readys, without ticks, until nothing moves."""
        for _ in range(10_000):
            self.step()
            moved = self.sim.deliver_matching(lambda m: True) > 0
            for node in list(self.sim.nodes.values()):
                if self.sim._ready_phase(node):
                    moved = True
            if not moved:
                return
        raise InvariantViolation(f"schedule {self.name}: the cluster never went quiet")

    def isolate(self, *nodes: SimNode, one_way: bool = False) -> None:
        """Cut ``nodes`` off from the others (only their outgoing links if ``one_way``)."""
        inside = {n.id for n in nodes}
        for a in inside:
            for b in self.sim.nodes:
                if b not in inside:
                    self.sim.cut.add((a, b))
                    if not one_way:
                        self.sim.cut.add((b, a))

    def propose(self, node: SimNode, what: str) -> int:
        """Propose a sessionless put of ``what`` on leader ``node``; its index."""
        assert node.raw is not None
        value = self.sim.workload.unique()
        data = Command.put(f"schedule/{what}".encode(), value.encode()).encode()
        self.step()
        if not self.sim.propose(node, data):
            raise InvariantViolation(f"schedule {self.name}: leader {node.id} refused {what}")
        return node.raw.last_index

    def saved(self, node: SimNode, index: int, term: int) -> bool:
        """Whether ``node``'s disk holds the entry ``(index, term)``."""
        disk = node.storage
        try:
            return disk.last_index() >= index and disk.term(index) == term
        except CompactedError:
            return False
