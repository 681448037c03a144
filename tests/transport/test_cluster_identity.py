"""Cluster identities in the handshake: the HELLO field, the rules, adoption.

Wire checks first (a node without an identity sends exactly the old bytes),
then the rules of :mod:`raftdb.transport.cluster_identity` on their own, then
real transports on 127.0.0.1 (``run``: no leaked task or descriptor).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import msgpack
import pytest

from raftdb.transport.cluster_identity import ClusterIdentity
from raftdb.transport.frames import (
    FRAME_HEADER,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    FrameKind,
    Hello,
    WireError,
    decode_frame,
    decode_hello,
    encode_hello,
    frame,
)
from raftdb.transport.handshake import PeerAuth
from raftdb.transport.stream import abort

from .support import Node, connect_all, eventually, heartbeat, run, stop_all

X = "0123456789abcdef"
Y = "fedcba9876543210"
SECRET = b"an identity test secret, 32 byte"


# -- the HELLO field -------------------------------------------------------------------------


def test_hello_with_a_cluster_id_round_trips() -> None:
    for nonce in (b"", b"n" * NONCE_BYTES):
        hello = Hello(PROTOCOL_VERSION, 1, "raftdb", 2, nonce, X)
        assert decode_frame(encode_hello(hello)) == (FrameKind.HELLO, hello)


def test_hello_without_a_cluster_id_is_the_old_five_fields() -> None:
    # Byte for byte what a node before identities sent, so older peers decode it.
    old = frame(
        FrameKind.HELLO, msgpack.packb([PROTOCOL_VERSION, 1, "raftdb", 2, b""], use_bin_type=True)
    )
    assert encode_hello(Hello(PROTOCOL_VERSION, 1, "raftdb", 2)) == old
    assert decode_frame(old) == (FrameKind.HELLO, Hello(PROTOCOL_VERSION, 1, "raftdb", 2))


@pytest.mark.parametrize(
    "cluster_id", [X.upper(), X[:15], X + "0", b"0123456789abcdef", 12, None, "g" * 16]
)
def test_decode_hello_rejects_a_bad_cluster_id(cluster_id: Any) -> None:
    body = msgpack.packb([PROTOCOL_VERSION, 1, "raftdb", 2, b"", cluster_id], use_bin_type=True)
    with pytest.raises(WireError, match="cluster id"):
        decode_hello(body)


def test_encode_hello_refuses_a_bad_or_unaddressed_cluster_id() -> None:
    with pytest.raises(ValueError, match="16 lowercase hex"):
        encode_hello(Hello(PROTOCOL_VERSION, 1, "raftdb", 2, cluster_id="XYZ"))
    with pytest.raises(ValueError, match="name its peer"):
        encode_hello(Hello(PROTOCOL_VERSION, 1, "raftdb", cluster_id=X))


# -- the rules -------------------------------------------------------------------------------


class Recorded:
    """An ``adopt`` callback: records what it is given, answers ``allowed``."""

    def __init__(self, allowed: bool = True) -> None:
        self.allowed = allowed
        self.adopted: list[str] = []

    def __call__(self, cluster_id: str) -> bool:
        if self.allowed:
            self.adopted.append(cluster_id)
        return self.allowed


def test_rules_for_a_node_with_an_identity() -> None:
    mine = ClusterIdentity(X)
    mine.settle(X, "node 2")
    mine.settle(None, "node 2")  # perhaps an empty member, which will adopt X
    with pytest.raises(WireError) as refused:
        mine.check(Y, "node 2 at http://b")
    assert str(refused.value) == (
        f"node 2 at http://b is in cluster id {Y}, this node in cluster id {X} "
        "(members of different clusters refuse each other)"
    )
    assert mine.value == X


def test_a_node_with_data_and_no_identity_refuses_one_and_talks_to_none() -> None:
    legacy = ClusterIdentity()
    legacy.settle(None, "node 2")
    with pytest.raises(WireError, match=f"node 2 is in cluster id {X}.*records no cluster id"):
        legacy.check(X, "node 2")
    assert legacy.value is None


def test_an_empty_node_adopts_the_first_identity_then_holds_to_it() -> None:
    adopt = Recorded()
    empty = ClusterIdentity(adopt=adopt)
    empty.check(X, "node 1")
    assert adopt.adopted == []  # checking adopts nothing: only settle, after the proofs
    empty.settle(None, "node 2")
    assert empty.adopting
    empty.settle(X, "node 1")
    assert (adopt.adopted, empty.value, empty.adopting) == ([X], X, False)
    with pytest.raises(WireError, match="different clusters"):
        empty.settle(Y, "node 3")
    assert adopt.adopted == [X]


def test_a_node_that_may_no_longer_adopt_refuses_from_then_on() -> None:
    adopt = Recorded(allowed=False)
    node = ClusterIdentity(adopt=adopt)
    with pytest.raises(WireError, match="already holds data"):
        node.settle(X, "node 1")
    assert (node.value, node.adopting) == (None, False)
    with pytest.raises(WireError, match="records no cluster id"):
        node.check(Y, "node 1")


def test_a_cluster_identity_is_checked() -> None:
    with pytest.raises(ValueError, match="16 lowercase hex"):
        ClusterIdentity("nope")
    with pytest.raises(ValueError, match="adopts none"):
        ClusterIdentity(X, adopt=Recorded())


# -- real transports -------------------------------------------------------------------------


def warnings(*nodes: Node) -> list[str]:
    return [w for node in nodes for w in node.log.warnings()]


def delivered(node: Node, frm: int) -> bool:
    return any(m.frm == frm for m in node.recorder.messages)


@pytest.mark.parametrize("auth", ["none", "secret"])
def test_nodes_of_different_clusters_refuse_each_other_naming_both(
    tmp_path: Path, auth: str
) -> None:
    extra: dict[str, Any] = {"auth": PeerAuth.with_secret(SECRET)} if auth == "secret" else {}

    async def body() -> None:
        a = Node(1, tmp_path, cluster_id=X, **extra)
        b = Node(2, tmp_path, cluster_id=Y, **extra)
        await connect_all([a, b])
        try:
            a.transport.send([heartbeat(1, 2)])
            b.transport.send([heartbeat(2, 1)])
            refusals = {
                f"node 1: cannot reach peer 2 at {b.url}: node 2 at {b.url} is in cluster id "
                f"{Y}, this node in cluster id {X}",
                f"node 1: closing peer connection from *: node 2 is in cluster id {Y}, "
                f"this node in cluster id {X}",
                f"node 2: cannot reach peer 1 at {a.url}: node 1 at {a.url} is in cluster id "
                f"{X}, this node in cluster id {Y}",
                f"node 2: closing peer connection from *: node 1 is in cluster id {X}, "
                f"this node in cluster id {Y}",
            }

            def seen() -> set[str]:
                # Each end's dialer and listener name both identities.
                lines = {re.sub(r"from [0-9.:]+:", "from *:", w) for w in warnings(a, b)}
                return {r for r in refusals if any(line.startswith(r) for line in lines)}

            await eventually(lambda: seen() == refusals, "both refusals at each end")
            assert a.recorder.messages == []
            assert b.recorder.messages == []
        finally:
            await stop_all([a, b])

    run(body)


def test_an_empty_node_adopts_the_identity_before_any_message(tmp_path: Path) -> None:
    async def body() -> None:
        # (identity, messages taken by then), at each adoption.
        adoptions: list[tuple[str, int]] = []

        def adopt(cluster_id: str) -> bool:
            adoptions.append((cluster_id, len(joiner.recorder.messages)))
            return True

        joiner = Node(2, tmp_path, adopt_cluster_id=adopt)
        member = Node(1, tmp_path, cluster_id=X)
        await connect_all([member, joiner])
        try:
            member.transport.send([heartbeat(1, 2)])
            await eventually(lambda: delivered(joiner, 1), "the heartbeat")
            # Adopted once (by whichever handshake came first), before any message.
            assert adoptions == [(X, 0)]
            assert joiner.transport.cluster_id == X
            joiner.transport.send([heartbeat(2, 1)])
            await eventually(lambda: delivered(member, 2), "the answer")
            assert member.log.warnings() == []
            assert joiner.log.warnings() == []
        finally:
            await stop_all([member, joiner])

    run(body)


def test_a_node_with_data_but_no_identity_and_one_with_refuse_each_other(tmp_path: Path) -> None:
    async def body() -> None:
        old = Node(2, tmp_path)  # a data directory from before identities
        new = Node(1, tmp_path, cluster_id=X)
        await connect_all([new, old])
        try:
            new.transport.send([heartbeat(1, 2)])
            old.transport.send([heartbeat(2, 1)])
            await eventually(
                lambda: sum("records no cluster id" in w for w in old.log.warnings()) >= 2,
                "the old node's refusals, as dialer and as listener",
            )
            # The new node cannot tell an old member from an empty one that will
            # adopt its identity, so the old one refuses: nothing passes either way.
            assert new.recorder.messages == []
            assert old.recorder.messages == []
        finally:
            await stop_all([new, old])

    run(body)


def test_nodes_without_identities_talk_as_before(tmp_path: Path) -> None:
    async def body() -> None:
        nodes = [Node(1, tmp_path), Node(2, tmp_path, adopt_cluster_id=lambda _cid: True)]
        await connect_all(nodes)
        try:
            nodes[0].transport.send([heartbeat(1, 2)])
            nodes[1].transport.send([heartbeat(2, 1)])
            await eventually(lambda: delivered(nodes[1], 1) and delivered(nodes[0], 2), "both")
            assert nodes[1].transport.cluster_id is None
            assert all(n.log.warnings() == [] for n in nodes)
        finally:
            await stop_all(nodes)

    run(body)


def test_a_stranger_without_the_secret_cannot_make_an_empty_node_adopt(tmp_path: Path) -> None:
    async def body() -> None:
        adopted: list[str] = []

        def adopt(cluster_id: str) -> bool:
            adopted.append(cluster_id)
            return True

        joiner = Node(2, tmp_path, auth=PeerAuth.with_secret(SECRET), adopt_cluster_id=adopt)
        stranger = Node(1, tmp_path, cluster_id=Y, auth=PeerAuth.with_secret(b"x" * 32))
        member = Node(3, tmp_path, cluster_id=X, auth=PeerAuth.with_secret(SECRET))
        await connect_all([joiner, stranger])
        try:
            stranger.transport.send([heartbeat(1, 2)])
            await eventually(
                lambda: any("failed to prove" in w for w in joiner.log.warnings()), "refusal"
            )
            assert adopted == []
            assert joiner.transport.cluster_id is None
            await member.transport.start()
            joiner.transport.set_peers({1: stranger.url, 3: member.url})
            member.transport.set_peers({2: joiner.url})
            member.transport.send([heartbeat(3, 2)])
            await eventually(lambda: delivered(joiner, 3), "the member's heartbeat")
            assert adopted == [X]
        finally:
            await stop_all([joiner, stranger, member])

    run(body)


def test_an_adoption_refused_by_the_node_refuses_the_peer(tmp_path: Path) -> None:
    async def body() -> None:
        joiner = Node(2, tmp_path, adopt_cluster_id=lambda _cid: False)
        member = Node(1, tmp_path, cluster_id=X)
        await connect_all([member, joiner])
        try:
            member.transport.send([heartbeat(1, 2)])
            await eventually(
                lambda: any("already holds data" in w for w in joiner.log.warnings()), "refusal"
            )
            assert joiner.recorder.messages == []
            assert joiner.transport.cluster_id is None
        finally:
            await stop_all([member, joiner])

    run(body)


def test_an_older_dialer_is_answered_with_six_fields_it_would_refuse(tmp_path: Path) -> None:
    # A node from before identities sends the five-field HELLO; a node with an
    # identity cannot tell it from an empty member, so it answers, and its
    # answer has a sixth field, which the older decoder refuses as the wrong
    # shape: nothing passes between them.
    async def body() -> None:
        member = Node(1, tmp_path, cluster_id=X, peers={2: "http://127.0.0.1:1"})
        await member.transport.start()
        try:
            host, port = member.transport.listen_address
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(encode_hello(Hello(PROTOCOL_VERSION, 2, "raftdb", 1)))
                header = await reader.readexactly(FRAME_HEADER.size)
                length, kind = FRAME_HEADER.unpack(header)
                fields = msgpack.unpackb(await reader.readexactly(length))
            finally:
                await abort(writer)
            assert kind == FrameKind.HELLO
            assert fields == [PROTOCOL_VERSION, 1, "raftdb", 2, b"", X]
        finally:
            await member.transport.stop()

    run(body)
