"""Faults against real raftdb processes: kill -9, whole-cluster restarts, lost disks,
pauses (SIGSTOP, as a partition), bad input from clients and from the peer port.

"Acknowledged" means a ``204`` for the write: those must never be lost. A write
that failed (connection refused, 503, 504) is not counted either way.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from functools import partial

import httpx
import msgpack
import pytest

from tests.integration.conftest import ClusterFactory
from tests.integration.harness import (
    HTTP_TIMEOUT,
    ProcessCluster,
    retry_unavailable,
    wait_until,
)

TICK_MS = 25
ELECTION_TICKS = 10
#: The longest randomised election timeout, in seconds.
ELECTION_TIMEOUT = 2 * ELECTION_TICKS * TICK_MS / 1000


class Writer(threading.Thread):
    """Writes ``<prefix><n>`` keys one after another, round robin over ``urls``,
    and records the acknowledged ones. Failed attempts move on to the next key."""

    def __init__(self, urls: dict[int, str], prefix: str) -> None:
        super().__init__(name=f"writer-{prefix}", daemon=True)
        self.urls = urls
        self.prefix = prefix
        self.acked: dict[str, bytes] = {}
        self.failures = 0
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        ids = sorted(self.urls)
        n = 0
        with httpx.Client(timeout=httpx.Timeout(8.0, connect=1.0)) as http:
            while not self.halt.is_set():
                n += 1
                key = f"{self.prefix}{n:05d}"
                value = f"value-{n}".encode()
                node = ids[n % len(ids)]
                try:
                    r = http.put(f"{self.urls[node]}/v1/kv/{key}", content=value)
                except httpx.HTTPError:
                    r = None
                if r is not None and r.status_code == 204:
                    with self.lock:
                        self.acked[key] = value
                else:
                    self.failures += 1
                    self.halt.wait(0.02)  # a dead node refuses at once: do not spin

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def wait_for(self, count: int, timeout: float) -> None:
        wait_until(f"{count} acknowledged writes", lambda: self.count() >= count, timeout)

    def finish(self) -> dict[str, bytes]:
        self.halt.set()
        self.join(15)
        assert not self.is_alive(), "the writer did not stop"
        with self.lock:
            return dict(self.acked)


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    """Writer threads the test starts; all stopped at the end."""
    started: list[Writer] = []
    try:
        yield started
    finally:
        for w in started:
            w.halt.set()
        for w in started:
            w.join(15)


def start_writer(c: ProcessCluster, writers: list[Writer], prefix: str) -> Writer:
    w = Writer({i: n.api_url for i, n in c.nodes.items()}, prefix)
    writers.append(w)
    w.start()
    return w


def assert_all_present(
    c: ProcessCluster, node_id: int, acked: dict[str, bytes], *, stale: bool = False
) -> None:
    missing = {}
    for key, value in sorted(acked.items()):
        got = c.get_value(node_id, key, stale=stale)
        if got != value:
            missing[key] = got
    assert not missing, f"node {node_id} lost acknowledged writes: {sorted(missing.items())[:10]}"


def fault_cluster(factory: ClusterFactory, size: int = 3, **settings: object) -> ProcessCluster:
    return factory(size, tick_ms=TICK_MS, election_ticks=ELECTION_TICKS, settings=settings)


# -- crashes -------------------------------------------------------------------------


@pytest.mark.deadline(90)
def test_leader_killed_under_writes(cluster_factory: ClusterFactory, writers: list[Writer]) -> None:
    c = fault_cluster(cluster_factory)
    c.start_all()
    old = c.wait_leader()
    w = start_writer(c, writers, "w-")
    w.wait_for(30, 20.0)

    c.kill(old)
    killed_at = time.monotonic()
    new = c.wait_leader(among=c.followers(old), exclude=old, timeout=20.0)
    elected_in = time.monotonic() - killed_at
    # "A few election timeouts": generous for a loaded 2-core machine.
    assert elected_in < 10 * ELECTION_TIMEOUT, f"no new leader for {elected_in:.2f}s"

    before = w.count()
    w.wait_for(before + 30, 20.0)  # writes go on under the new leader
    acked = w.finish()

    for i in c.live_ids():
        assert_all_present(c, i, acked)

    # The old leader restarts from its disk and catches up.
    c.start(old)
    commit = c.status(new)["commit_index"]
    c.wait_applied(old, commit)
    assert_all_present(c, old, acked, stale=True)
    assert_all_present(c, old, acked)


@pytest.mark.deadline(90)
def test_whole_cluster_killed_and_restarted(
    cluster_factory: ClusterFactory, writers: list[Writer]
) -> None:
    c = fault_cluster(cluster_factory)
    c.start_all()
    c.wait_leader()
    w = start_writer(c, writers, "k-")
    w.wait_for(60, 30.0)
    for i in (1, 2, 3):  # mid-stream: the last acknowledged writes must survive too
        c.kill(i)
    acked = w.finish()

    c.start_all()
    c.wait_leader()
    for i in (1, 2, 3):
        assert_all_present(c, i, acked)


@pytest.mark.deadline(120)
def test_wiped_follower_catches_up_through_a_snapshot(cluster_factory: ClusterFactory) -> None:
    c = fault_cluster(cluster_factory, snapshot_entries=50, snapshot_keep_entries=10)
    c.start_all()
    leader = c.wait_leader()
    follower = c.followers(leader)[0]
    c.kill(follower)

    acked: dict[str, bytes] = {}
    for n in range(200):
        key, value = f"s-{n:04d}", f"snap-{n}".encode()
        c.put_ok(key, value)
        acked[key] = value
    leader = c.wait_leader()
    wait_until(
        "the leader to compact its log",
        lambda: c.status(leader)["first_index"] > 1,
        10.0,
        on_timeout=lambda: c.log_tail(leader),
    )
    assert c.status(leader)["first_index"] > 50

    # The follower lost its disk. Back under its old identity it must not serve
    # what it no longer has (Raft cannot take it back as it is: the leader
    # remembers entries it acknowledged): a read is refused, never a wrong 404.
    c.wipe(follower)
    c.start(follower, join=True, wait=False)
    probe_key, probe_value = "s-0000", acked["s-0000"]

    def refused_or_right() -> bool | None:
        # The node stops serving, then exits (a failed node takes its server down):
        # look at its log first, and take a refused connection as that exit.
        if "stopped serving" in c.log_tail(follower):
            return True
        try:
            r = c.get(follower, probe_key)
        except httpx.TransportError:
            return True if "stopped serving" in c.log_tail(follower) else None
        assert r.status_code in (200, 503, 504), (r.status_code, r.text)
        if r.status_code == 200:
            assert r.content == probe_value, r.content
        return True if r.status_code == 200 or "stopped serving" in c.log_tail(follower) else None

    wait_until("the wiped node to answer or give up", refused_or_right, 15.0)
    c.kill(follower)

    # The way back (docs/operations.md): remove it, wipe it, add it again, start it with
    # join. It catches up through a snapshot: the log it would need is compacted.
    r = c.client.delete(c.url(leader, f"/v1/cluster/members/{follower}"))
    assert r.status_code == 204, r.text
    c.wipe(follower)
    r = c.client.post(
        c.url(leader, "/v1/cluster/members"),
        json={"id": follower, "peer_url": c.nodes[follower].peer_url},
    )
    assert r.status_code == 201, r.text
    c.start(follower, join=True)
    c.wait_applied(follower, c.status(leader)["commit_index"])
    # The restored state is visible (applied index) as soon as the state machine has
    # it; the log thread then counts the install and saves the snapshot to the log,
    # so both are awaited, not read at once (read at once, they failed in CI).
    wait_until(
        "the follower to count its snapshot install and start its log after it",
        lambda: (
            c.metric(follower, "raftdb_snapshots_restored_total") >= 1
            and c.status(follower)["first_index"] > 1
        ),
        10.0,
        on_timeout=lambda: c.log_tail(follower),
    )
    assert_all_present(c, follower, acked, stale=True)
    assert c.member_ids(follower) == [1, 2, 3]

    # And it keeps up with new writes through the log.
    c.put_ok("after-snapshot", b"ok")
    c.wait_value(follower, "after-snapshot", b"ok", stale=True)
    assert_all_present(c, follower, acked)


# -- linearizable reads -----------------------------------------------------------


@pytest.mark.deadline(60)
def test_read_after_acknowledged_write_on_any_node(cluster: ProcessCluster) -> None:
    c = cluster
    for n in range(30):
        writer_node = n % 3 + 1
        value = f"v{n}".encode()
        r = retry_unavailable(partial(c.put, writer_node, "lin", value))
        assert r.status_code == 204, r.text
        for reader in (1, 2, 3):
            # A 503 (no leader for a moment) is retried; a stale 200 never passes.
            r = retry_unavailable(partial(c.get, reader, "lin"))
            assert r.status_code == 200, (reader, r.status_code, r.text)
            assert r.content == value, f"node {reader} read {r.content!r} after {value!r}"


@pytest.mark.deadline(90)
def test_paused_old_leader_does_not_serve_a_stale_linearizable_read(
    cluster_factory: ClusterFactory,
) -> None:
    c = fault_cluster(cluster_factory, request_timeout_s=3.0)
    c.start_all()
    c.put_ok("fenced", b"old")
    for i in (1, 2, 3):
        c.wait_value(i, "fenced", b"old", stale=True)

    old = c.wait_leader()
    c.pause(old)
    others = c.followers(old)
    c.wait_leader(among=others, exclude=old, timeout=20.0)
    c.put_ok("fenced", b"new", timeout=20.0)

    # One read is already queued on the paused node's socket when it resumes; the
    # other is sent right after. Neither may answer the old value.
    answers: list[httpx.Response | BaseException] = []

    def read() -> None:
        try:
            with httpx.Client(timeout=HTTP_TIMEOUT) as http:
                answers.append(http.get(c.url(old, "/v1/kv/fenced")))
        except httpx.HTTPError as e:
            answers.append(e)

    queued = threading.Thread(target=read, daemon=True)
    queued.start()
    wait_until("the queued read to connect", lambda: _connections_to(c, old) or None, 5.0)
    c.resume(old)
    read()
    queued.join(20)
    assert not queued.is_alive()

    for answer in answers:
        if isinstance(answer, BaseException):
            continue  # no answer at all is not a stale answer
        assert answer.status_code in (200, 503, 504), (answer.status_code, answer.text)
        if answer.status_code == 200:
            assert answer.content == b"new", "the old leader served a stale linearizable read"
    # Once it has heard from the new leader it serves the new value.
    c.wait_value(old, "fenced", b"new", timeout=20.0)


def _connections_to(c: ProcessCluster, node_id: int) -> bool:
    """Whether a TCP connection to node ``node_id``'s API port is established (Linux)."""
    port = f"{c.nodes[node_id].api_port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        return True
    for row in rows:
        parts = row.split()
        # local_address rem_address st: a client socket whose remote port is ours, ESTABLISHED
        if parts[2].endswith(":" + port) and parts[3] == "01":
            return True
    return False


