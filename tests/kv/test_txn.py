"""Transactions: the encoding, and how the Applier evaluates and applies them."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.kv.commands import Command, CommandStatus, InvalidCommandError, KeyValue
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.kv.txn import (
    MAX_LIST_LIMIT,
    MAX_TXN_OPS,
    CmpOp,
    Compare,
    Target,
    Txn,
    TxnOp,
    TxnOpKind,
    TxnOpResult,
    TxnResult,
)
from tests.kv.machine import Log, delete_change, one, put_change

EQ, NE, LT, GT = CmpOp.EQ, CmpOp.NE, CmpOp.LT, CmpOp.GT
VALUE, MOD, CREATE, EXISTS = Target.VALUE, Target.MOD_INDEX, Target.CREATE_INDEX, Target.EXISTS


def machine_with_a() -> tuple[MemoryStateMachine, Log]:
    """``a`` = b"m", created at 1 and last written at 2; ``b`` = b"" at 3."""
    m, log = MemoryStateMachine(), Log()
    m.apply([log.put(b"a", b"x"), log.put(b"a", b"m"), log.put(b"b", b"")])
    return m, log


@pytest.mark.parametrize(
    ("compare", "holds"),
    [
        (Compare(b"a", VALUE, EQ, b"m"), True),
        (Compare(b"a", VALUE, EQ, b"n"), False),
        (Compare(b"a", VALUE, NE, b"n"), True),
        (Compare(b"a", VALUE, NE, b"m"), False),
        (Compare(b"a", VALUE, LT, b"n"), True),
        (Compare(b"a", VALUE, LT, b"m"), False),
        (Compare(b"a", VALUE, LT, b"ma"), True),  # bytes order: a prefix is smaller
        (Compare(b"a", VALUE, GT, b"l"), True),
        (Compare(b"a", VALUE, GT, b"m"), False),
        (Compare(b"a", VALUE, GT, b""), True),
        (Compare(b"b", VALUE, EQ, b""), True),  # an empty value exists
        (Compare(b"a", MOD, EQ, 2), True),
        (Compare(b"a", MOD, NE, 2), False),
        (Compare(b"a", MOD, LT, 3), True),
        (Compare(b"a", MOD, LT, 2), False),
        (Compare(b"a", MOD, GT, 1), True),
        (Compare(b"a", MOD, GT, 2), False),
        (Compare(b"a", CREATE, EQ, 1), True),
        (Compare(b"a", CREATE, NE, 1), False),
        (Compare(b"a", CREATE, LT, 2), True),
        (Compare(b"a", CREATE, GT, 0), True),
        (Compare(b"a", CREATE, GT, 1), False),
        (Compare(b"a", EXISTS, EQ, True), True),
        (Compare(b"a", EXISTS, EQ, False), False),
        (Compare(b"a", EXISTS, NE, False), True),
        (Compare(b"a", EXISTS, NE, True), False),
        # An absent key: its value compares false except !=; its indexes are 0.
        (Compare(b"z", VALUE, EQ, b""), False),
        (Compare(b"z", VALUE, NE, b""), True),
        (Compare(b"z", VALUE, NE, b"m"), True),
        (Compare(b"z", VALUE, LT, b"\xff"), False),
        (Compare(b"z", VALUE, GT, b""), False),
        (Compare(b"z", MOD, EQ, 0), True),
        (Compare(b"z", MOD, LT, 1), True),
        (Compare(b"z", MOD, GT, 0), False),
        (Compare(b"z", CREATE, EQ, 0), True),
        (Compare(b"z", CREATE, NE, 0), False),
        (Compare(b"z", EXISTS, EQ, False), True),
        (Compare(b"z", EXISTS, EQ, True), False),
        (Compare(b"z", EXISTS, NE, True), True),
    ],
)
def test_every_compare(compare: Compare, holds: bool) -> None:
    m, log = machine_with_a()
    result = one(m, log.txn((compare,), (TxnOp.get(b"a"),), (TxnOp.get(b"b"),)))
    assert result.status == CommandStatus.OK
    assert result.txn is not None
    assert result.txn.succeeded is holds
    read = result.txn.results[0].kv
    assert read == (KeyValue(b"a", b"m", 1, 2) if holds else KeyValue(b"b", b"", 3, 3))


def test_all_compares_must_hold_and_none_means_success() -> None:
    m, log = machine_with_a()
    both = (Compare(b"a", MOD, EQ, 2), Compare(b"b", EXISTS, EQ, True))
    assert one(m, log.txn(both)).txn == TxnResult(True, ())
    one_fails = (Compare(b"a", MOD, EQ, 2), Compare(b"b", EXISTS, EQ, False))
    assert one(m, log.txn(one_fails)).txn == TxnResult(False, ())
    assert one(m, log.txn()).txn == TxnResult(True, ())


def test_a_branch_reads_its_own_writes_in_order() -> None:
    m, log = machine_with_a()
    entry = log.txn(
        (Compare(b"a", VALUE, EQ, b"m"),),
        (
            TxnOp.get(b"p/1"),
            TxnOp.put(b"p/1", b"one"),
            TxnOp.put(b"p/2", b"two"),
            TxnOp.get(b"p/1"),
            TxnOp.list(b"p/"),
            TxnOp.delete(b"p/1"),
            TxnOp.get(b"p/1"),
            TxnOp.list(b"p/"),
            TxnOp.delete(b"a"),
        ),
    )
    result = one(m, entry)
    i = entry.index
    assert result.status == CommandStatus.OK
    assert (result.mod_index, result.create_index, result.prev_mod_index) == (i, 0, 0)
    assert result.txn == TxnResult(
        True,
        (
            TxnOpResult(TxnOpKind.GET),
            TxnOpResult(TxnOpKind.PUT, create_index=i, mod_index=i),
            TxnOpResult(TxnOpKind.PUT, create_index=i, mod_index=i),
            TxnOpResult(TxnOpKind.GET, found=True, kv=KeyValue(b"p/1", b"one", i, i)),
            TxnOpResult(
                TxnOpKind.LIST,
                kvs=(KeyValue(b"p/1", b"one", i, i), KeyValue(b"p/2", b"two", i, i)),
            ),
            TxnOpResult(TxnOpKind.DELETE, found=True, prev_mod_index=i),
            TxnOpResult(TxnOpKind.GET),
            TxnOpResult(TxnOpKind.LIST, kvs=(KeyValue(b"p/2", b"two", i, i),)),
            TxnOpResult(TxnOpKind.DELETE, found=True, prev_mod_index=2),
        ),
    )
    assert result.changes == (
        put_change(i, b"p/1", b"one", i, 0),
        put_change(i, b"p/2", b"two", i, 0),
        delete_change(i, b"p/1", i),
        delete_change(i, b"a", 2),
    )
    assert [kv.key for kv in m.range()] == [b"b", b"p/2"]
    assert m.history(i - 1, 1) == (0, list(result.changes))  # never split


def test_a_key_put_twice_keeps_its_first_create_index() -> None:
    m, log = machine_with_a()
    entry = log.txn(success=(TxnOp.put(b"n", b"1"), TxnOp.put(b"n", b"2"), TxnOp.put(b"a", b"3")))
    result = one(m, entry)
    i = entry.index
    assert result.txn is not None
    assert [(r.create_index, r.mod_index, r.prev_mod_index) for r in result.txn.results] == [
        (i, i, 0),
        (i, i, i),
        (1, i, 2),
    ]
    assert result.changes == (
        put_change(i, b"n", b"1", i, 0),
        put_change(i, b"n", b"2", i, i),
        put_change(i, b"a", b"3", 1, 2),
    )
    assert m.get(b"n") == KeyValue(b"n", b"2", i, i)


def test_deleting_an_absent_key_changes_nothing() -> None:
    m, log = machine_with_a()
    result = one(m, log.txn(success=(TxnOp.delete(b"nope"),)))
    assert result.txn == TxnResult(True, (TxnOpResult(TxnOpKind.DELETE),))
    assert result.changes == ()
    assert m.history(3, 10) == (0, [])


def test_list_limit_and_more() -> None:
    m, log = MemoryStateMachine(), Log()
    m.apply([log.put(b"p/%d" % i) for i in range(5)] + [log.put(b"q")])
    result = one(m, log.txn(success=(TxnOp.list(b"p/", 2), TxnOp.list(b"p/", 5), TxnOp.list(b""))))
    assert result.txn is not None
    first, exact, everything = result.txn.results
    assert ([kv.key for kv in first.kvs], first.more) == ([b"p/0", b"p/1"], True)
    assert (len(exact.kvs), exact.more) == (5, False)
    assert (len(everything.kvs), everything.more) == (6, False)


def test_the_failure_branch_runs_when_a_compare_fails() -> None:
    m, log = machine_with_a()
    entry = log.txn(
        (Compare(b"a", MOD, EQ, 1),),
        (TxnOp.put(b"s", b"1"),),
        (TxnOp.put(b"f", b"1"), TxnOp.get(b"a")),
    )
    result = one(m, entry)
    assert result.txn is not None
    assert not result.txn.succeeded
    assert m.get(b"s") is None
    assert m.get(b"f") is not None
    assert result.txn.results[1].kv == KeyValue(b"a", b"m", 1, 2)


def test_compares_see_the_state_before_the_entry_and_later_entries_see_the_txn() -> None:
    m, log = machine_with_a()
    swap = log.txn((Compare(b"a", VALUE, EQ, b"m"),), (TxnOp.put(b"a", b"n"),))
    again = log.txn((Compare(b"a", VALUE, EQ, b"m"),), (TxnOp.put(b"a", b"o"),))
    results = m.apply([swap, again])
    assert [r.txn.succeeded for r in results] == [True, False]  # type: ignore[union-attr]
    assert m.get(b"a") == KeyValue(b"a", b"n", 1, swap.index)


def test_an_unknown_lease_aborts_the_whole_transaction() -> None:
    m, log = machine_with_a()
    lease = one(m, log.grant()).lease
    entry = log.txn(
        success=(
            TxnOp.put(b"x", b"1"),
            TxnOp.delete(b"a"),
            TxnOp.put(b"y", b"1", lease=lease),
            TxnOp.put(b"z", b"1", lease=999),
        ),
        failure=(TxnOp.put(b"w", b"1", lease=998),),
    )
    before = m.range()
    result = one(m, entry)
    assert result.status == CommandStatus.LEASE_NOT_FOUND
    assert (result.lease, result.txn, result.changes) == (999, None, ())
    assert "999" in result.message
    assert m.range() == before
    held = m.lease(lease)
    assert held is not None
    assert held.keys == frozenset()
    assert m.applied_index == entry.index
    # Only the branch that runs is checked: the failure branch's lease is not looked at.
    unknown_in_failure = (TxnOp.put(b"w", b"1", lease=998),)
    ok = one(m, log.txn(success=(TxnOp.put(b"y", b"1", lease=lease),), failure=unknown_in_failure))
    assert ok.status == CommandStatus.OK


def test_more_than_128_operations_are_refused() -> None:
    op = TxnOp.get(b"k")
    compare = Compare(b"k", EXISTS, EQ, True)
    Txn((compare,) * MAX_TXN_OPS, (op,) * MAX_TXN_OPS, (op,) * MAX_TXN_OPS)
    for fields in (
        {"compare": (compare,) * (MAX_TXN_OPS + 1)},
        {"success": (op,) * (MAX_TXN_OPS + 1)},
        {"failure": (op,) * (MAX_TXN_OPS + 1)},
    ):
        with pytest.raises(InvalidCommandError, match="at most 128"):
            Txn(**fields)
    get = [int(TxnOpKind.GET), b"k", b"", 0, b"", 100]
    for lists in (
        [[[b"k", 4, 1, True]] * 129, [], []],
        [[], [get] * 129, []],
        [[], [], [get] * 129],
    ):
        data = msgpack.packb(lists, use_bin_type=True)
        with pytest.raises(InvalidCommandError, match="at most 128"):
            Txn.decode(data)
        m, log = MemoryStateMachine(), Log()
        result = one(m, log.cmd(Command.txn(data)))
        assert result.status == CommandStatus.INVALID
        assert "128" in result.message


GET = [int(TxnOpKind.GET), b"k", b"", 0, b"", 100]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([[], []], "3 lists"),
        ({"a": 1}, "3 lists"),
        ([[], [], [], []], "3 lists"),
        ([{}, [], []], "compares"),
        ([[[b"k", 1, 1]], [], []], "4 fields"),
        ([[["k", 1, 1, b"v"]], [], []], "key"),
        ([[[b"", 1, 1, b"v"]], [], []], "key"),
        ([[[b"k", 9, 1, b"v"]], [], []], "target"),
        ([[[b"k", True, 1, b"v"]], [], []], "target"),
        ([[[b"k", 1, 5, b"v"]], [], []], "operator"),
        ([[[b"k", 1, 1, "v"]], [], []], "bytes value"),
        ([[[b"k", 2, 1, -1]], [], []], "integer"),
        ([[[b"k", 2, 1, True]], [], []], "integer"),
        ([[[b"k", 4, 1, 1]], [], []], "true or false"),
        ([[[b"k", 4, 3, True]], [], []], "== or !="),
        ([[], {}, []], "branch"),
        ([[], [GET[:5]], []], "6 fields"),
        ([[], [[9, b"k", b"", 0, b"", 100]], []], "unknown transaction operation"),
        ([[], [[3, b"", b"", 0, b"", 100]], []], "non-empty key"),
        ([[], [[3, b"k", b"v", 0, b"", 100]], []], "only a put"),
        ([[], [[2, b"k", b"", 4, b"", 100]], []], "only a put"),
        ([[], [[1, b"k", b"v", -1, b"", 100]], []], "lease"),
        ([[], [[1, b"k", "v", 0, b"", 100]], []], "bytes"),
        ([[], [[4, b"", b"", 0, b"p", 0]], []], "limit"),
        ([[], [[4, b"", b"", 0, b"p", MAX_LIST_LIMIT + 1]], []], "limit"),
        ([[], [[4, b"k", b"", 0, b"p", 10]], []], "prefix and a limit only"),
        ([[], [[3, b"k", b"", 0, b"p", 100]], []], "only a list"),
        ([[], [[3, b"k", b"", 0, b"", 7]], []], "only a list"),
    ],
)
def test_malformed_transactions_are_invalid(fields: object, message: str) -> None:
    data = msgpack.packb(fields, use_bin_type=True)
    with pytest.raises(InvalidCommandError, match=message):
        Txn.decode(data)
    results = []
    for _ in range(2):  # every node decides alike: same status, same message
        m, log = MemoryStateMachine(), Log()
        results.append(one(m, log.cmd(Command.txn(data))))
        assert m.range() == []
        assert m.history(0, 10) == (0, [])
    assert results[0] == results[1]
    assert results[0].status == CommandStatus.INVALID
    assert message in results[0].message


def test_undecodable_bytes_are_invalid() -> None:
    m, log = MemoryStateMachine(), Log()
    result = one(m, log.cmd(Command.txn(b"\xc1\xc1")))
    assert result.status == CommandStatus.INVALID
    assert "msgpack" in result.message


@settings(deadline=None, max_examples=200)
@given(st.binary(min_size=1, max_size=60))
def test_any_bytes_decode_identically_or_are_invalid_identically(data: bytes) -> None:
    outcomes = []
    for _ in range(2):
        try:
            txn = Txn.decode(data)
        except InvalidCommandError as exc:
            outcomes.append(str(exc))
        else:
            assert Txn.decode(txn.encode()) == txn
            outcomes.append(repr(txn))
    assert outcomes[0] == outcomes[1]


txn_ops = st.one_of(
    st.builds(TxnOp.put, st.binary(min_size=1, max_size=4), st.binary(max_size=4)),
    st.builds(TxnOp.delete, st.binary(min_size=1, max_size=4)),
    st.builds(TxnOp.get, st.binary(min_size=1, max_size=4)),
    st.builds(TxnOp.list, st.binary(max_size=2), st.integers(1, MAX_LIST_LIMIT)),
)
compares = st.one_of(
    st.builds(
        Compare,
        st.binary(min_size=1, max_size=4),
        st.just(VALUE),
        st.sampled_from(list(CmpOp)),
        st.binary(max_size=4),
    ),
    st.builds(
        Compare,
        st.binary(min_size=1, max_size=4),
        st.sampled_from([MOD, CREATE]),
        st.sampled_from(list(CmpOp)),
        st.integers(0, 2**40),
    ),
    st.builds(
        Compare,
        st.binary(min_size=1, max_size=4),
        st.just(EXISTS),
        st.sampled_from([EQ, NE]),
        st.booleans(),
    ),
)


@settings(deadline=None, max_examples=100)
@given(st.lists(compares, max_size=4), st.lists(txn_ops, max_size=6), st.lists(txn_ops, max_size=6))
def test_encoding_round_trip(
    compare: list[Compare], success: list[TxnOp], failure: list[TxnOp]
) -> None:
    txn = Txn(tuple(compare), tuple(success), tuple(failure))
    assert Txn.decode(txn.encode()) == txn
