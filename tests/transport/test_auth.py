"""Peer authentication: a shared secret (challenge–response) and mutual TLS, against attackers.

In-process transports on 127.0.0.1, run through ``run`` (no leaked task or
descriptor, no exception reaching the loop). Each attack says what it gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import logging
import socket
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trustme

from raftdb.raft.messages import ConfState, Message, MessageType, Snapshot, SnapshotMetadata
from raftdb.transport.frames import (
    FRAME_HEADER,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    FrameKind,
    Hello,
    SnapshotEnd,
    decode_frame,
    encode_auth,
    encode_hello,
    encode_messages,
    encode_snapshot_begin,
    encode_snapshot_chunk,
    encode_snapshot_end,
    parse_frame_header,
)
from raftdb.transport.handshake import Handshake, PeerAuth
from raftdb.transport.stream import abort

from .support import LOOPS, Node, connect_all, eventually, heartbeat, run, stop_all

SECRET = b"correct horse battery staple, 32b"
TOKEN = "raftdb"


def secret_node(node_id: int, tmp: Path, secret: bytes = SECRET, **options: Any) -> Node:
    return Node(node_id, tmp, auth=PeerAuth.with_secret(secret), **options)


def chunks_of(data: bytes) -> Callable[[Message], Iterator[bytes]]:
    return lambda _m: iter([data])


def snap(frm: int, to: int, index: int = 7) -> Message:
    meta = SnapshotMetadata(index, 2, ConfState((1, 2)))
    return Message(MessageType.SNAP, to=to, frm=frm, term=2, snapshot=Snapshot(meta, b""))


def prop(frm: int, to: int) -> Message:
    return Message(MessageType.PROP, to=to, frm=frm)


def log_text(*nodes: Node) -> str:
    return "\n".join(r.getMessage() for n in nodes for r in n.log.records)


def inbound(node: Node) -> list[str]:
    """The node's warnings about connections it accepted."""
    return [w for w in node.log.warnings() if "closing peer connection" in w]


def outbound(node: Node) -> list[str]:
    """The node's warnings about connections it dialed."""
    return [w for w in node.log.warnings() if "cannot reach peer" in w]


def assert_no_secret(text: str, *secrets: bytes) -> None:
    for secret in (SECRET, *secrets):
        for form in (secret, secret.hex(), repr(secret), secret.decode("latin-1")):
            assert str(form) not in text, "a secret or a proof reached the log"


def frames_of(data: bytes) -> list[tuple[FrameKind, Any]]:
    """Split ``data`` into decoded frames (a trailing partial frame is ignored)."""
    out = []
    while len(data) >= FRAME_HEADER.size:
        kind, length = parse_frame_header(data[: FRAME_HEADER.size], 1 << 30)
        end = FRAME_HEADER.size + length
        if len(data) < end:
            break
        out.append(decode_frame(data[:end]))
        data = data[end:]
    return out


