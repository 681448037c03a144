"""raftdb.codec.pack is msgspec's encoder, and must write exactly the bytes that
``msgpack.Packer(use_bin_type=True)`` wrote before it: the log and state machine
files, the peer frames and the handshake's proofs are formats, not implementation.

Every encoder of raftdb goes through ``pack``. Here each call is teed to the old
packer and the two outputs compared, while a corpus of every kind is encoded:
each peer message type (with entries of each entry type and snapshot metadata),
the handshake frames and proof input, every command and transaction operation,
the log's records, and a state machine's own records and snapshot stream after a
workload of every operation. Decoding is unchanged (msgpack-python reads both),
so the same bytes decode to the same values; the round trips are checked too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb import codec
from raftdb.kv.commands import Command
from raftdb.kv.txn import CmpOp, Compare, Target, Txn, TxnOp
from raftdb.plugins import open_state_machine, open_storage
from raftdb.raft.messages import (
    LOCAL_MESSAGES,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from raftdb.storage import records
from raftdb.transport.frames import (
    Hello,
    SnapshotAck,
    SnapshotEnd,
    decode_message,
    encode_ack,
    encode_auth,
    encode_hello,
    encode_message,
    encode_snapshot_end,
)
from raftdb.transport.handshake import Handshake, PeerAuth
from tests.kv.test_commands import commands
from tests.kv.test_txn import compares, txn_ops
from tests.transport.test_wire import messages, msgpack_values

_old_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


class _Tee:
    """Stands in for the thread's encoder: encodes with msgspec, checks against msgpack."""

    def __init__(self, new: Any) -> None:
        self.new = new
        self.calls = 0

    def __call__(self, value: Any) -> bytes:
        new: bytes = self.new(value)
        old: bytes = _old_pack(value)
        assert new == old, f"msgspec and msgpack disagree on {value!r:.200}"
        self.calls += 1
        return new


@pytest.fixture
def tee() -> Iterator[_Tee]:
    codec.pack(None)  # make this thread's encoder
    new = codec._local.encode
    t = _Tee(new)
    codec._local.encode = t
    try:
        yield t
    finally:
        codec._local.encode = new


def _teed(fn: Any) -> None:
    """Run ``fn()`` with this thread's encoder teed (for hypothesis tests, which
    cannot take function-scoped fixtures)."""
    codec.pack(None)
    new = codec._local.encode
    codec._local.encode = _Tee(new)
    try:
        fn()
    finally:
        codec._local.encode = new


@settings(deadline=None, max_examples=300)
@given(msgpack_values)
def test_any_value_packs_to_the_same_bytes(value: Any) -> None:
    _teed(lambda: codec.pack(value))


@settings(deadline=None, max_examples=200)
@given(messages)
def test_random_messages_encode_to_the_same_bytes(m: Message) -> None:
    def check() -> None:
        assert decode_message(encode_message(m)) == m

    _teed(check)


@settings(deadline=None, max_examples=200)
@given(commands)
def test_random_commands_encode_to_the_same_bytes(command: Command) -> None:
    def check() -> None:
        assert Command.decode(command.encode()) == command

    _teed(check)


@settings(deadline=None, max_examples=100)
@given(st.lists(compares, max_size=4), st.lists(txn_ops, max_size=6), st.lists(txn_ops, max_size=6))
def test_random_transactions_encode_to_the_same_bytes(
    compare: list[Any], success: list[Any], failure: list[Any]
) -> None:
    txn = Txn(tuple(compare), tuple(success), tuple(failure))
    _teed(lambda: Txn.decode(txn.encode()))


_CONF = ConfState((1, 2, 3), (4,))
_ENTRIES = [
    Entry(7, 100 + n, kind, data)
    for n, (kind, data) in enumerate(
        [(t, d) for t in EntryType for d in (b"", b"x", b"v" * 31, b"w" * 255, b"z" * 70_000)]
    )
]