# -- bad input ------------------------------------------------------------------------


def _error_body(r: httpx.Response) -> dict[str, object]:
    body = r.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str), body
    assert isinstance(body.get("message"), str), body
    return body


def test_oversized_value_is_413(shared_cluster: ProcessCluster) -> None:
    c = shared_cluster
    r = c.put(1, "big", b"x" * (1024 * 1024 + 1))  # max_value_bytes defaults to 1 MiB
    assert r.status_code == 413, r.text
    _error_body(r)
    r = c.put(2, "bigger", b"x" * (2 * 1024 * 1024))  # over max_request_bytes (1.5 MiB)
    assert r.status_code == 413, r.text
    r = c.put(1, "k" * 5000, b"v")  # max_key_bytes defaults to 4 KiB
    assert r.status_code == 413, r.text
    assert c.get(1, "big").status_code == 404
    c.put_ok("small", b"fine", node_id=1)


def test_malformed_member_json_is_400(shared_cluster: ProcessCluster) -> None:
    c = shared_cluster
    url = c.url(1, "/v1/cluster/members")
    for body in (b"{not json", b"[]", b'{"id": "four"}', b'{"id": 4}', b"\xff\xfe"):
        r = c.client.post(url, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (body, r.status_code, r.text)
        _error_body(r)
    assert c.member_ids(1) == [1, 2, 3]


def test_unknown_member_delete_is_404(shared_cluster: ProcessCluster) -> None:
    c = shared_cluster
    r = c.client.delete(c.url(1, "/v1/cluster/members/99"))
    assert r.status_code == 404, r.text
    _error_body(r)
    assert c.member_ids(1) == [1, 2, 3]


def _frame(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body), kind) + body