async def exchange(port: int, data: bytes, *, wait: float = 5.0) -> bytes:
    """Connect, send ``data``, and read everything until the listener closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = b""
    try:
        with contextlib.suppress(OSError):
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(wait):
                while chunk := await reader.read(65536):
                    got += chunk
    finally:
        await abort(writer)
    return got


# -- a shared secret ----------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_secret_cluster_delivers_messages_and_snapshots(tmp_path: Path, loop: str) -> None:
    async def body() -> None:
        nodes = [secret_node(i, tmp_path, chunks=chunks_of(b"s" * 5000)) for i in (1, 2, 3)]
        await connect_all(nodes)
        try:
            nodes[0].transport.send([heartbeat(1, 2), heartbeat(1, 3), prop(1, 2)])
            nodes[2].transport.send([heartbeat(3, 1)])
            await eventually(lambda: len(nodes[1].recorder.messages) == 2, "delivery to 2")
            await eventually(lambda: len(nodes[2].recorder.messages) == 1, "delivery to 3")
            await eventually(lambda: len(nodes[0].recorder.messages) == 1, "delivery to 1")
            nodes[0].transport.send([snap(1, 2)])
            await eventually(lambda: nodes[0].recorder.sent == [(2, True)], "the snapshot")
            assert nodes[1].recorder.received[0][2] == b"s" * 5000
            assert all(n.log.warnings() == [] for n in nodes)
            assert_no_secret(log_text(*nodes))
        finally:
            await stop_all(nodes)

    run(body, loop=loop)


@pytest.mark.parametrize(
    ("a_auth", "b_auth", "dialer_says", "listener_says"),
    [
        ("other", "secret", "failed to prove it holds the peer", "closed the connection before"),
        ("none", "secret", "closed the connection before its HELLO", "uses no peer secret"),
        ("secret", "none", "closed the connection before its HELLO", "uses a peer secret"),
    ],
)
def test_mismatched_credentials_are_refused_with_one_clear_line(
    tmp_path: Path, a_auth: str, b_auth: str, dialer_says: str, listener_says: str
) -> None:
    def auth(kind: str) -> PeerAuth:
        if kind == "none":
            return PeerAuth.none()
        return PeerAuth.with_secret(SECRET if kind == "secret" else b"another secret, 16+ bytes")

    async def body() -> None:
        a = Node(1, tmp_path, auth=auth(a_auth))
        b = Node(2, tmp_path, auth=auth(b_auth))
        await connect_all([a, b])
        try:
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: bool(outbound(a)), "the dialer's warning")
            await eventually(lambda: bool(inbound(b)), "the listener's warning")
            assert dialer_says in outbound(a)[0]
            assert listener_says in inbound(b)[0]
            assert b.recorder.messages == []
            assert_no_secret(log_text(a, b), b"another secret, 16+ bytes")
        finally:
            await stop_all([a, b])

    run(body)


def test_attacker_without_the_secret_gets_nothing(tmp_path: Path) -> None:
    # An attacker who knows the protocol, the ids and the token, but not the secret.
    async def body() -> None:
        a, b = secret_node(1, tmp_path), secret_node(2, tmp_path)
        await connect_all([a, b])
        try:
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: len(b.recorder.messages) == 1, "first delivery")
            port = b.transport.listen_address[1]
            nonce = b"n" * NONCE_BYTES
            claim = encode_hello(Hello(PROTOCOL_VERSION, 1, TOKEN, 2, nonce))
            vote = Message(MessageType.VOTE, to=2, frm=1, term=10**6)
            attempts = {
                "garbage": b"\x00\x00\x00\x03\x01abc" * 100,
                "messages first": encode_messages([vote]),
                "HELLO without a challenge": encode_hello(Hello(PROTOCOL_VERSION, 1, TOKEN)),
                "a guessed proof": claim + encode_auth(b"g" * 32) + encode_messages([vote]),
                "no proof, messages": claim + encode_messages([vote]),
            }
            answers = {}
            for name, data in attempts.items():
                answers[name] = await exchange(port, data)
            # Reflection: send the listener's own proof back as the dialer's.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(claim)
            got = await reader.readexactly(len(encode_hello(Hello(2, 2, TOKEN, 1, nonce))))
            auth_frame = await reader.readexactly(FRAME_HEADER.size + 35)
            writer.write(auth_frame + encode_messages([vote]))
            with contextlib.suppress(OSError):
                async with asyncio.timeout(5):
                    assert await reader.read() == b""
            await abort(writer)
            # The listener answered a member's HELLO with its own HELLO and
            # proof (useless elsewhere: bound to this pair, this role and
            # these nonces), and nothing else, ever.
            assert answers["garbage"] == answers["messages first"] == b""
            assert answers["HELLO without a challenge"] == b""
            kinds = [k for k, _ in frames_of(answers["a guessed proof"])]
            assert kinds == [FrameKind.HELLO, FrameKind.AUTH]
            assert frames_of(got)[0][1].node_id == 2
            await eventually(lambda: len(inbound(b)) == 6, "six warnings")
            warnings = inbound(b)
            assert all("closing peer connection" in w for w in warnings), warnings
            assert sum("failed to prove" in w for w in warnings) == 2, warnings
            assert b.recorder.messages == [heartbeat(1, 2)]
            assert_no_secret(log_text(a, b), auth_frame[FRAME_HEADER.size :])
            # The real member still gets through.
            a.transport.send([heartbeat(1, 2, term=2)])
            await eventually(lambda: len(b.recorder.messages) == 2, "delivery afterwards")
        finally:
            await stop_all([a, b])

    run(body)


class Recording:
    """A TCP relay from a port of its own to ``target`` that records both directions;
    without a target, a listener that records what it gets and answers ``answer``."""

    def __init__(self, target: tuple[str, int] | None = None, answer: bytes = b"") -> None:
        self.target = target
        self.answer = answer
        self.up: list[bytes] = []  # caller -> target, one entry per connection
        self.down: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _pipe(
        self, r: asyncio.StreamReader, w: asyncio.StreamWriter | None, log: list[bytes], n: int
    ) -> None:
        with contextlib.suppress(OSError):
            while chunk := await r.read(65536):
                log[n] += chunk
                if w is not None:
                    w.write(chunk)
        if w is not None:
            w.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = len(self.up)
        self.up.append(b"")
        self.down.append(b"")
        self.writers.add(writer)
        try:
            if self.target is None:
                writer.write(self.answer)
                await self._pipe(reader, None, self.up, n)
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self.writers.add(up_writer)
            await asyncio.gather(
                self._pipe(reader, up_writer, self.up, n),
                self._pipe(up_reader, writer, self.down, n),
            )
        finally:
            writer.transport.abort()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.transport.abort()
        await self.server.wait_closed()
        for _ in range(5):
            await asyncio.sleep(0)


def test_a_recorded_exchange_replayed_gets_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        a, b = secret_node(1, tmp_path), secret_node(2, tmp_path)
        await b.transport.start()
        await a.transport.start()
        relay = Recording(b.transport.listen_address)
        a.transport.set_peers({2: await relay.start()})
        b.transport.set_peers({1: a.url})
        try:
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: len(b.recorder.messages) == 1, "delivery through the relay")
            await eventually(lambda: bool(relay.up and relay.down[0]), "a recorded exchange")
            dialer_bytes, listener_bytes = relay.up[0], relay.down[0]
            assert [k for k, _ in frames_of(dialer_bytes)][:3] == [
                FrameKind.HELLO,
                FrameKind.AUTH,
                FrameKind.MESSAGES,
            ]
            # The dialer's side replayed to the listener: its proof answers
            # another nonce, so the listener refuses it and delivers nothing.
            before = len(inbound(b))
            await exchange(b.transport.listen_address[1], dialer_bytes)
            await eventually(lambda: len(inbound(b)) == before + 1, "the refusal")
            assert "failed to prove it holds the peer secret" in inbound(b)[-1]
            assert len(b.recorder.messages) == 1
            # The listener's side replayed to a dialer: it refuses the proof
            # and sends nothing after its own HELLO.
            fake = Recording(answer=listener_bytes)
            a.transport.set_peers({2: await fake.start()})
            await eventually(lambda: any("failed to prove" in w for w in a.log.warnings()), "it")
            assert fake.up, "the dialer connected"
            for data in fake.up:
                assert [k for k, _ in frames_of(data)] == [FrameKind.HELLO], data
            await fake.stop()
            proofs = [v for d in (dialer_bytes, listener_bytes) for k, v in frames_of(d)]
            assert_no_secret(log_text(a, b), *(p for p in proofs if isinstance(p, bytes)))
        finally:
            await stop_all([a, b])
            await relay.stop()

    run(body)


def test_an_attackers_peer_url_learns_only_the_dialers_hello(tmp_path: Path) -> None:
    # A member (id 9) pointing at the attacker, as if added through the API.
    async def body() -> None:
        a = secret_node(1, tmp_path, chunks=chunks_of(b"secret data " * 100))
        await a.transport.start()
        answers = [
            b"",
            encode_hello(Hello(PROTOCOL_VERSION, 9, TOKEN, 1, b"x" * 32)) + encode_auth(b"y" * 32),
            encode_hello(Hello(PROTOCOL_VERSION, 9, TOKEN, 1)),
            encode_hello(Hello(PROTOCOL_VERSION, 9, TOKEN)),
        ]
        attackers = [Recording(answer=answer) for answer in answers]
        try:
            for attacker in attackers:
                a.transport.set_peers({9: await attacker.start()})
                a.transport.send([Message(MessageType.APP, to=9, frm=1, term=3), snap(1, 9)])
                await eventually(partial(lambda r: len(r.up) >= 2, attacker), "the connections")
                await eventually(lambda: (9, False) in a.recorder.sent, "the snapshot failure")
                a.recorder.sent.clear()
            for attacker in attackers:
                for data in attacker.up:
                    frames = frames_of(data)
                    assert [k for k, _ in frames] == [FrameKind.HELLO], data
                    hello = frames[0][1]
                    assert (hello.node_id, hello.peer_id, len(hello.nonce)) == (1, 9, 32)
                    assert len(data) == len(encode_hello(hello))
            assert a.recorder.opened  # the snapshot was opened, never sent
        finally:
            await a.transport.stop()
            for attacker in attackers:
                await attacker.stop()

    run(body)


def test_a_member_cannot_speak_for_another(tmp_path: Path) -> None:
    # Node 3 holds the secret and authenticates as 3; what it sends as node 1
    # (a proposal, a vote) changes nothing and closes its connection.
    async def body() -> None:
        b = secret_node(2, tmp_path, peers={1: "http://127.0.0.1:1", 3: "http://127.0.0.1:1"})
        await b.transport.start()
        member3 = Handshake(3, TOKEN, PeerAuth.with_secret(SECRET))
        host, port = b.transport.listen_address
        try:
            reader, writer = await member3.dial(host, port, 2, "node 2")
            writer.write(encode_messages([prop(3, 2)]))
            await eventually(lambda: b.recorder.messages == [prop(3, 2)], "its own proposal")
            forged = Message(MessageType.VOTE, to=2, frm=1, term=10**6)
            writer.write(encode_messages([prop(1, 2), forged]))
            async with asyncio.timeout(5):
                assert await reader.read() == b""
            await abort(writer)
            await eventually(lambda: bool(inbound(b)), "the warning")
            assert "refusing PROP from 1 to 2 on node 3's connection" in inbound(b)[0]
            assert b.recorder.messages == [prop(3, 2)]
        finally:
            await b.transport.stop()

    run(body)


# -- limits before and during the handshake ---------------------------------------------------


@pytest.mark.parametrize("auth", ["none", "secret"])
@pytest.mark.parametrize(
    "kind", [FrameKind.HELLO, FrameKind.MESSAGES, FrameKind.SNAPSHOT_CHUNK, FrameKind.AUTH]
)
def test_a_huge_first_frame_is_refused_from_its_header(
    tmp_path: Path, kind: FrameKind, auth: str
) -> None:
    # Only the header is sent: a listener that waited for the declared 64 MiB
    # would hold the connection until the (long) handshake deadline.
    async def body() -> None:
        options: dict[str, Any] = {"handshake_timeout": 60.0, "peers": {1: "http://127.0.0.1:1"}}
        b = (
            secret_node(2, tmp_path, **options)
            if auth == "secret"
            else Node(2, tmp_path, **options)
        )
        await b.transport.start()
        try:
            header = FRAME_HEADER.pack(64 << 20, kind)
            assert await exchange(b.transport.listen_address[1], header, wait=10) == b""
            await eventually(lambda: bool(inbound(b)), "the warning")
            (warning,) = inbound(b)
            assert "over the handshake limit of 4096" in warning or "expected HELLO" in warning
        finally:
            await b.transport.stop()

    run(body)


def test_inbound_connections_are_capped_with_one_warning(tmp_path: Path) -> None:
    async def body() -> None:
        a = secret_node(1, tmp_path)
        b = secret_node(2, tmp_path, max_inbound_connections=2, handshake_timeout=30.0)
        await b.transport.start()
        await a.transport.start()
        host, port = b.transport.listen_address
        held = [await asyncio.open_connection(host, port) for _ in range(2)]
        try:
            await eventually(lambda: len(b.transport._listener.connections) == 2, "two open")
            for _ in range(4):  # over the cap: closed at once
                assert await exchange(port, b"", wait=10) == b""
            refusals = [w for w in b.log.warnings() if "refusing peer connections" in w]
            assert len(refusals) == 1, inbound(b)
            for _, writer in held:
                await abort(writer)
            await eventually(lambda: not b.transport._listener.connections, "the held ones gone")
            a.transport.set_peers({2: b.url})
            b.transport.set_peers({1: a.url})
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: len(b.recorder.messages) == 1, "a member gets in again")
        finally:
            for _, writer in held:
                await abort(writer)
            await stop_all([a, b])

    run(body)


def test_a_handshake_that_stalls_after_hello_times_out(tmp_path: Path) -> None:
    async def body() -> None:
        b = secret_node(2, tmp_path, peers={1: "http://127.0.0.1:1"}, handshake_timeout=0.3)
        await b.transport.start()
        try:
            hello = encode_hello(Hello(PROTOCOL_VERSION, 1, TOKEN, 2, b"n" * 32))
            got = await exchange(b.transport.listen_address[1], hello, wait=10)
            assert [k for k, _ in frames_of(got)] == [FrameKind.HELLO, FrameKind.AUTH]
            await eventually(lambda: bool(inbound(b)), "the warning")
            assert inbound(b)[0].endswith("timed out")
        finally:
            await b.transport.stop()

    run(body)


# -- snapshots a peer may make this node store -----------------------------------------------


def test_a_second_concurrent_snapshot_from_one_peer_is_refused(tmp_path: Path) -> None:
    async def body() -> None:
        b = Node(2, tmp_path, peers={1: "http://127.0.0.1:1"})
        await b.transport.start()
        member1 = Handshake(1, TOKEN, PeerAuth.none())
        host, port = b.transport.listen_address
        first = await member1.dial(host, port, 2, "node 2")
        second = await member1.dial(host, port, 2, "node 2")
        try:
            first[1].write(encode_snapshot_begin(snap(1, 2)) + encode_snapshot_chunk(b"abc"))
            await eventually(lambda: any(b.dir.glob("*.part")), "the first stream's file")
            second[1].write(encode_snapshot_begin(snap(1, 2, index=8)))
            async with asyncio.timeout(5):
                assert await second[0].read() == b""
            await eventually(lambda: bool(inbound(b)), "the warning")
            assert "already arriving; refusing another" in inbound(b)[0]
            first[1].write(encode_snapshot_end(SnapshotEnd(3, 0x352441C2)))
            async with asyncio.timeout(5):
                ack = await first[0].readexactly(FRAME_HEADER.size + 2)
            assert decode_frame(ack)[0] is FrameKind.SNAPSHOT_ACK
            assert [data for _, _, data in b.recorder.received] == [b"abc"]
        finally:
            await abort(first[1])
            await abort(second[1])
            await b.transport.stop()

    run(body)


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ({"max_snapshot_bytes": 4096}, "over the limit of 4096 bytes"),
        ({"snapshot_disk_reserve": 1 << 62}, "would leave less than"),
    ],
)
def test_a_snapshot_over_the_limits_is_refused(
    tmp_path: Path, option: dict[str, int], says: str
) -> None:
    async def body() -> None:
        a = Node(1, tmp_path, chunks=chunks_of(b"z" * 10_000))
        b = Node(2, tmp_path, **option)
        await connect_all([a, b])
        try:
            a.transport.send([snap(1, 2)])
            await eventually(lambda: a.recorder.sent == [(2, False)], "the failure")
            await eventually(lambda: bool(b.log.warnings()), "the warning")
            assert says in b.log.warnings()[0]
            assert b.recorder.received == []
            await eventually(lambda: list(b.dir.iterdir()) == [], "no partial file left")
        finally:
            await stop_all([a, b])

    run(body)


def test_leftover_partial_snapshots_are_removed_at_start(tmp_path: Path) -> None:
    async def body() -> None:
        b = Node(2, tmp_path)
        b.dir.mkdir()
        (b.dir / "incoming-1-7-abc.part").write_bytes(b"half")
        await b.transport.start()
        try:
            assert list(b.dir.iterdir()) == []
        finally:
            await b.transport.stop()

    run(body)


# -- mutual TLS ------------------------------------------------------------------------------


class Certs:
    """Member certificates from a trustme CA, written to files."""

    def __init__(self, root: Path, ca: trustme.CA | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca = ca if ca is not None else trustme.CA()
        self.ca_file = root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def auth(
        self, name: str, *identities: str, trust: Path | None = None, **options: Any
    ) -> PeerAuth:
        """A certificate for ``identities`` (default: 127.0.0.1 and ``name``); trusting
        ``trust`` (default: this CA)."""
        cert = self.ca.issue_cert(*(identities or ("127.0.0.1", name)), **options)
        cert_file, key_file = self.root / f"{name}.crt", self.root / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        ca_file = trust if trust is not None else self.ca_file
        return PeerAuth.with_tls(str(cert_file), str(key_file), str(ca_file))

    def member(self, node_id: int, **options: Any) -> PeerAuth:
        return self.auth(f"raftdb-member-{node_id}", **options)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_tls_cluster_delivers_messages_and_snapshots(tmp_path: Path, loop: str) -> None:
    """Also on uvloop, which reads a connection as soon as it is made: TLS must own
    its first byte (a TLS layer started on it afterwards missed the ClientHello)."""
    certs = Certs(tmp_path / "pki")

    async def body() -> None:
        nodes = [
            Node(i, tmp_path, auth=certs.member(i), chunks=chunks_of(b"t" * 3_000_000))
            for i in (1, 2, 3)
        ]
        await connect_all(nodes)
        try:
            nodes[0].transport.send([heartbeat(1, 2), heartbeat(1, 3)])
            nodes[1].transport.send([heartbeat(2, 1)])
            await eventually(lambda: len(nodes[1].recorder.messages) == 1, "delivery to 2")
            await eventually(lambda: len(nodes[2].recorder.messages) == 1, "delivery to 3")
            await eventually(lambda: len(nodes[0].recorder.messages) == 1, "delivery to 1")
            nodes[0].transport.send([snap(1, 3)])
            await eventually(lambda: nodes[0].recorder.sent == [(3, True)], "the snapshot")
            assert nodes[2].recorder.received[0][2] == b"t" * 3_000_000
            assert all(n.log.warnings() == [] for n in nodes)
        finally:
            await stop_all(nodes)

    run(body, timeout=40, loop=loop)


def test_a_tls_listener_keeps_accepting_after_a_failed_accept(tmp_path: Path) -> None:
    """An accept that fails (here EMFILE, once) is logged, and the listener goes on."""
    certs = Certs(tmp_path / "pki")

    async def body() -> None:
        loop = asyncio.get_running_loop()
        real_accept = loop.sock_accept
        failures = [OSError(errno.EMFILE, "Too many open files")]

        async def flaky_accept(sock: socket.socket) -> tuple[socket.socket, Any]:
            if failures:
                raise failures.pop()
            return await real_accept(sock)

        loop.sock_accept = flaky_accept  # type: ignore[method-assign]
        nodes = [Node(i, tmp_path, auth=certs.member(i)) for i in (1, 2)]
        await connect_all(nodes)
        try:
            nodes[0].transport.send([heartbeat(1, 2)])
            await eventually(lambda: len(nodes[1].recorder.messages) == 1, "delivery to 2")
            assert failures == []
            assert any(
                "accepting a peer connection failed" in w and "still accepting" in w
                for n in nodes
                for w in n.log.warnings()
            ), log_text(*nodes)
        finally:
            await stop_all(nodes)
            loop.sock_accept = real_accept  # type: ignore[method-assign]

    run(body, timeout=40)


def _expired() -> dict[str, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return {
        "not_before": now - datetime.timedelta(days=10),
        "not_after": now - datetime.timedelta(days=1),
    }


@pytest.mark.parametrize(
    ("case", "dialer_says", "listener_says"),
    [
        ("expired", "closed the connection", "certificate has expired"),
        ("wrong CA", "closed the connection", "unable to get local issuer certificate"),
        (
            "names another member",
            "closed the connection",
            "names raftdb-member-3, not raftdb-member-1",
        ),
        ("no TLS", "closed the connection", "TLS handshake failed"),
    ],
)
@pytest.mark.parametrize("loop", LOOPS)
def test_tls_refuses_a_bad_dialer_and_says_why(
    tmp_path: Path, case: str, dialer_says: str, listener_says: str, loop: str
) -> None:
    certs = Certs(tmp_path / "pki")
    other = Certs(tmp_path / "other", trustme.CA())
    b_auth = certs.member(2)
    a_auth = {
        "expired": lambda: certs.member(1, **_expired()),
        "wrong CA": lambda: other.auth("raftdb-member-1", trust=certs.ca_file),
        "names another member": lambda: certs.member(3),
        "no TLS": PeerAuth.none,
    }[case]()

    # The wrong-CA dialer trusts the cluster CA, so that only its own
    # certificate is wrong. Over TLS 1.3 the dialer learns of the refusal as
    # a closed connection; the listener says why.
    async def body() -> None:
        a, b = Node(1, tmp_path, auth=a_auth), Node(2, tmp_path, auth=b_auth)
        await connect_all([a, b])
        try:
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: bool(inbound(b)), "the listener's warning")
            await eventually(lambda: bool(outbound(a)), "the dialer's warning")
            assert listener_says in inbound(b)[0], inbound(b)
            assert dialer_says in outbound(a)[0], a.log.warnings()
            assert b.recorder.messages == []
        finally:
            await stop_all([a, b])

    run(body, loop=loop)


@pytest.mark.parametrize(
    ("identities", "says"),
    [
        (("127.0.0.1", "raftdb-member-3"), "names raftdb-member-3, not raftdb-member-2"),
        (("10.9.9.9", "raftdb-member-2"), "IP address mismatch"),
        (("127.0.0.1",), "names no member, not raftdb-member-2"),
        ("another CA", "certificate verify failed: unable to get local issuer certificate"),
    ],
)
def test_tls_dialer_refuses_a_listener_that_is_not_the_member_it_dialed(
    tmp_path: Path, identities: tuple[str, ...] | str, says: str
) -> None:
    certs = Certs(tmp_path / "pki")
    if identities == "another CA":
        listener = Certs(tmp_path / "other").auth("raftdb-member-2", trust=certs.ca_file)
    else:
        listener = certs.auth("listener", *identities)

    async def body() -> None:
        a = Node(1, tmp_path, auth=certs.member(1))
        b = Node(2, tmp_path, auth=listener)
        await connect_all([a, b])
        try:
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: bool(outbound(a)), "the dialer's warning")
            assert says in outbound(a)[0], a.log.warnings()
            assert b.recorder.messages == []
        finally:
            await stop_all([a, b])

    run(body)


def test_peer_auth_never_shows_the_secret() -> None:
    auth = PeerAuth.with_secret(SECRET)
    assert SECRET.decode() not in repr(auth) + str(auth)
    with pytest.raises(ValueError, match="at least 16 bytes") as info:
        PeerAuth.with_secret(b"short")
    assert "short" not in str(info.value)


def test_bad_tls_files_fail_early(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot load the peer certificate"):
        PeerAuth.with_tls(str(tmp_path / "no.crt"), str(tmp_path / "no.key"), str(tmp_path / "ca"))


def test_secrets_never_reach_the_root_logger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def body() -> None:
        a = Node(1, tmp_path, auth=PeerAuth.with_secret(b"another secret, 16+ bytes"))
        b = secret_node(2, tmp_path)
        for n in (a, b):
            n.logger.propagate = True
        await connect_all([a, b])
        try:
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: bool(inbound(b)), "the refusal")
        finally:
            await stop_all([a, b])

    run(body)
    assert "failed to prove" in caplog.text
    assert_no_secret(caplog.text, b"another secret, 16+ bytes")
