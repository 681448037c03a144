"""etcd raftexample's README walkthrough, verbatim, against real raftdb processes.

raftexample::

    curl -L http://127.0.0.1:12380/my-key -XPUT -d bar
    curl -L http://127.0.0.1:32380/my-key
    curl -L http://127.0.0.1:12380/4 -XPOST -d http://127.0.0.1:42379
    raftexample --id 4 --cluster http://127.0.0.1:12379,...,http://127.0.0.1:42379 \\
        --port 42380 --join
    curl -L http://127.0.0.1:12380/3 -XDELETE

Here the ports are free ones found at run time; everything else is as above.
``curl -d`` sends ``Content-Type: application/x-www-form-urlencoded`` and
``-L`` follows redirects: the httpx requests do the same. A ``503`` (no leader
for a moment: nothing was done) is retried, as a client told ``Retry-After`` would.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from functools import partial
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ClusterFactory
from tests.integration.harness import (
    Launcher,
    ProcessCluster,
    ServerError,
    retry_unavailable,
    wait_until,
)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _members_are(c: ProcessCluster, node_id: int, ids: list[int]) -> bool:
    return c.member_ids(node_id) == ids


def _removed_and_says_so(c: ProcessCluster, node_id: int) -> bool:
    """Node ``node_id`` is not ready and answers a read with a 503 naming its removal."""
    if c.is_ready(node_id):
        return False
    r = c.client.get(c.url(node_id, "/my-key"), timeout=5.0)
    if r.status_code != 503:
        return False
    body: Any = r.json()
    return isinstance(body, dict) and body.get("error") == "node_removed"


@pytest.mark.deadline(90)
def test_walkthrough(cluster: ProcessCluster) -> None:
    c = cluster
    http = c.client

    def put(i: int, path: str, body: bytes) -> httpx.Response:
        return retry_unavailable(partial(http.put, c.url(i, path), content=body, headers=FORM))

    def get(i: int, path: str) -> httpx.Response:
        return retry_unavailable(partial(http.get, c.url(i, path)))

    # curl -L http://127.0.0.1:12380/my-key -XPUT -d bar
    r = put(1, "/my-key", b"bar")
    assert r.status_code == 204, r.text

    # curl -L http://127.0.0.1:<each>/my-key: every node answers bar (linearizable by
    # default, so no waiting for replication is needed).
    for i in (1, 2, 3):
        r = get(i, "/my-key")
        assert r.status_code == 200, (i, r.status_code, r.text)
        assert r.content == b"bar", i

    # curl -L http://127.0.0.1:12380/4 -XPOST -d http://127.0.0.1:42379
    node4 = c.add_node(4)
    r = retry_unavailable(
        partial(http.post, c.url(1, "/4"), content=node4.peer_url.encode(), headers=FORM)
    )
    assert r.status_code == 204, r.text
    assert c.member_ids(1) == [1, 2, 3, 4]

    # raftexample --id 4 --cluster <the four peer URLs> --port 42380 --join
    c.start(4, join=True, cluster=c.peer_urls([1, 2, 3, 4]))
    r = get(4, "/my-key")
    assert r.status_code == 200, r.text
    assert r.content == b"bar"

    # The new member takes writes and serves them everywhere.
    r = put(4, "/my-key", b"baz")
    assert r.status_code == 204, r.text
    for i in (1, 2, 3, 4):
        assert get(i, "/my-key").content == b"baz", i

    # curl -L http://127.0.0.1:12380/3 -XDELETE
    r = retry_unavailable(partial(http.delete, c.url(1, "/3")))
    assert r.status_code == 204, r.text
    for i in (1, 2, 4):
        wait_until(
            f"node {i} to apply the removal of 3",
            partial(_members_are, c, i, [1, 2, 4]),
            10.0,
        )

    # The cluster of 1, 2, 4 goes on (node 3 may have been the leader).
    c.wait_leader(among=[1, 2, 4])
    c.put_ok("after-removal", b"yes", node_id=None)
    for i in (1, 2, 4):
        assert c.get_value(i, "after-removal") == b"yes"

    # The removed node stops serving and says so.
    wait_until(
        "node 3 to say it was removed",
        lambda: _removed_and_says_so(c, 3),
        15.0,
        interval=0.1,
        on_timeout=lambda: c.log_tail(3),
    )


def _curl(*args: str) -> str:
    """Run ``curl`` with the README's arguments (plus -f, -sS and a time bound); its stdout.

    A 503 (no leader for a moment) is retried for up to 15 s."""
    argv = ["curl", *args, "-fsS", "--max-time", "15"]
    deadline = time.monotonic() + 15.0
    while True:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode == 0:
            return done.stdout
        if "error: 503" not in done.stderr or time.monotonic() >= deadline:
            raise ServerError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr}")
        time.sleep(0.1)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.deadline(90)
def test_walkthrough_with_curl(cluster_factory: ClusterFactory) -> None:
    c = cluster_factory(3)
    c.start_all()
    n = c.nodes
    api = {i: f"http://127.0.0.1:{node.api_port}" for i, node in n.items()}

    _curl("-L", f"{api[1]}/my-key", "-XPUT", "-d", "bar")
    for i in (1, 2, 3):
        assert _curl("-L", f"{api[i]}/my-key") == "bar"

    node4 = c.add_node(4)
    _curl("-L", f"{api[1]}/4", "-XPOST", "-d", node4.peer_url)
    c.start(4, join=True, cluster=c.peer_urls([1, 2, 3, 4]))
    assert _curl("-L", f"{node4.api_url}/my-key") == "bar"

    _curl("-L", f"{api[1]}/3", "-XDELETE")
    wait_until("the removal of 3 to apply on 1", lambda: c.member_ids(1) == [1, 2, 4], 10.0)


@pytest.mark.deadline(60)
def test_the_three_ways_to_start_a_node_make_one_cluster(cluster_factory: ClusterFactory) -> None:
    """``raftdb serve`` flags, ``RAFTDB_*`` + uvicorn, and a TOML file + uvicorn."""
    c = cluster_factory(3)
    c.start(1, launcher="cli", wait=False)
    c.start(2, launcher="env", wait=False)
    c.start(3, launcher="toml", wait=False)
    for i in (1, 2, 3):
        c.wait_ready(i)
    c.put_ok("three-ways", b"one cluster")
    for i in (1, 2, 3):
        assert c.get_value(i, "three-ways") == b"one cluster"
        assert c.member_ids(i) == [1, 2, 3]


@pytest.mark.parametrize("launcher", ["cli", "env", "toml"])
def test_a_bad_setting_stops_the_node_with_one_line(
    cluster_factory: ClusterFactory, launcher: Launcher
) -> None:
    c = cluster_factory(1)
    node = c.start(1, launcher=launcher, wait=False, election_ticks=1, heartbeat_ticks=1)
    assert node.proc is not None
    code = node.proc.wait(30)
    assert code != 0
    lines = [line for line in c.log_tail(1, 20).splitlines() if "election_ticks" in line]
    assert lines, c.log_tail(1)
    assert "Traceback" not in c.log_tail(1), c.log_tail(1)