def _send_raw(port: int, data: bytes, *, expect_close: bool) -> None:
    """Send ``data`` to the peer port; with ``expect_close``, wait for the node to hang up."""
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as s:
        try:
            s.sendall(data)
        except OSError:
            return  # already closed on us: fine
        if not expect_close:
            return
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return
            except TimeoutError:
                break
            if not chunk:
                return
        raise AssertionError(f"the peer port kept a connection open after {data[:40]!r}")


def test_garbage_on_the_peer_port(shared_cluster: ProcessCluster) -> None:
    c = shared_cluster
    target = c.wait_leader()
    port = c.nodes[target].peer_port
    term = c.status(target)["term"]
    rng = random.Random(4)

    hello_unknown = _frame(1, msgpack.packb([1, 99, "raftdb"]))
    vote = [5, target, 99, 10**6, 10**6, 10**6, [], 0, False, 0, None, b""]  # VOTE, huge term
    cases = [
        (bytes(rng.getrandbits(8) for _ in range(4096)), True),  # random bytes
        (struct.pack(">IB", 0xFFFFFFFF, 1) + b"x" * 64, True),  # oversized length
        (struct.pack(">IB", 8, 200) + b"x" * 8, True),  # unknown frame kind
        (_frame(1, b"\xc1\xc1\xc1"), True),  # HELLO that is not msgpack
        (_frame(1, msgpack.packb([1, 1, "another-cluster"])), True),  # wrong cluster token
        (hello_unknown + _frame(2, msgpack.packb([vote])), True),  # from an unknown member
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),  # somebody curls the peer port
        (struct.pack(">IB", 100, 1) + b"abc", False),  # truncated frame, then we hang up
        (b"", False),  # connect and hang up
    ]
    for data, expect_close in cases:
        _send_raw(port, data, expect_close=expect_close)

    # The node keeps serving, and nothing changed: no term jump, same members.
    status = c.status(target)
    assert status["term"] < 10**6, status
    assert status["term"] <= term + 2, (term, status)  # at most an unrelated election or two
    assert sorted(m["id"] for m in status["members"]) == [1, 2, 3]
    c.put_ok("after-garbage", b"still-here", node_id=target)
    for i in (1, 2, 3):
        assert c.get_value(i, "after-garbage") == b"still-here"
    assert c.is_ready(target)


def test_bad_input_leaves_every_node_ready(shared_cluster: ProcessCluster) -> None:
    c = shared_cluster
    for i in (1, 2, 3):
        assert c.nodes[i].running, c.log_tail(i)
        assert c.is_ready(i), c.log_tail(i)
    c.put_ok("still-writable", b"yes")
