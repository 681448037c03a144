"""The two disaster drills of issue 13, end to end with real processes.

1. Backup under write load, restore into a new 3-node cluster: every key
   acknowledged before the backup started is there, and the new cluster
   takes writes.
2. Two of three members killed (kill -9) and their disks wiped: the survivor
   is recovered as a cluster of one (``raftdb recover --force-new-cluster``),
   two new members are added (``POST /v1/cluster/members`` + ``join``), all
   the data is there and the cluster takes writes.

The commands run as an operator runs them: ``python -m raftdb.cli ...`` in a
subprocess, with the node's own settings file (``RAFTDB_CONFIG``) where it
needs the node's settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from raftdb.node.identity import read_cluster_id
from tests.integration.conftest import ClusterFactory
from tests.integration.harness import ProcessCluster, ServerError, wait_until

pytestmark = pytest.mark.deadline(60)

#: Longest one ``raftdb`` command may take here.
_COMMAND_TIMEOUT = 30.0


def _raftdb(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTDB_")}
    if config is not None:
        env["RAFTDB_CONFIG"] = str(config)
    return subprocess.run(
        [sys.executable, "-m", "raftdb.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=_COMMAND_TIMEOUT,
        check=False,
    )


def _write_all(c: ProcessCluster, keys: Mapping[str, str]) -> None:
    """Write ``keys`` (4 at a time) until each is acknowledged."""
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda kv: c.put_ok(*kv), keys.items()))


def _assert_all_present(c: ProcessCluster, node_id: int, acked: Mapping[str, str]) -> None:
    """Every acknowledged key reads its value on ``node_id`` (from its own state)."""
    missing = {}
    for key, value in acked.items():
        got = c.get_value(node_id, key, stale=True)
        if got != value.encode():
            missing[key] = got
    assert not missing, (
        f"node {node_id}: {len(missing)} keys wrong, e.g. {list(missing.items())[:3]}"
    )


def test_backup_under_load_restores_into_a_new_cluster(
    cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    old = cluster_factory(3, settings={"snapshot_entries": 200, "snapshot_keep_entries": 50})
    old.start_all()
    _write_all(old, {f"pre/{n:04d}": f"value-{n}" for n in range(150)})

    # Writers keep writing unique keys while the backup runs.
    acked: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w: int) -> None:
        n = 0
        while not stop.is_set():
            key, value = f"load/{w}/{n:05d}", f"w{w}-{n}"
            old.put_ok(key, value)
            with lock:
                acked[key] = value
            n += 1

    writers = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(3)]
    for t in writers:
        t.start()
    wait_until("the writers to get going", lambda: len(acked) >= 60, 20.0)
    with lock:
        before = dict(acked)  # acknowledged before the backup started
    backup = tmp_path / "backup.snap"
    endpoints = ",".join(old.nodes[i].api_url for i in (1, 2, 3))
    saved = _raftdb("snapshot", "save", str(backup), "--endpoints", endpoints, "-w", "json")
    during = len(acked) - len(before)
    stop.set()
    for t in writers:
        t.join(timeout=20)
    assert saved.returncode == 0, saved.stderr
    assert backup.exists()
    assert not backup.with_name(backup.name + ".part").exists()
    assert during > 0, "the backup was not taken under write load"

    new = cluster_factory(3)
    cluster = ",".join(new.peer_urls())
    restored = []
    for node_id in (1, 2, 3):
        done = _raftdb(
            "snapshot",
            "restore",
            str(backup),
            "--id",
            str(node_id),
            "--cluster",
            cluster,
            "--data-dir",
            str(new.nodes[node_id].data_dir),
            "-w",
            "json",
        )
        assert done.returncode == 0, done.stderr
        restored.append(done.stdout)
    ids = {read_cluster_id(new.nodes[i].data_dir) for i in (1, 2, 3)}
    assert len(ids) == 1
    assert None not in ids
    # The same file and list give the same member whatever the order.
    again = _raftdb(
        "snapshot",
        "restore",
        str(backup),
        "--id",
        "1",
        "--cluster",
        cluster,
        "--data-dir",
        str(tmp_path / "again"),
        "-w",
        "json",
    )
    assert again.returncode == 0, again.stderr

    def outcome(stdout: str) -> dict[str, object]:
        record = json.loads(stdout)
        return {k: v for k, v in record.items() if k not in ("data_dir", "seconds")}

    assert outcome(again.stdout) == outcome(restored[0])
    assert read_cluster_id(tmp_path / "again") in ids

    new.start_all()
    for node_id in (1, 2, 3):
        _assert_all_present(new, node_id, {f"pre/{n:04d}": f"value-{n}" for n in range(150)})
        _assert_all_present(new, node_id, before)
    # The backup is one point in time: each writer's keys in it are a prefix of
    # what it wrote (its writes were sequential), with the values it wrote, and
    # they are all the keys the backup counted.
    r = new.client.get(
        new.url(1, "/v1/kv"),
        params={"prefix": "load/", "values": "true", "limit": "10000", "consistency": "stale"},
    )
    assert r.status_code == 200, r.text
    assert "link" not in r.headers
    listed = {item["key"]: item["value"] for item in r.json()}
    for w in range(3):
        mine = sorted(k for k in listed if k.startswith(f"load/{w}/"))
        assert mine == [f"load/{w}/{n:05d}" for n in range(len(mine))]
        assert all(listed[k] == f"w{w}-{int(k.rsplit('/', 1)[1])}" for k in mine)
    assert json.loads(saved.stdout)["keys"] == 150 + len(listed)
    assert new.member_ids(1) == [1, 2, 3]
    assert [m["peer_url"] for m in new.members(2)] == new.peer_urls()
    # The new cluster takes writes, and is not the old one.
    new.put_ok("after/restore", "yes")
    for node_id in (1, 2, 3):
        new.wait_value(node_id, "after/restore", b"yes", stale=True)
    assert old.get_value(1, "after/restore") is None


def test_a_survivor_of_a_lost_quorum_is_recovered_and_gets_new_members(
    cluster_factory: ClusterFactory,
) -> None:
    c = cluster_factory(3, settings={"snapshot_entries": 100, "snapshot_keep_entries": 20})
    c.start_all()
    acked = {f"k/{n:04d}": f"v-{n}" for n in range(250)}
    _write_all(c, acked)
    leader = c.wait_leader()
    survivor = c.followers(leader)[0]
    lost = sorted(set(c.nodes) - {survivor})
    # Every acknowledged write is on a majority, not necessarily on the survivor:
    # wait until it has all of them, as the drill needs a survivor that does.
    c.wait_applied(survivor, c.status(leader)["commit_index"])

    for node_id in lost:
        c.kill(node_id)
        c.wipe(node_id)
    node = c.nodes[survivor]
    before = read_cluster_id(node.data_dir)

    def recover(*flags: str) -> subprocess.CompletedProcess[str]:
        return _raftdb(
            "recover",
            "--id",
            str(survivor),
            "--cluster",
            ",".join(c.peer_urls()),
            "--data-dir",
            str(node.data_dir),
            *flags,
            config=node.config_path,
        )

    running = recover("--force-new-cluster")  # the survivor still runs: refused
    assert running.returncode == 1, running.stderr
    assert "in use" in running.stderr
    assert running.stderr.count("\n") == 1
    c.kill(survivor)
    dry = recover()
    assert dry.returncode == 2, dry.stderr
    assert "--force-new-cluster" in dry.stderr
    assert "recovery plan" in dry.stdout
    done = recover("--force-new-cluster")
    assert done.returncode == 0, done.stderr
    after = read_cluster_id(node.data_dir)
    assert after is not None
    assert after != before

    c.start(survivor)
    assert c.member_ids(survivor) == [survivor]
    _assert_all_present(c, survivor, acked)
    c.put_ok("alone", "yes", node_id=survivor)

    for node_id in lost:
        r = c.client.post(
            c.url(survivor, "/v1/cluster/members"),
            json={"id": node_id, "peer_url": c.nodes[node_id].peer_url},
        )
        assert r.status_code == 201, r.text
        c.start(node_id, join=True)
    commit = c.status(survivor)["commit_index"]
    for node_id in lost:
        c.wait_applied(node_id, commit)
        _assert_all_present(c, node_id, {**acked, "alone": "yes"})
        joined_id = read_cluster_id(c.nodes[node_id].data_dir)
        assert joined_id == after  # adopted from the survivor in the handshake
    assert c.member_ids(lost[0]) == [1, 2, 3]

    c.put_ok("together", "yes")
    for node_id in c.nodes:
        c.wait_value(node_id, "together", b"yes", stale=True)
    # The cluster survives the loss of any one member now.
    c.kill(survivor)
    try:
        c.put_ok("without-the-survivor", "yes", timeout=20.0)
    except ServerError:
        raise AssertionError("the two new members have no quorum together") from None
    assert c.get_value(lost[0], "without-the-survivor") == b"yes"