def test_every_message_type_encodes_to_the_same_bytes(tee: _Tee) -> None:
    snapshot = Snapshot(SnapshotMetadata(2**40, 2**33, _CONF))
    for mtype in MessageType:
        if mtype in LOCAL_MESSAGES:
            continue
        for m in (
            Message(mtype, to=2, frm=1),
            Message(
                mtype,
                to=2**63,
                frm=255,
                term=2**32,
                log_term=65_535,
                index=2**64 - 1,
                entries=tuple(_ENTRIES),
                commit=127,
                reject=True,
                reject_hint=128,
                snapshot=snapshot,
                context=b"ctx",
            ),
        ):
            assert decode_message(encode_message(m)) == m
    assert tee.calls >= 2 * (len(MessageType) - len(LOCAL_MESSAGES))


def test_handshake_frames_and_proofs_encode_to_the_same_bytes(tee: _Tee) -> None:
    for hello in (
        Hello(2, 1, "raftdb"),
        Hello(2, 3, "t" * 256, peer_id=2, nonce=b"n" * 32),
        Hello(2, 3, "é-cluster", peer_id=2, nonce=b"", cluster_id="0123456789abcdef"),
    ):
        encode_hello(hello)
    encode_auth(b"m" * 32)
    encode_ack(SnapshotAck(True))
    encode_ack(SnapshotAck(False))
    encode_snapshot_end(SnapshotEnd(2**40, 2**32 - 1))
    handshake = Handshake(1, "raftdb", PeerAuth.with_secret(b"s" * 32))
    handshake._mac("dialer", 1, 2, b"a" * 32, b"b" * 32)
    assert tee.calls == 9  # seven frames, the HELLO a Handshake checks, its proof


def test_log_records_encode_to_the_same_bytes(tee: _Tee) -> None:
    for entry in _ENTRIES:
        assert records.decode_entry(records.encode_entry(entry), entry.index) == entry
    records.encode_hard_state(HardState(2**33, 3, 2**20))
    records.encode_conf_state(_CONF)
    records.encode_snapshot(Snapshot(SnapshotMetadata(9, 2, _CONF), b"data"))
    records.encode_log_bounds(records.LogBounds(5, 2, 2**40))
    assert tee.calls == len(_ENTRIES) + 4


def _workload() -> list[Entry]:
    """One entry of each operation, some in a client session, a transaction."""
    txn = Txn(
        (
            Compare(b"a", Target.VALUE, CmpOp.EQ, b"1"),
            Compare(b"b", Target.EXISTS, CmpOp.NE, False),
        ),
        (TxnOp.put(b"c", b"4", lease=1), TxnOp.get(b"a"), TxnOp.list(b"", 10), TxnOp.delete(b"a")),
        (TxnOp.get(b"b"),),
    )
    cmds = [
        Command.lease_grant(30),
        Command.put(b"a", b"1"),
        Command.put(b"b", b"2" * 300, create_only=True, client_id=b"node-1-x", seq=1, ack=0),
        Command.put(b"a", b"3", if_mod=2, client_id=b"node-1-x", seq=2, ack=1),
        Command.delete(b"b", client_id=b"node-1-x", seq=3, ack=2),
        Command.txn(txn.encode()),
        Command.lease_keepalive(1),
        Command.lease_expire(1, 1),
        Command.lease_revoke(1),
    ]
    return [Entry(1, n + 1, EntryType.NORMAL, c.encode()) for n, c in enumerate(cmds)]


@pytest.mark.parametrize("plugin", ["memory", "leveldb"])
def test_state_machine_and_storage_write_the_same_bytes(
    tee: _Tee, tmp_path: Path, plugin: str
) -> None:
    storage = open_storage(plugin, tmp_path / "log", sync=False)
    sm = open_state_machine(plugin, tmp_path / "state", sync=False, watch_history=100)
    try:
        entries = _workload()
        storage.save(HardState(1, 1, len(entries)), entries)
        sm.apply(entries)
        stream = sm.snapshot()
        try:
            assert b"".join(stream)
        finally:
            stream.close()
    finally:
        sm.close()
        storage.close()
    assert tee.calls > len(entries)
