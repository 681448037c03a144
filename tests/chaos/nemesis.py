"""The nemesis: faults injected one at a time into a running :class:`ChaosCluster`.

Each fault is applied, held for a random time, then healed; after every heal
the nemesis measures how long the cluster takes to acknowledge a write again
(a probe write through any node, retried) and fails the run past
:data:`RECOVERY_BOUND`. Fault kinds:

``kill``        ``kill -9`` a random node (the leader half the time), restart it;
``stop``        stop a random node gracefully (SIGTERM: requests in flight are
                answered first), restart it;
``pause``       ``SIGSTOP`` the leader (sometimes a follower), ``SIGCONT`` it: a
                paused leader wakes up believing it still leads;
``partition``   cut links with the proxy: isolate the leader, split a minority
                off, or cut one direction only (the leader can send but hears
                nothing back); black hole (``drop``) or refused connections;
``slow``        delay every link of one or two nodes by tens of milliseconds;
``transfer``    ask a random node to hand leadership to a random voter;
``member``      remove a voter, wipe its data directory, add it back as a
                learner, start it with ``--join``, let it catch up, promote it
                (a voter that lost its disk must rejoin as a new member: Raft
                thesis §4, docs/operations.md);
``restart_all`` ``kill -9`` every node at once, then restart them all;
``powercut``    cut the power of a random node (the leader half the time): ``kill -9``,
                then its filesystem drops everything it had not made durable; it is
                started again by :meth:`Nemesis.recover`;
``powercut_all`` the same for every node at once (as ``restart_all`` for ``kill -9``).

The power cuts need a cluster that can cut the power (:class:`PowerCutter`: one whose
nodes keep their data on a power-loss filesystem, ``tests.powerloss.cluster.
PowerCluster``): a :class:`Nemesis` given one of them with any other cluster is
refused at once (:class:`NemesisError`), never turned into a plain kill.

Only clock-free faults: raftdb does not depend on synchronised clocks.

``spare`` nodes are never restarted: ``kill``, ``stop``, ``powercut`` and ``member``
pick others and ``restart_all`` and ``powercut_all`` take the rest; every other fault still hits
them. The soak (:mod:`tests.soak`) spares one node so that one process lives
through the whole run and its memory can be followed for hours.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

import httpx

from tests.chaos.cluster import ChaosCluster, poll
from tests.integration.harness import ServerError

__all__ = ["FAULTS", "POWER_FAULTS", "RECOVERY_BOUND", "Nemesis", "NemesisError", "PowerCutter"]

#: Longest the cluster may take to acknowledge a write after a fault is healed.
RECOVERY_BOUND: Final = 30.0
#: Longest a restarted or re-added node may take to be ready.
READY_BOUND: Final = 45.0

FAULTS: Final = ("kill", "stop", "pause", "partition", "slow", "transfer", "member", "restart_all")
#: The faults that need a :class:`PowerCutter` cluster.
POWER_FAULTS: Final = ("powercut", "powercut_all")


class NemesisError(ValueError):
    """A fault the nemesis cannot inject into the cluster it was given."""


@runtime_checkable
class PowerCutter(Protocol):
    """A cluster that can cut the power of its nodes (``tests.powerloss``'s
    ``PowerCluster``): ``kill -9`` each of ``ids``, then drop what it had not made
    durable."""

    def power_cut(self, ids: Iterable[int]) -> None: ...


@dataclass
class Nemesis:
    """Injects faults into ``cluster``; see the module docstring.

    ``faults`` are the kinds to draw from (with repetition: a kind listed twice
    is drawn twice as often); ``rng`` makes the choices of one seed.
    """

    cluster: ChaosCluster
    rng: random.Random
    faults: tuple[str, ...]
    hold: tuple[float, float] = (0.8, 2.5)
    quiet: tuple[float, float] = (0.5, 1.5)
    counts: Counter[str] = field(default_factory=Counter)
    recoveries: list[float] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    on_membership: Callable[[], None] | None = None
    spare: frozenset[int] = frozenset()
    _probes: int = 0

    def __post_init__(self) -> None:
        for kind in dict.fromkeys(self.faults):
            if kind not in FAULTS + POWER_FAULTS:
                raise NemesisError(f"no such fault: {kind!r} (the faults: {FAULTS + POWER_FAULTS})")
            if kind in POWER_FAULTS:
                self._power_cutter(kind)

    # -- the loop -------------------------------------------------------------------

    def run(self, seconds: float) -> None:
        """Inject faults for ``seconds`` (the last one may end a little later)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._sleep(self.quiet)
            kind = self.rng.choice(self.faults)
            getattr(self, f"_{kind}")()
            self.recover(kind)

    def _sleep(self, span: tuple[float, float]) -> None:
        # Fault durations, not synchronisation: how long the fault (or the quiet) lasts.
        time.sleep(self.rng.uniform(*span))

    def _note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))

    def recover(self, kind: str) -> None:
        """Wait until every member runs and a write is acknowledged; record how long."""
        started = time.monotonic()
        c = self.cluster
        for i in sorted(c.membership):
            if not c.nodes[i].running:
                c.start(i, wait=False)
        self._probe_write(kind)
        self.recoveries.append(time.monotonic() - started)
        for i in sorted(c.membership):
            c.wait_ready(i, timeout=READY_BOUND)

    def _probe_write(self, kind: str) -> None:
        c = self.cluster
        self._probes += 1
        key = f"probe/{self._probes:05d}"
        headers = {"idempotency-key": f"probe-{id(self)}-{self._probes}"}

        def attempt() -> bool | None:
            for i in self.rng.sample(sorted(c.membership), len(c.membership)):
                if not c.nodes[i].live:
                    continue
                try:
                    r = c.client.put(
                        c.url(i, f"/v1/kv/{key}"), content=kind.encode(), headers=headers
                    )
                except httpx.HTTPError:
                    continue
                if r.status_code == 204:
                    return True
                if r.status_code not in (503, 504):
                    raise ServerError(f"probe write on node {i}: {r.status_code} {r.text}")
            return None

        try:
            poll(f"a write to be acknowledged after {kind}", attempt, RECOVERY_BOUND, 0.1)
        except ServerError as exc:
            raise ServerError(f"{exc}\n{c.log_tails(30)}") from None

    def leader(self) -> int | None:
        """The current leader among the members, if there is one now."""
        return self.cluster.leader(sorted(self.cluster.membership))

    def _victim(self, leader_bias: float = 0.5, *, restart: bool = False) -> int:
        """A live member, the leader with probability ``leader_bias``; never a spared
        node when the fault ``restart``s its victim."""
        c = self.cluster
        leader = self.leader()
        spared = self.spare if restart else frozenset()
        running = [i for i in sorted(c.membership) if c.nodes[i].live and i not in spared]
        if leader is not None and leader not in spared and self.rng.random() < leader_bias:
            return leader
        return self.rng.choice(running)

    # -- faults ---------------------------------------------------------------------

    def _kill(self) -> None:
        c = self.cluster
        victim = self._victim(restart=True)
        self._note(f"kill {victim}")
        c.kill(victim)
        self.counts["kill"] += 1
        self._sleep(self.hold)
        c.start(victim, wait=False)

    def _stop(self) -> None:
        c = self.cluster
        victim = self._victim(restart=True)
        self._note(f"stop {victim}")
        code = c.stop(victim)
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
        if code not in (0, None, -signal.SIGTERM):
            raise ServerError(f"node {victim} exited with {code} on SIGTERM\n{c.log_tail(victim)}")
        self.counts["stop"] += 1
        self._sleep(self.hold)
        c.start(victim, wait=False)

    def _pause(self) -> None:
        c = self.cluster
        victim = self._victim(leader_bias=0.8)
        self._note(f"pause {victim}")
        c.pause(victim)
        self.counts["pause"] += 1
        self._sleep(self.hold)
        c.resume(victim)

    def _partition(self) -> None:
        c = self.cluster
        members = sorted(c.membership)
        leader = self.leader() or self.rng.choice(members)
        others = [i for i in members if i != leader]
        mode = self.rng.choice(["drop", "drop", "refuse"])
        shape = self.rng.choice(["isolate", "minority", "one-way"])
        if shape == "isolate":
            c.partition([leader], others, mode=mode)
        elif shape == "minority":
            shuffled = self.rng.sample(members, len(members))
            small = shuffled[: (len(members) - 1) // 2]
            c.partition(small, shuffled[len(small) :], mode=mode)
        else:  # the leader's messages go out, nothing comes back to it
            c.partition(others, [leader], mode=mode, one_way=True)
        self._note(f"partition {shape} ({mode}) around {leader}")
        self.counts["partition"] += 1
        self._sleep(self.hold)
        c.heal()

    def _slow(self) -> None:
        c = self.cluster
        members = sorted(c.membership)
        chosen = self.rng.sample(members, self.rng.choice([1, 1, 2]))
        delay = self.rng.uniform(0.02, 0.15)
        c.slow(chosen, delay)
        self._note(f"slow {chosen} {delay * 1000:.0f}ms")
        self.counts["slow"] += 1
        self._sleep((self.hold[0] * 2, self.hold[1] * 2))
        c.heal()

    def _transfer(self) -> None:
        c = self.cluster
        live = [i for i in sorted(c.membership) if c.nodes[i].live]
        via, target = self.rng.choice(live), self.rng.choice(live)
        self._note(f"transfer to {target} via {via}")
        try:
            r = c.client.post(c.url(via, "/v1/cluster/leader"), json={"id": target}, timeout=10)
        except httpx.HTTPError:
            r = None
        if r is not None and r.status_code not in (200, 503, 504):
            raise ServerError(f"leader transfer to {target} via {via}: {r.status_code} {r.text}")
        self.counts["transfer"] += 1

    def _member(self) -> None:
        c = self.cluster
        members = [i for i in sorted(c.membership) if i not in self.spare]
        leader = self.leader()
        # The leader itself a quarter of the time.
        if leader in members and self.rng.random() < 0.25:
            victim = leader
        else:
            victim = self.rng.choice([i for i in members if i != leader] or members)
        self._note(f"member cycle of {victim}")
        self._membership_call("DELETE", f"/v1/cluster/members/{victim}", None, victim)
        c.membership.discard(victim)
        self.counts["member_remove"] += 1
        if self.on_membership is not None:
            self.on_membership()
        c.kill(victim)
        c.wipe(victim)
        self.counts["wipe"] += 1
        body = {"id": victim, "peer_url": c.nodes[victim].peer_url, "learner": True}
        self._membership_call("POST", "/v1/cluster/members", body, victim)
        self.counts["learner_add"] += 1
        c.start(victim, join=True, wait=False)
        c.wait_ready(victim, timeout=READY_BOUND)
        body["learner"] = False
        self._membership_call("POST", "/v1/cluster/members", body, victim)
        c.membership.add(victim)
        self.counts["promote"] += 1
        if self.on_membership is not None:
            self.on_membership()

    def _membership_call(
        self, method: str, path: str, body: dict[str, object] | None, victim: int
    ) -> None:
        """Send a membership change through live members until it is known to be done."""
        c = self.cluster

        def attempt() -> bool | None:
            for i in sorted(c.membership):
                if i == victim or not c.nodes[i].live:
                    continue
                try:
                    r = c.client.request(method, c.url(i, path), json=body, timeout=10.0)
                except httpx.HTTPError:
                    continue
                if r.status_code in (201, 204):
                    return True
                if method == "DELETE" and r.status_code == 404:
                    return True  # an earlier attempt's 504 did commit
                if r.status_code not in (503, 504):
                    raise ServerError(f"{method} {path} on node {i}: {r.status_code} {r.text}")
            return None

        poll(f"{method} {path}", attempt, RECOVERY_BOUND, 0.2)

    def _restart_all(self) -> None:
        c = self.cluster
        victims = [i for i in sorted(c.membership) if i not in self.spare]
        self._note(f"kill all of {victims}")
        for i in victims:
            c.kill(i)
        self.counts["restart_all"] += 1
        self._sleep((0.2, 1.0))
        for i in victims:
            c.start(i, wait=False)

    def _power_cutter(self, kind: str) -> PowerCutter:
        """The cluster as one that can cut the power; :class:`NemesisError` otherwise."""
        c = self.cluster
        if not isinstance(c, PowerCutter):
            raise NemesisError(
                f"the {kind!r} fault needs a cluster that can cut the power (nodes on "
                f"power-loss filesystems: tests.powerloss.cluster.PowerCluster); "
                f"{type(c).__name__} cannot, and a kill -9 is not a power cut"
            )
        return c

    def _powercut(self) -> None:
        cutter = self._power_cutter("powercut")
        victim = self._victim(restart=True)
        self._note(f"power cut of {victim}")
        cutter.power_cut([victim])
        self.counts["powercut"] += 1
        self._sleep(self.hold)  # the power stays off; recover() starts the node again

    def _powercut_all(self) -> None:
        cutter = self._power_cutter("powercut_all")
        victims = [i for i in sorted(self.cluster.membership) if i not in self.spare]
        self._note(f"power cut of all of {victims}")
        cutter.power_cut(victims)
        self.counts["powercut_all"] += 1
        self._sleep((0.2, 1.0))  # recover() starts them again
