"""A real full disk: a node whose data directory is on a small tmpfs the test mounts.

No injection: LevelDB and SQLite meet ``ENOSPC`` from the kernel, as on a
full production disk. The node must go read-only and stay up (writes ``507``
``nospace``, ``alarms: ["nospace"]`` in ``/v1/status``, ``raftdb_alarm`` 1,
stale reads served), and once a filler file is deleted take writes again by
itself, with the alarm cleared and no acknowledged write lost, also across a
restart. Needs root (``mount -t tmpfs``); skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from raftdb.testing.conformance.checks import fill, small_filesystem
from tests.chaos.cluster import poll
from tests.integration.harness import free_ports, set_pdeathsig

# The filesystem is this big (the filler leaves 256 KiB free: a few dozen
# writes fill it). Large enough that freeing the filler leaves room for
# LevelDB to reopen (it replays its write-ahead log into a table).
_SIZE = 48 << 20
_VALUE = 4096  # random bytes: LevelDB cannot compress them


@pytest.fixture
def small_disk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh tmpfs of :data:`_SIZE` bytes mounted on ``tmp_path/data`` (the
    whole data directory) or, with the parameter ``"state"``, on
    ``tmp_path/data/state`` alone (the log stays on the ordinary disk, so the
    state machine is what runs out of space); unmounted after. Skipped
    without root or where mounting is not permitted."""
    on = getattr(request, "param", "all")
    mount = tmp_path / "data" if on == "all" else tmp_path / "data" / "state"
    with small_filesystem(mount, _SIZE):
        yield mount


class _Server:
    """One ``raftdb serve`` process, a single-node cluster, data on the small disk."""

    def __init__(self, data: Path, log: Path, storage: str) -> None:
        api, peer = free_ports(2)
        self.url = f"http://127.0.0.1:{api}"
        self.argv = [sys.executable, "-m", "raftdb.cli", "serve", "--id", "1"]
        self.argv += ["--port", str(api), "--cluster", f"http://127.0.0.1:{peer}"]
        self.argv += ["--data-dir", str(data), "--tick-ms", "20", "--storage", storage]
        self.argv += ["--state-machine", "leveldb", "--request-timeout-s", "3"]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, http: httpx.Client) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, preexec_fn=set_pdeathsig
            )
        poll("the node to be ready", lambda: http.get(f"{self.url}/readyz").is_success or None, 30)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _alarm_metric(http: httpx.Client, url: str) -> float:
    for line in http.get(f"{url}/metrics").text.splitlines():
        if line.startswith('raftdb_alarm{alarm="nospace"}'):
            return float(line.split()[-1])
    raise AssertionError('no raftdb_alarm{alarm="nospace"} in /metrics')


@pytest.mark.deadline(120)
@pytest.mark.parametrize(
    ("storage", "small_disk"),
    [("leveldb", "all"), ("sqlite", "all"), ("leveldb", "state")],
    indirect=["small_disk"],
    ids=["leveldb-log-and-state", "sqlite-log-and-state", "leveldb-state-only"],
)
def test_a_full_disk_makes_the_node_read_only_until_space_returns(
    small_disk: Path, tmp_path: Path, storage: str
) -> None:
    server = _Server(tmp_path / "data", tmp_path / "node.log", storage)
    acked: dict[str, bytes] = {}
    with httpx.Client(timeout=10.0) as http:
        server.start(http)
        try:
            for n in range(5):
                value = os.urandom(_VALUE)
                assert http.put(f"{server.url}/v1/kv/k{n}", content=value).status_code == 204
                acked[f"k{n}"] = value
            filler = fill(small_disk)

            # Write until the disk refuses: each write is acknowledged or refused.
            refused: httpx.Response | None = None
            for n in range(5, 5000):
                value = os.urandom(_VALUE)
                r = http.put(f"{server.url}/v1/kv/k{n}", content=value)
                if r.status_code == 204:
                    acked[f"k{n}"] = value
                    continue
                # The write that met the full disk waits for its retried
                # save or apply and times out (504, outcome unknown); the
                # writes after it are refused before they are proposed.
                if r.status_code == 504:
                    continue
                refused = r
                break
            assert refused is not None, "the disk never filled"
            assert refused.status_code == 507, (refused.status_code, refused.text)
            body = refused.json()
            assert body["error"] == "nospace", body
            assert "No space left on device" in body["message"] or "full" in body["message"]
            assert "retry-after" in refused.headers

            # Read-only, not dead.
            status = http.get(f"{server.url}/v1/status").json()
            assert status["alarms"] == ["nospace"], status
            assert _alarm_metric(http, server.url) == 1.0
            for key in ["k0", "k3"]:
                r = http.get(f"{server.url}/v1/kv/{key}", params={"consistency": "stale"})
                assert r.status_code == 200, r.text
                assert r.content == acked[key]
            r = http.get(f"{server.url}/v1/kv/k0")  # linearizable: refused at once
            assert r.status_code == 507, r.text
            r = http.put(f"{server.url}/v1/kv/still-full", content=b"x")
            assert r.status_code == 507, r.text
            assert server.alive(), server.tail()

            # Space returns: the node takes writes again by itself.
            filler.unlink()

            def writes_again() -> bool | None:
                r = http.put(f"{server.url}/v1/kv/after", content=b"ok")
                return True if r.status_code == 204 else None

            poll("writes to resume", writes_again, 30)
            poll(
                "the alarm to clear",
                lambda: http.get(f"{server.url}/v1/status").json()["alarms"] == [] or None,
                30,
            )
            assert _alarm_metric(http, server.url) == 0.0
            assert server.alive(), server.tail()
            _check_acked(http, server.url, acked)
        finally:
            code = server.stop()
        assert code in (0, -signal.SIGTERM), server.tail()
        text = server.log.read_text(errors="replace")
        assert "cannot save to its storage" in text or "cannot apply entries" in text, text[-3000:]
        assert "works again" in text, text[-3000:]

        # Nothing acknowledged was lost on the disk either.
        server.start(http)
        try:
            _check_acked(http, server.url, acked)
            assert http.get(f"{server.url}/v1/kv/after").content == b"ok"
        finally:
            server.stop()
    for child in small_disk.iterdir():  # empty the mount before it is unmounted
        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()


def _check_acked(http: httpx.Client, url: str, acked: dict[str, bytes]) -> None:
    for key, value in acked.items():
        r = http.get(f"{url}/v1/kv/{key}")
        assert r.status_code == 200, (key, r.status_code, r.text)
        assert r.content == value, key
