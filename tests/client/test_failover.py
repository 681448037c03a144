"""The client against members that die: writes under a SIGKILL of the leader, a watch
whose member dies, a lease kept alive across leader changes, a lock between two clients."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from raftdb.client import AsyncClient, Client, RaftdbError, Txn, WatchEvent, WriteResult
from raftdb.client._async import AsyncWatch
from tests.client.conftest import ClusterFactory, endpoints
from tests.integration.harness import ProcessCluster, wait_until


def _acked(acks: list[WriteResult], n: int, timeout: float = 20.0) -> None:
    wait_until(f"{n} acknowledged writes", lambda: len(acks) >= n or None, timeout)


@pytest.mark.deadline(60)
def test_kill_leader_under_writes_and_watch_resumes(cluster_factory: ClusterFactory) -> None:
    c: ProcessCluster = cluster_factory(3)
    c.start_all()
    leader = c.wait_leader()
    client = Client(endpoints(c), timeout=20.0, connect_timeout=0.5)
    start = client.put("count", "0")
    acks: list[WriteResult] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        # A counter moved by compare-and-set: a write applied twice would fail its
        # If-Match (or move the counter past the acknowledged count), one lost would
        # leave it behind.
        n, mod = 0, start.index
        try:
            while not stop.is_set():
                w = client.put("count", str(n + 1), if_match=mod)
                n, mod = n + 1, w.index
                acks.append(w)
        except BaseException as e:
            failures.append(e)

    t = threading.Thread(target=writer)
    t.start()
    try:
        _acked(acks, 20)
        c.kill(leader)
        before = len(acks)
        _acked(acks, before + 20)
    finally:
        stop.set()
        t.join(30)
    assert not failures, failures
    final = client.get("count")
    assert final is not None
    assert final.value == str(len(acks)).encode(), "an acknowledged write lost or doubled"
    assert final.mod_index == acks[-1].index
    assert [a.index for a in acks] == sorted({a.index for a in acks})

    # Watch resumption: the watch's member dies between a transaction's events and
    # later writes; every event arrives once, in order, from another member.
    c.start(leader)
    c.wait_leader()
    follower = next(i for i in c.followers(c.wait_leader()) if c.nodes[i].live)
    order = [c.nodes[follower].api_url] + [n.api_url for i, n in c.nodes.items() if i != follower]
    watcher = Client(order, timeout=10.0, connect_timeout=0.5)
    first = client.put("w/0", "a")
    expected: list[tuple[int, bytes]] = [(first.index, b"w/0")]
    got: list[WatchEvent] = []
    with watcher.watch("w/", since=first.index - 1) as events:
        it = iter(events)
        ev = next(it)
        assert isinstance(ev, WatchEvent)
        got.append(ev)
        t3 = Txn()
        t3.success.put("w/t1", "1").put("w/t2", "2").put("w/t3", "3")
        r = client.txn(t3)
        expected += [(r.index, b"w/t1"), (r.index, b"w/t2"), (r.index, b"w/t3")]
        ev = next(it)
        assert isinstance(ev, WatchEvent)
        got.append(ev)  # one event of the transaction delivered, then the member dies
        c.kill(follower)
        for i in range(1, 4):
            w = client.put(f"w/{i}", str(i))
            expected.append((w.index, f"w/{i}".encode()))
        while len(got) < len(expected):
            ev = next(it)
            assert isinstance(ev, WatchEvent)
            got.append(ev)
    assert [(e.index, e.key) for e in got] == expected
    assert got[1].type == "put"
    assert got[1].value == b"1"
    watcher.close()
    client.close()


@pytest.mark.deadline(60)
def test_async_watch_resumes_after_its_member_dies(cluster_factory: ClusterFactory) -> None:
    """The async client's watch, started "from now" on a follower that is SIGKILLed
    between a transaction's events: every event arrives once, in order, from another
    member, and closing the watch from another task while it waits ends it."""
    c: ProcessCluster = cluster_factory(3)
    c.start_all()
    follower = c.followers(c.wait_leader())[0]
    order = [c.nodes[follower].api_url] + [n.api_url for i, n in c.nodes.items() if i != follower]

    async def next_event(it: AsyncWatch) -> WatchEvent:
        ev = await asyncio.wait_for(it.__anext__(), 20)
        assert isinstance(ev, WatchEvent)
        return ev

    async def main() -> None:
        writer = AsyncClient(endpoints(c), timeout=20.0, connect_timeout=0.5)
        watcher = AsyncClient(order, timeout=10.0, connect_timeout=0.5)
        async with writer, watcher:
            expected: list[tuple[int, bytes]] = []
            got: list[WatchEvent] = []
            async with watcher.watch("w/") as events:
                first = await writer.put("w/0", "a")
                expected.append((first.index, b"w/0"))
                got.append(await next_event(events))
                t = Txn()
                t.success.put("w/t1", "1").put("w/t2", "2").put("w/t3", "3")
                r = await writer.txn(t)
                expected += [(r.index, b"w/t1"), (r.index, b"w/t2"), (r.index, b"w/t3")]
                got.append(await next_event(events))  # one of the transaction's events
                await asyncio.to_thread(c.kill, follower)
                for i in range(1, 4):
                    w = await writer.put(f"w/{i}", str(i))
                    expected.append((w.index, f"w/{i}".encode()))
                while len(got) < len(expected):
                    got.append(await next_event(events))
                assert [(e.index, e.key) for e in got] == expected
                assert (got[1].type, got[1].value) == ("put", b"1")

                # Closed by another task while one waits for the next event: the
                # waiting one ends (StopAsyncIteration), neither raises otherwise.
                waiting = asyncio.create_task(events.__anext__())
                await asyncio.sleep(0)  # let it start waiting on the stream
                await asyncio.wait_for(events.aclose(), 10)
                with pytest.raises(StopAsyncIteration):
                    await asyncio.wait_for(waiting, 10)

    asyncio.run(main())


@pytest.mark.deadline(40)
def test_lease_kept_alive_across_leader_changes(client: Client, shared: ProcessCluster) -> None:
    ttl = 2
    with client.lease(ttl) as kept:
        client.put("kept/k", "v", lease=kept.id)
        until = time.monotonic() + 3 * ttl
        changes = 0
        while time.monotonic() < until:
            if changes < 2 and time.monotonic() > until - (2 - changes) * ttl:
                leader = shared.wait_leader()
                client.leader_transfer(next(i for i in (1, 2, 3) if i != leader))
                changes += 1
            got = client.get("kept/k")
            assert got is not None, "the kept lease expired"
            assert kept.lost is None
        assert changes == 2
    assert client.get("kept/k") is None


@pytest.mark.deadline(40)
def test_lock_excludes_and_fences_between_processes(shared: ProcessCluster) -> None:
    argv = [sys.executable, "-m", "tests.client.lock_worker"]
    procs = [
        subprocess.Popen(
            [*argv, name, "4", *endpoints(shared)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parents[2],
        )
        for name in ("a", "b")
    ]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=35)
            outputs.append(out.decode())
            assert p.returncode == 0, out.decode()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    fences = [
        [int(line.split()[1]) for line in out.splitlines() if line.startswith("fence ")]
        for out in outputs
    ]
    assert [len(f) for f in fences] == [4, 4]
    assert all(f == sorted(f) for f in fences)
    every = sorted(fences[0] + fences[1])
    assert len(set(every)) == 8
    last_key = next(
        line.split()[2]
        for out in outputs
        for line in out.splitlines()
        if line.startswith(f"fence {every[-1]} ")
    )
    with Client(endpoints(shared)) as c:
        # The last holder's key is gone with its release: its fence writes nothing more.
        stale = Txn().compare(last_key, "create_index", "==", every[-1])
        stale.success.put("locked/by", "stale")
        assert not c.txn(stale).succeeded
        got = c.get("locked/by")
        assert got is not None
        assert got.text.endswith(str(every[-1]))
        assert c.get("locked/inside") is None


def test_raftdb_error_base(client: Client) -> None:
    with pytest.raises(RaftdbError):
        client.lease_info(123456789)


@pytest.mark.deadline(30)
def test_election_hands_over_and_fences_the_deposed(shared: ProcessCluster) -> None:
    a, b = Client(endpoints(shared)), Client(endpoints(shared))
    leading_b = threading.Event()
    release_b = threading.Event()
    errors: list[BaseException] = []

    def campaign_b() -> None:
        try:
            with b.election("elections/sched", "b", key="leaders/sched") as lb:
                assert lb.fence > first.fence
                leading_b.set()
                release_b.wait(20)
        except BaseException as e:
            errors.append(e)

    with a.election("elections/sched", "a", key="leaders/sched") as first:
        got = a.get("leaders/sched")
        assert got is not None
        assert got.value == b"a"
        t = threading.Thread(target=campaign_b)
        t.start()
        assert first.proclaim("a2")
        got = a.get("leaders/sched")
        assert got is not None
        assert got.value == b"a2"
        assert not leading_b.is_set()
    wait_until("b to lead", lambda: leading_b.is_set() or None, 15)
    got = a.get("leaders/sched")
    assert got is not None
    assert got.value == b"b"
    assert not first.proclaim("a3"), "a deposed leader overwrote its successor"
    release_b.set()
    t.join(10)
    assert not errors, errors
    assert a.get("leaders/sched") is None  # resigned: no leader published
    with (
        pytest.raises(ValueError, match="under its name"),
        a.election("elections/x", "v", key="elections/x/leader"),
    ):
        pass
    a.close()
    b.close()
