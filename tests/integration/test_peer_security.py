"""Peer authentication between real processes: a shared secret, and mutual TLS.

Each cluster takes writes, survives a leader killed with SIGKILL, and shrugs
off an attacker on its peer port; the secret cluster also has an attacker's
listener added as a member through the API, which must learn nothing but the
dialers' HELLOs. No node's output may hold the secret.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trustme

from raftdb.transport.frames import FrameKind
from tests.integration.conftest import ClusterFactory
from tests.integration.harness import ProcessCluster, wait_until
from tests.transport.test_auth import frames_of

SECRET = "integration peer secret, long enough"


class RecordingListener:
    """A TCP listener in a thread that records every byte of every connection, answers nothing."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[bytearray] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            data = bytearray()
            with self.lock:
                self.connections.append(data)
            threading.Thread(target=self._read, args=(conn, data), daemon=True).start()

    def _read(self, conn: socket.socket, data: bytearray) -> None:
        conn.settimeout(0.2)
        with conn:
            while not self.done.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                with self.lock:
                    data += chunk

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.sock.close()


def _attack_peer_port(port: int, member: int, target: int) -> None:
    """Claim to be ``member``: a HELLO with a challenge, then a guessed proof and a huge vote."""
    hello = msgpack.packb([2, member, "raftdb", target, b"n" * 32])
    guess = msgpack.packb([b"g" * 32])
    vote = [5, target, member, 10**6, 10**6, 10**6, [], 0, False, 0, None, b""]
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as s:
        s.sendall(struct.pack(">IB", len(hello), 1) + hello)
        got = b""
        while len(frames_of(got)) < 2:
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
        # The listener's HELLO and its proof, bound to this exchange: nothing else.
        assert [k for k, _ in frames_of(got)] == [FrameKind.HELLO, FrameKind.AUTH]
        s.sendall(struct.pack(">IB", len(guess), 7) + guess + _messages([vote]))
        with contextlib.suppress(OSError):
            assert s.recv(65536) == b""


def _messages(messages: list[Any]) -> bytes:
    body: bytes = msgpack.packb(messages)
    return struct.pack(">IB", len(body), 2) + body


def _survives_a_leader_kill(c: ProcessCluster, restart: Any) -> None:
    c.put_ok("before", b"1")
    leader = c.wait_leader()
    c.kill(leader)
    rest = [i for i in (1, 2, 3) if i != leader]
    new = c.wait_leader(among=rest)
    assert new != leader
    c.put_ok("after-kill", b"2", node_id=new)
    restart(leader)
    c.wait_value(leader, "after-kill", b"2", stale=True)


def _logs(c: ProcessCluster) -> str:
    return "\n".join(n.log_path.read_text(errors="replace") for n in c.nodes.values())


@pytest.mark.deadline(120)
def test_a_secret_cluster_works_and_refuses_strangers(cluster_factory: ClusterFactory) -> None:
    c = cluster_factory(3, settings={"peer_secret": SECRET})
    c.start_all()
    target = c.wait_leader()
    term = c.status(target)["term"]
    _attack_peer_port(c.nodes[target].peer_port, member=c.followers(target)[0], target=target)
    status = c.status(target)
    assert status["term"] <= term + 2, status  # the forged vote changed nothing

    attacker = RecordingListener()
    try:
        r = c.client.post(
            c.url(target, "/v1/cluster/members"), json={"id": 4, "peer_url": attacker.url}
        )
        assert r.status_code == 201, r.text
        wait_until("dialers at the attacker", lambda: len(attacker.connections) >= 3 or None, 20)
        c.put_ok("with-an-attacker-member", b"yes")  # 3 of 4 voters still commit
        with attacker.lock:
            seen = [bytes(d) for d in attacker.connections]
        for data in seen:
            if not data:
                continue  # connected, not yet written
            frames = frames_of(data)
            assert [k for k, _ in frames] == [FrameKind.HELLO], data
            hello = frames[0][1]
            assert hello.node_id in (1, 2, 3)
            assert (hello.peer_id, len(hello.nonce)) == (4, 32)
        r = c.client.delete(c.url(c.wait_leader(), "/v1/cluster/members/4"))
        assert r.status_code == 204, r.text
    finally:
        attacker.close()

    _survives_a_leader_kill(c, lambda i: c.start(i))
    logs = _logs(c)
    assert "failed to prove it holds the peer secret" in logs
    assert SECRET not in logs


def _tls_settings(root: Path, ids: list[int]) -> dict[int, dict[str, Any]]:
    ca = trustme.CA()
    root.mkdir(parents=True, exist_ok=True)
    ca_file = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    out: dict[int, dict[str, Any]] = {}
    for i in ids:
        cert = ca.issue_cert("127.0.0.1", f"raftdb-member-{i}")
        cert_file, key_file = root / f"member-{i}.crt", root / f"member-{i}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        out[i] = {
            "peer_cert_file": str(cert_file),
            "peer_key_file": str(key_file),
            "peer_ca_file": str(ca_file),
        }
    return out


@pytest.mark.deadline(120)
def test_a_tls_cluster_works_and_refuses_strangers(
    cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    c = cluster_factory(3)
    tls = _tls_settings(tmp_path / "pki", [1, 2, 3])
    for i in (1, 2, 3):
        c.start(i, wait=False, **tls[i])
    for i in (1, 2, 3):
        c.wait_ready(i)
    target = c.wait_leader()
    # A stranger without a certificate: a clear-text HELLO is refused.
    hello = msgpack.packb([2, c.followers(target)[0], "raftdb"])
    with socket.create_connection(("127.0.0.1", c.nodes[target].peer_port), timeout=5.0) as s:
        s.sendall(struct.pack(">IB", len(hello), 1) + hello)
        with contextlib.suppress(OSError):
            assert s.recv(65536) == b""
    wait_until("the refusal logged", lambda: "TLS handshake failed" in _logs(c) or None, 10)
    _survives_a_leader_kill(c, lambda i: c.start(i, **tls[i]))
