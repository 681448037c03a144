"""Tests for raftdb.testing.linearizability.

Three layers: hand-written histories with a known verdict (each names the
anomaly it shows); a brute-force oracle that enumerates every ordering of
small random histories, against which the checker's verdicts are compared;
and properties of histories made by running operations on a dict.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from bisect import bisect_left
from collections.abc import Hashable, Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from raftdb.testing.linearizability import (
    UNKNOWN,
    CheckResult,
    CheckStatus,
    CompareAndDelete,
    CompareAndSet,
    Delete,
    Get,
    HistoryRecorder,
    IfValue,
    KVInput,
    KVModel,
    KVOperation,
    KVOutput,
    KVState,
    KVTxnInput,
    KVTxnModel,
    KVTxnOperation,
    KVTxnOutput,
    KVTxnState,
    Operation,
    Put,
    PutIfAbsent,
    Transaction,
    TxnOutput,
    TxnStep,
    Unknown,
    check_linearizability,
    single_partition,
)

KV = KVModel()
#: Generous, deterministic budget: hand-written histories need a few dozen steps.
STEPS = 1_000_000


def op(inp: KVInput, out: KVOutput, call: float, ret: float, client: int = 0) -> KVOperation:
    return Operation(client, inp, out, call, ret)


def lost(inp: KVInput, call: float, client: int = 0) -> KVOperation:
    """An operation whose outcome is unknown."""
    return Operation.unknown(client, inp, call)


def check(history: Sequence[KVOperation]) -> CheckResult[KVInput, KVOutput]:
    result = check_linearizability(KV, history, timeout=None, max_steps=STEPS)
    assert result.status is not CheckStatus.UNKNOWN, result.describe()
    assert_sound(result)
    return result


def assert_sound(result: CheckResult[KVInput, KVOutput]) -> None:
    """Whatever the verdict, a reported (partial) linearization must be valid.

    Valid: each op placed once; every op that returned before a placed op was
    called is placed before it; replaying it on the model reproduces every
    recorded output. For an OK verdict it must also hold every completed op.
    """
    for part in result.partitions:
        lin = part.linearization
        pos = {id(o): k for k, o in enumerate(lin)}
        assert len(pos) == len(lin), "an operation placed twice"
        assert pos.keys() <= {id(o) for o in part.operations}
        # latest[k]: the last position of the k ops that return first (inf if
        # one is not placed); it must precede every op called after them.
        by_return = sorted(part.operations, key=lambda o: o.return_time)
        returns = [o.return_time for o in by_return]
        latest: list[float] = [-1]
        for a in by_return:
            latest.append(max(latest[-1], pos.get(id(a), math.inf)))
        for b in lin:
            k = bisect_left(returns, b.call_time)
            assert latest[k] < pos[id(b)], f"{b} placed before an op that returned earlier"
        state: KVState = KV.init()
        for o in lin:
            ok, state = KV.step(state, o.input, o.output)
            assert ok, f"replay fails at {o}"
        if part.status is CheckStatus.OK:
            assert all(id(o) in pos for o in part.operations if not o.is_unknown)


def assert_ok(history: Sequence[KVOperation]) -> CheckResult[KVInput, KVOutput]:
    result = check(history)
    assert result.ok, result.describe()
    return result


def assert_illegal(history: Sequence[KVOperation]) -> CheckResult[KVInput, KVOutput]:
    result = check(history)
    assert result.status is CheckStatus.ILLEGAL, result.describe()
    return result


def witness(result: CheckResult[KVInput, KVOutput]) -> list[KVOperation]:
    return [o for part in result.partitions for o in part.linearization]


# -- Hand-written histories ------------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    result = assert_ok([])
    assert result.partitions == ()
    assert result.steps == 0


def test_sequential_put_then_get() -> None:
    assert_ok([op(Put("x", "1"), None, 0, 1), op(Get("x"), "1", 2, 3)])


def test_get_of_absent_key_is_none() -> None:
    assert_ok([op(Get("x"), None, 0, 1)])


def test_stale_read_after_acknowledged_write() -> None:
    assert_illegal(
        [
            op(Put("x", "1"), None, 0, 1),
            op(Put("x", "2"), None, 2, 3),
            op(Get("x"), "1", 4, 5),
        ]
    )


def test_lost_write() -> None:
    assert_illegal([op(Put("x", "1"), None, 0, 1), op(Get("x"), None, 2, 3)])


def test_read_of_a_value_never_written() -> None:
    assert_illegal([op(Put("x", "1"), None, 0, 1), op(Get("x"), "9", 0, 3)])


@pytest.mark.parametrize("seen", ["1", "2"])
def test_concurrent_writes_in_either_order(seen: str) -> None:
    assert_ok(
        [
            op(Put("x", "1"), None, 0, 10, client=1),
            op(Put("x", "2"), None, 1, 9, client=2),
            op(Get("x"), seen, 11, 12),
        ]
    )


def test_concurrent_writes_take_one_order_only() -> None:
    """Once both writes are done, readers cannot see the order flip."""
    assert_illegal(
        [
            op(Put("x", "1"), None, 0, 10, client=1),
            op(Put("x", "2"), None, 1, 9, client=2),
            op(Get("x"), "1", 11, 12),
            op(Get("x"), "2", 13, 14),
        ]
    )


@pytest.mark.parametrize("seen", ["1", "2"])
def test_read_during_a_write_sees_old_or_new(seen: str) -> None:
    assert_ok(
        [
            op(Put("x", "1"), None, 0, 1),
            op(Put("x", "2"), None, 2, 10, client=1),
            op(Get("x"), seen, 3, 4, client=2),
        ]
    )


def test_new_then_old_read_during_a_write() -> None:
    """The classic non-atomic register: a later read goes back in time."""
    assert_illegal(
        [
            op(Put("x", "1"), None, 0, 1),
            op(Put("x", "2"), None, 2, 10, client=1),
            op(Get("x"), "2", 3, 4, client=2),
            op(Get("x"), "1", 5, 6, client=2),
        ]
    )


def test_order_of_concurrent_ops_in_the_history_does_not_matter() -> None:
    history = [
        op(Get("x"), "2", 3, 4, client=2),
        op(Put("x", "2"), None, 2, 10, client=1),
        op(Put("x", "1"), None, 0, 1),
    ]
    assert_ok(history)
    assert_ok(history[::-1])


def test_touching_intervals_overlap() -> None:
    """Equal return and call times count as concurrent (see Operation)."""
    assert_ok([op(Put("x", "1"), None, 0, 5), op(Get("x"), None, 5, 6)])
    assert_illegal([op(Put("x", "1"), None, 0, 5), op(Get("x"), None, 5.5, 6)])


def test_put_output_is_ignored() -> None:
    assert_ok([op(Put("x", "1"), "OK", 0, 1), op(Get("x"), "1", 2, 3)])


def test_int_values_are_not_confused_with_bools() -> None:
    assert_ok([op(Put("x", 1), None, 0, 1), op(Get("x"), 1, 2, 3)])
    assert_illegal([op(Put("x", 1), None, 0, 1), op(Get("x"), True, 2, 3)])


# Unknown outcomes


def test_unknown_write_that_must_be_included() -> None:
    unknown_put = lost(Put("x", "1"), 0)
    result = assert_ok([unknown_put, op(Get("x"), "1", 5, 6)])
    assert any(o is unknown_put for o in witness(result))


def test_unknown_write_that_must_be_excluded() -> None:
    unknown_put = lost(Put("x", "1"), 0)
    result = assert_ok([unknown_put, op(Get("x"), None, 5, 6)])
    assert not any(o is unknown_put for o in witness(result))


def test_unknown_write_may_take_effect_long_after_the_timeout() -> None:
    assert_ok(
        [
            lost(Put("x", "1"), 0),
            op(Get("x"), None, 5, 6),
            op(Get("x"), None, 50, 60),
            op(Get("x"), "1", 100, 101),
        ]
    )


def test_unknown_write_cannot_be_undone() -> None:
    assert_illegal([lost(Put("x", "1"), 0), op(Get("x"), "1", 5, 6), op(Get("x"), None, 7, 8)])


def test_unknown_write_cannot_take_effect_before_its_call() -> None:
    assert_illegal([op(Get("x"), "1", 0, 1), lost(Put("x", "1"), 2)])


def test_unknown_write_takes_effect_at_most_once() -> None:
    assert_illegal(
        [
            lost(Put("x", "1"), 0, client=1),
            op(Put("x", "2"), None, 1, 2),
            op(Get("x"), "1", 3, 4),
            op(Get("x"), "2", 5, 6),
            op(Get("x"), "1", 7, 8),
        ]
    )


def test_two_unknown_writes_explain_an_alternation() -> None:
    assert_ok(
        [
            lost(Put("x", "1"), 0, client=1),
            lost(Put("x", "2"), 0, client=2),
            op(Get("x"), "1", 3, 4),
            op(Get("x"), "2", 5, 6),
        ]
    )


def test_chain_of_unknown_operations() -> None:
    """A read needs three unknown ops, in the right order, to explain it."""
    result = assert_ok(
        [
            lost(Put("x", "1"), 0, client=1),
            lost(CompareAndSet("x", "1", "2"), 0, client=2),
            lost(CompareAndSet("x", "2", "3"), 0, client=3),
            lost(Delete("x"), 0, client=4),
            op(Get("x"), "3", 5, 6),
        ]
    )
    assert [o.input for o in witness(result)] == [
        Put("x", "1"),
        CompareAndSet("x", "1", "2"),
        CompareAndSet("x", "2", "3"),
        Get("x"),
    ]


def test_unknown_delete() -> None:
    history = [
        op(Put("x", "1"), None, 0, 1),
        lost(Delete("x"), 2),
        op(Get("x"), "1", 3, 4),
        op(Get("x"), None, 5, 6),
    ]
    assert_ok(history)
    assert_illegal([*history, op(Get("x"), "1", 7, 8)])


def test_unknown_compare_and_set() -> None:
    base = [op(Put("x", "1"), None, 0, 1), lost(CompareAndSet("x", "1", "2"), 2)]
    assert_ok([*base, op(Get("x"), "1", 3, 4), op(Get("x"), "2", 5, 6)])
    assert_illegal([*base, op(Get("x"), "2", 3, 4), op(Get("x"), "1", 5, 6)])
    # It can only succeed on the value it expects.
    base = [op(Put("x", "3"), None, 0, 1), lost(CompareAndSet("x", "1", "2"), 2)]
    assert_illegal([*base, op(Get("x"), "2", 3, 4)])


def test_definite_failure_is_dropped_from_the_history() -> None:
    """HistoryRecorder.fail drops the op: it can explain nothing."""
    now = iter(range(100))
    rec: HistoryRecorder[KVInput, KVOutput] = HistoryRecorder(lambda: next(now))
    h = rec.invoke(1, Put("x", "1"))
    rec.fail(h)
    g = rec.invoke(2, Get("x"))
    rec.complete(g, "1")
    assert_illegal(rec.history())


# Compare-and-set, create-only put, delete


def test_compare_and_set_success() -> None:
    assert_ok(
        [
            op(Put("x", "1"), None, 0, 1),
            op(CompareAndSet("x", "1", "2"), True, 2, 3),
            op(Get("x"), "2", 4, 5),
        ]
    )


def test_compare_and_set_cannot_succeed_on_another_value() -> None:
    assert_illegal([op(Put("x", "3"), None, 0, 1), op(CompareAndSet("x", "1", "2"), True, 2, 3)])


def test_compare_and_set_cannot_succeed_on_an_absent_key() -> None:
    assert_illegal([op(CompareAndSet("x", "1", "2"), True, 0, 1)])


def test_compare_and_set_cannot_fail_on_the_expected_value() -> None:
    assert_illegal([op(Put("x", "1"), None, 0, 1), op(CompareAndSet("x", "1", "2"), False, 2, 3)])


def test_failed_compare_and_set_changes_nothing() -> None:
    assert_illegal(
        [
            op(Put("x", "3"), None, 0, 1),
            op(CompareAndSet("x", "1", "2"), False, 2, 3),
            op(Get("x"), "2", 4, 5),
        ]
    )


def test_concurrent_compare_and_sets_cannot_both_win() -> None:
    base = [op(Put("x", "1"), None, 0, 1)]
    assert_illegal(
        [
            *base,
            op(CompareAndSet("x", "1", "2"), True, 2, 5, client=1),
            op(CompareAndSet("x", "1", "3"), True, 2, 5, client=2),
        ]
    )
    result = assert_ok(
        [
            *base,
            op(CompareAndSet("x", "1", "2"), False, 2, 5, client=1),
            op(CompareAndSet("x", "1", "3"), True, 2, 5, client=2),
            op(Get("x"), "3", 6, 7),
        ]
    )
    assert [o.output for o in witness(result)] == [None, True, False, "3"]


def test_compare_and_set_with_aba() -> None:
    """Value CAS cannot tell 1 -> 2 -> 1 apart from no change (see CompareAndSet)."""
    assert_ok(
        [
            op(Put("x", "1"), None, 0, 1),
            op(Put("x", "2"), None, 2, 3),
            op(Put("x", "1"), None, 4, 5),
            op(CompareAndSet("x", "1", "4"), True, 6, 7),
        ]
    )


def test_create_only_put() -> None:
    assert_ok(
        [
            op(PutIfAbsent("x", "1"), True, 0, 1),
            op(PutIfAbsent("x", "2"), False, 2, 3),
            op(Get("x"), "1", 4, 5),
            op(Delete("x"), True, 6, 7),
            op(PutIfAbsent("x", "3"), True, 8, 9),
            op(Get("x"), "3", 10, 11),
        ]
    )


def test_concurrent_creates_cannot_both_win() -> None:
    assert_illegal(
        [
            op(PutIfAbsent("x", "1"), True, 0, 5, client=1),
            op(PutIfAbsent("x", "2"), True, 0, 5, client=2),
        ]
    )
    assert_ok(
        [
            op(PutIfAbsent("x", "1"), False, 0, 5, client=1),
            op(PutIfAbsent("x", "2"), True, 0, 5, client=2),
        ]
    )


def test_create_cannot_fail_on_an_absent_key() -> None:
    assert_illegal([op(PutIfAbsent("x", "1"), False, 0, 1)])


def test_delete_reports_whether_the_key_existed() -> None:
    assert_ok([op(Delete("x"), False, 0, 1)])
    assert_illegal([op(Delete("x"), True, 0, 1)])
    assert_ok([op(Put("x", "1"), None, 0, 1), op(Delete("x"), True, 2, 3)])
    assert_illegal([op(Put("x", "1"), None, 0, 1), op(Delete("x"), False, 2, 3)])


def test_delete_without_an_existed_flag() -> None:
    assert_ok([op(Delete("x"), None, 0, 1), op(Get("x"), None, 2, 3)])
    assert_illegal(
        [op(Put("x", "1"), None, 0, 1), op(Delete("x"), None, 2, 3), op(Get("x"), "1", 4, 5)]
    )


def test_compare_and_delete() -> None:
    base = [op(Put("x", "1"), None, 0, 1)]
    assert_ok([*base, op(CompareAndDelete("x", "1"), True, 2, 3), op(Get("x"), None, 4, 5)])
    assert_illegal([*base, op(CompareAndDelete("x", "2"), True, 2, 3)])
    assert_illegal([*base, op(CompareAndDelete("x", "2"), False, 2, 3), op(Get("x"), None, 4, 5)])


@pytest.mark.parametrize(
    ("state", "inp", "out", "expected"),
    [
        (None, Get("k"), None, (True, None)),
        ("a", Get("k"), "a", (True, "a")),
        ("a", Get("k"), "b", (False, "a")),
        ("a", Get("k"), UNKNOWN, (True, "a")),
        (None, Put("k", "a"), None, (True, "a")),
        ("b", Put("k", "a"), UNKNOWN, (True, "a")),
        ("a", Delete("k"), True, (True, None)),
        (None, Delete("k"), False, (True, None)),
        ("a", Delete("k"), False, (False, None)),
        ("a", Delete("k"), UNKNOWN, (True, None)),
        ("a", CompareAndSet("k", "a", "b"), True, (True, "b")),
        ("a", CompareAndSet("k", "a", "b"), UNKNOWN, (True, "b")),
        ("c", CompareAndSet("k", "a", "b"), UNKNOWN, (True, "c")),
        (None, CompareAndSet("k", "a", "b"), False, (True, None)),
        (None, PutIfAbsent("k", "a"), True, (True, "a")),
        (None, PutIfAbsent("k", "a"), UNKNOWN, (True, "a")),
        ("b", PutIfAbsent("k", "a"), UNKNOWN, (True, "b")),
        ("b", PutIfAbsent("k", "a"), True, (False, "b")),
        ("a", CompareAndDelete("k", "a"), True, (True, None)),
        ("a", CompareAndDelete("k", "b"), False, (True, "a")),
        ("a", CompareAndDelete("k", "b"), True, (False, "a")),
        (None, CompareAndDelete("k", "a"), False, (True, None)),
        ("a", CompareAndDelete("k", "a"), UNKNOWN, (True, None)),
        ("a", CompareAndDelete("k", "b"), UNKNOWN, (True, "a")),
    ],
)
def test_kv_model_step(
    state: KVState,
    inp: KVInput,
    out: KVOutput | Unknown,
    expected: tuple[bool, KVState],
) -> None:
    ok, after = KV.step(state, inp, out)
    assert ok == expected[0]
    if ok:
        assert after == expected[1]


def test_kv_model_rejects_foreign_inputs() -> None:
    with pytest.raises(TypeError):
        KV.step(None, "get x", None)  # type: ignore[arg-type]


# Partitions and results


def test_keys_are_checked_independently() -> None:
    history = [
        op(Put("a", "1"), None, 0, 1),
        op(Put("b", "1"), None, 0, 1),
        op(Get("a"), "1", 2, 3),
        op(Get("b"), None, 2, 3),  # the lost write is on b
        op(Get("a"), "1", 4, 5),
    ]
    result = assert_illegal(history)
    failure = result.failure
    assert failure is not None
    assert failure.key == "b"
    assert failure.status is CheckStatus.ILLEGAL
    assert [o.input for o in failure.linearization] == [Put("b", "1")]
    text = result.describe()
    assert "key 'b'" in text
    assert "Get(key='b') -> None" in text


def test_partition_drops_unknown_reads() -> None:
    history = [lost(Get("a"), 0), op(Put("b", "1"), None, 0, 1), lost(Get("b"), 0)]
    parts = KV.partition(history)
    assert list(parts) == ["b"]
    assert [o.input for o in parts["b"]] == [Put("b", "1")]


def test_ok_result_describes_itself() -> None:
    result = assert_ok([op(Put("x", "1"), None, 0, 1)])
    assert result.failure is None
    assert str(result).startswith("ok: 1 partition(s)")


# Generic models


class Counter:
    """A counter with increments and reads, all on one object."""

    def init(self) -> int:
        return 0

    def step(self, state: int, input: str, output: int | None | Unknown) -> tuple[bool, int]:
        if input == "inc":
            return True, state + 1
        return output is UNKNOWN or output == state, state

    def partition(
        self, history: Sequence[Operation[str, int | None]]
    ) -> dict[Hashable, Sequence[Operation[str, int | None]]]:
        return single_partition(history)


def test_generic_model() -> None:
    ops: list[Operation[str, int | None]] = [
        Operation(1, "inc", None, 0, 1),
        Operation(2, "inc", None, 0, 1),
        Operation.unknown(3, "inc", 0),
        Operation(4, "read", 2, 2, 3),
        Operation(4, "read", 3, 4, 5),
    ]
    result = check_linearizability(Counter(), ops, max_steps=STEPS)
    assert result.ok
    assert [p.key for p in result.partitions] == [None]
    ops.append(Operation(4, "read", 2, 6, 7))
    assert check_linearizability(Counter(), ops, max_steps=STEPS).status is CheckStatus.ILLEGAL


# Budget


def hard_history(writers: int) -> list[KVOperation]:
    """Many overlapping writes and a read of a value none wrote.

    Refuting it means trying every subset of the writes before the read:
    exponential in ``writers``.
    """
    history = [op(Put("x", str(i)), None, 0, 10, client=i) for i in range(writers)]
    history += [op(Get("x"), str(i), 1, 10) for i in range(writers)]
    return [*history, op(Get("x"), "never", 1, 10)]


def test_step_budget_answers_unknown() -> None:
    result = check_linearizability(KV, hard_history(14), timeout=None, max_steps=500)
    assert result.status is CheckStatus.UNKNOWN
    assert result.steps <= 500
    failure = result.failure
    assert failure is not None
    assert failure.status is CheckStatus.UNKNOWN
    assert failure.linearization  # the search got somewhere
    assert "unknown" in result.describe()


def test_time_budget_answers_unknown() -> None:
    ticks = itertools.count()
    result = check_linearizability(
        KV, hard_history(14), timeout=100, clock=lambda: float(next(ticks) * 1000)
    )
    assert result.status is CheckStatus.UNKNOWN
    assert result.elapsed > 0


def test_illegal_partition_outranks_exhausted_budget() -> None:
    history = [
        *hard_history(14),
        op(Put("y", "1"), None, 0, 1),
        op(Get("y"), None, 2, 3),
    ]
    result = check_linearizability(KV, history, timeout=None, max_steps=1000)
    assert result.status is CheckStatus.ILLEGAL
    failure = result.failure
    assert failure is not None
    assert failure.key == "y"


def test_budget_is_shared_by_partitions() -> None:
    history = [op(Put(k, "1"), None, 0, 1) for k in "abcdef"]
    result = check_linearizability(KV, history, timeout=None, max_steps=3)
    assert result.status is CheckStatus.UNKNOWN
    assert [p.status for p in result.partitions] == [CheckStatus.OK] * 3 + [CheckStatus.UNKNOWN] * 3


def test_small_hard_history_is_refuted() -> None:
    assert_illegal(hard_history(5))


# Operations and recording


@pytest.mark.parametrize(
    ("output", "call", "ret"),
    [
        (None, 2, 1),  # returns before its call
        (None, math.nan, 1),
        (None, 0, math.nan),
        (None, -math.inf, 1),
        (None, 0, math.inf),  # infinite return needs the UNKNOWN output
        (UNKNOWN, 0, 1),  # and UNKNOWN needs an infinite return
    ],
)
def test_operation_validation(output: KVOutput | Unknown, call: float, ret: float) -> None:
    with pytest.raises(ValueError, match="call_time|return_time"):
        Operation(0, Get("x"), output, call, ret)


def test_operation_str() -> None:
    assert str(op(Get("x"), "1", 1, 2.5, client=7)) == "[1, 2.5] client 7: Get(key='x') -> '1'"
    assert str(lost(Put("x", "1"), 3)) == "[3, inf] client 0: Put(key='x', value='1') -> ?"


def test_history_recorder() -> None:
    now = 0.0
    rec: HistoryRecorder[KVInput, KVOutput] = HistoryRecorder(lambda: now)
    a = rec.invoke(1, Put("x", "1"))
    now = 1
    b = rec.invoke(2, Get("x"))
    now = 2
    rec.complete(a, None)
    c = rec.invoke(3, Put("x", "2"))
    now = 3
    rec.complete(b, "1")
    rec.unknown(c)
    d = rec.invoke(1, Delete("x"))  # still open at the end: unknown
    history = rec.history()
    assert history == [
        op(Put("x", "1"), None, 0, 2, client=1),
        op(Get("x"), "1", 1, 3, client=2),
        lost(Put("x", "2"), 2, client=3),
        lost(Delete("x"), 3, client=1),
    ]
    assert d == 3
    assert_ok(history)


# -- A brute-force oracle --------------------------------------------------------------


def brute_force(history: Sequence[KVOperation]) -> bool:
    """Linearizable by exhaustive search over orders; for a handful of ops.

    Shares nothing with the checker but KVModel.step: no partitions (the
    state is the whole store), no memo, no linked list.
    """

    def extend(store: tuple[tuple[str | bytes, KVState], ...], placed: frozenset[int]) -> bool:
        if all(i in placed for i, o in enumerate(history) if not o.is_unknown):
            return True
        for i, o in enumerate(history):
            if i in placed:
                continue
            if any(
                j not in placed and other.return_time < o.call_time
                for j, other in enumerate(history)
            ):
                continue  # something that returned before o was called is still out
            values = dict(store)
            ok, values[o.input.key] = KV.step(values.get(o.input.key), o.input, o.output)
            if ok and extend(tuple(sorted(values.items())), placed | {i}):
                return True
        return False

    return extend((), frozenset())


@st.composite
def small_histories(draw: st.DrawFn) -> list[KVOperation]:
    """A few ops on one or two keys with random intervals and random outputs."""
    n = draw(st.integers(1, 6))
    history: list[KVOperation] = []
    for i in range(n):
        key = draw(st.sampled_from(["a", "b"] if i % 3 == 2 else ["a"]))
        value = draw(st.sampled_from(["1", "2"]))
        choices: list[KVInput] = [
            Get(key),
            Put(key, value),
            Delete(key),
            CompareAndSet(key, "1", value),
            CompareAndDelete(key, value),
            PutIfAbsent(key, value),
        ]
        inp = draw(st.sampled_from(choices))
        call = draw(st.integers(0, 8))
        if draw(st.integers(0, 4)) == 0:
            history.append(lost(inp, call, client=i))
            continue
        ret = call + draw(st.integers(0, 5))
        out: KVOutput
        if isinstance(inp, Get):
            out = draw(st.sampled_from([None, "1", "2"]))
        elif isinstance(inp, Put):
            out = None
        elif isinstance(inp, Delete):
            out = draw(st.sampled_from([True, False, None]))
        else:
            out = draw(st.booleans())
        history.append(op(inp, out, call, ret, client=i))
    return history


@settings(max_examples=400, deadline=None)
@given(small_histories())
def test_checker_agrees_with_brute_force(history: list[KVOperation]) -> None:
    result = check(history)
    assert result.ok == brute_force(history), result.describe()


# -- Histories made by running operations on a dict ------------------------------------

GHOST = "never-written"


@st.composite
def executed_histories(draw: st.DrawFn, max_ops: int = 40) -> list[KVOperation]:
    """Run random ops one at a time on a dict; wrap each in a random interval.

    Op ``i`` takes effect at time ``10 * i``, inside its interval, so the
    execution order is a linearization. Some writes get an unknown outcome,
    of which some took effect (at their execution point, possibly after the
    client gave up) and some never did. CAS sometimes expects GHOST, which
    nobody writes, and so always fails.
    """
    n = draw(st.integers(1, max_ops))
    store: dict[str, str] = {}
    history: list[KVOperation] = []
    for i in range(n):
        key = draw(st.sampled_from(["a", "b", "c"]))
        value = draw(st.sampled_from(["1", "2", "3"]))
        expected = draw(st.sampled_from(["1", "2", GHOST]))
        choices: list[KVInput] = [
            Get(key),
            Put(key, value),
            Delete(key),
            CompareAndSet(key, expected, value),
            CompareAndDelete(key, value),
            PutIfAbsent(key, value),
        ]
        inp = draw(st.sampled_from(choices))
        fate = "ok"
        if not isinstance(inp, Get):
            fate = draw(st.sampled_from(["ok", "ok", "ok", "applied", "lost"]))
        out: KVOutput = None
        if fate != "lost":
            current = store.get(key)
            if isinstance(inp, Get):
                out = current
            elif isinstance(inp, Delete):
                out = current is not None
            elif isinstance(inp, CompareAndSet | CompareAndDelete):
                out = current == inp.expected
            elif isinstance(inp, PutIfAbsent):
                out = current is None
            ok, after = KV.step(current, inp, out)
            assert ok
            if after is None:
                store.pop(key, None)
            else:
                assert isinstance(after, str)
                store[key] = after
        at = 10 * i
        call = at - draw(st.integers(0, 25))
        if fate == "ok":
            history.append(op(inp, out, call, at + draw(st.integers(0, 25)), client=i % 5))
        else:
            history.append(lost(inp, call, client=i % 5))
    return history


@settings(max_examples=200, deadline=None)
@given(executed_histories())
def test_executed_history_is_linearizable(history: list[KVOperation]) -> None:
    assert_ok(history)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(executed_histories(), st.data())
def test_impossible_output_is_caught(history: list[KVOperation], data: st.DataObject) -> None:
    # Outputs no execution can produce: a read of a value nobody writes, or a
    # CAS that succeeds though the value it expects is never written.
    targets = [
        i
        for i, o in enumerate(history)
        if not o.is_unknown
        and (
            isinstance(o.input, Get)
            or (isinstance(o.input, CompareAndSet) and o.input.expected == GHOST)
        )
    ]
    assume(targets)
    i = data.draw(st.sampled_from(targets))
    o = history[i]
    mutated: KVOutput = GHOST if isinstance(o.input, Get) else True
    history[i] = op(o.input, mutated, o.call_time, o.return_time, client=0)
    result = assert_illegal(history)
    failure = result.failure
    assert failure is not None
    assert failure.key == o.input.key


# -- Scale -----------------------------------------------------------------------------


def client_history(
    ops: int, clients: int, seed: int, unknown_rate: float
) -> tuple[list[KVOperation], int]:
    """Sequential clients on one key, each op taking effect inside its interval.

    Values are unique, as the chaos tests will write them. An unknown write
    takes effect half the time, possibly well after its client gave up.
    Returns the history and the number of unknown-outcome ops.
    """
    rnd = random.Random(seed)
    free_at = [rnd.random() for _ in range(clients)]
    plans = []
    for i in range(ops):
        c = min(range(clients), key=free_at.__getitem__)
        call, latency = free_at[c], rnd.expovariate(1.0)
        kind = rnd.random()
        unknown = kind >= 0.4 and rnd.random() < unknown_rate
        at = call + rnd.random() * latency * (3 if unknown else 1)
        free_at[c] = call + latency + rnd.random() * 0.1
        plans.append((at, i, c, call, call + latency, kind, unknown))
    store: KVState = None
    history: dict[int, KVOperation] = {}
    for _at, i, c, call, ret, kind, unknown in sorted(plans):
        inp: KVInput
        if kind < 0.4:
            inp = Get("k")
        elif kind < 0.7:
            inp = Put("k", f"v{i}")
        elif kind < 0.8:
            inp = Delete("k")
        elif kind < 0.9:
            inp = CompareAndSet("k", store if store is not None else "v0", f"v{i}")
        else:
            inp = PutIfAbsent("k", f"v{i}")
        _, after = KV.step(store, inp, UNKNOWN)
        out: KVOutput = None
        if isinstance(inp, Get):
            out = store
        elif isinstance(inp, Delete):
            out = store is not None
        elif isinstance(inp, CompareAndSet):
            out = store == inp.expected
        elif isinstance(inp, PutIfAbsent):
            out = store is None
        if unknown:
            history[i] = lost(inp, call, client=c)
            if rnd.random() < 0.5:
                store = after
        else:
            history[i] = op(inp, out, call, ret, client=c)
            store = after
    return [history[i] for i in range(ops)], sum(o.is_unknown for o in history.values())


@pytest.mark.parametrize(("clients", "unknown_rate"), [(3, 0.0), (5, 0.0), (3, 0.02)])
def test_thousands_of_ops_on_one_key(clients: int, unknown_rate: float) -> None:
    history, _ = client_history(3000, clients, seed=1, unknown_rate=unknown_rate)
    start = time.perf_counter()
    result = check_linearizability(KV, history, timeout=None, max_steps=5_000_000)
    elapsed = time.perf_counter() - start
    assert result.ok, result.describe()
    assert elapsed < 5, f"{elapsed:.2f}s for {result.steps} steps"  # typically ~0.1 s


def test_a_few_hundred_ops_with_many_unknowns() -> None:
    history, unknown = client_history(300, 3, seed=1, unknown_rate=0.2)
    assert unknown > 20
    assert check(history).ok


def test_long_sequential_history_needs_no_recursion() -> None:
    history = [op(Put("x", str(i)), None, 2 * i, 2 * i + 1) for i in range(10_000)]
    history.append(op(Get("x"), "9999", 20_000, 20_001))
    result = assert_ok(history)
    assert result.steps == len(history)
    history.append(op(Get("x"), "0", 20_002, 20_003))
    assert_illegal(history)


# -- Multi-key transactions ------------------------------------------------------------

TX = KVTxnModel()


def txn_op(
    inp: KVTxnInput, out: KVTxnOutput, call: float, ret: float, client: int = 0
) -> KVTxnOperation:
    return Operation(client, inp, out, call, ret)


def check_txn(history: Sequence[KVTxnOperation]) -> CheckResult[KVTxnInput, KVTxnOutput]:
    result = check_linearizability(TX, history, timeout=None, max_steps=STEPS)
    assert result.status is not CheckStatus.UNKNOWN, result.describe()
    for part in result.partitions:  # the witness replays on the model
        state: KVTxnState = TX.init()
        for o in part.linearization:
            ok, state = TX.step(state, o.input, o.output)
            assert ok, f"replay fails at {o}"
    return result


def transfer(a: str, va: str, b: str, vb: str, na: str, nb: str) -> Transaction:
    """Move money from ``a`` to ``b`` if both still hold what the client read."""
    return Transaction((IfValue(a, va), IfValue(b, vb)), (Put(a, na), Put(b, nb)))


READ_AB = Transaction((), (Get("a"), Get("b")))


def test_a_read_transaction_sees_a_transfer_whole_or_not_at_all() -> None:
    setup = txn_op(Transaction((), (Put("a", "10"), Put("b", "0"))), TxnOutput(True), 0, 1)
    move = txn_op(transfer("a", "10", "b", "0", "5", "5"), TxnOutput(True), 2, 6, client=1)
    for seen in (("10", "0"), ("5", "5")):
        read = txn_op(READ_AB, TxnOutput(True, seen), 3, 5, client=2)
        assert check_txn([setup, move, read]).ok
    torn = txn_op(READ_AB, TxnOutput(True, ("5", "0")), 3, 5, client=2)
    result = check_txn([setup, move, torn])
    assert result.status is CheckStatus.ILLEGAL
    assert result.failure is not None
    assert result.failure.key == ("a", "b")


def test_two_transfers_from_one_read_cannot_both_succeed() -> None:
    setup = txn_op(Transaction((), (Put("a", "10"), Put("b", "0"))), TxnOutput(True), 0, 1)
    t1 = txn_op(transfer("a", "10", "b", "0", "7", "3"), TxnOutput(True), 2, 5, client=1)
    t2 = txn_op(transfer("a", "10", "b", "0", "6", "4"), TxnOutput(True), 2, 5, client=2)
    assert check_txn([setup, t1, t2]).status is CheckStatus.ILLEGAL
    t2_lost = txn_op(transfer("a", "10", "b", "0", "6", "4"), TxnOutput(False), 2, 5, client=2)
    assert check_txn([setup, t1, t2_lost]).ok


def test_a_failed_compare_runs_the_failure_branch() -> None:
    inp = Transaction((IfValue("a", "1"),), (Put("a", "2"),), (Get("a"), Put("b", "x")))
    history = [
        txn_op(inp, TxnOutput(False, (None, None)), 0, 1),
        txn_op(Get("b"), "x", 2, 3),
        txn_op(Get("a"), None, 2, 3),
    ]
    assert check_txn(history).ok
    history[0] = txn_op(inp, TxnOutput(True, (None,)), 0, 1)  # a is absent: cannot succeed
    assert check_txn(history).status is CheckStatus.ILLEGAL


def test_a_branch_sees_its_own_earlier_writes() -> None:
    inp = Transaction((), (Put("a", "1"), Get("a"), Delete("a"), Get("a")))
    assert check_txn([txn_op(inp, TxnOutput(True, (None, "1", True, None)), 0, 1)]).ok
    wrong = txn_op(inp, TxnOutput(True, (None, None, True, None)), 0, 1)
    assert check_txn([wrong]).status is CheckStatus.ILLEGAL


def test_results_of_the_wrong_length_are_refused() -> None:
    inp = Transaction((), (Get("a"),))
    assert check_txn([txn_op(inp, TxnOutput(True, ()), 0, 1)]).status is CheckStatus.ILLEGAL


def test_unknown_results_check_the_branch_only() -> None:
    # A retried transaction answered from its session: the branch, no reads.
    setup = txn_op(Put("a", "1"), None, 0, 1)
    inp = Transaction((IfValue("a", "1"),), (Put("a", "2"), Get("b")))
    assert check_txn([setup, txn_op(inp, TxnOutput(True), 2, 3), txn_op(Get("a"), "2", 4, 5)]).ok
    lie = txn_op(inp, TxnOutput(False), 2, 3)
    assert check_txn([setup, lie, txn_op(Get("a"), "2", 4, 5)]).status is CheckStatus.ILLEGAL


def test_an_unknown_transaction_may_take_effect_or_not() -> None:
    setup = txn_op(Put("a", "1"), None, 0, 1)
    inp = Transaction((IfValue("a", "1"),), (Put("a", "2"), Put("b", "2")))
    pending: KVTxnOperation = Operation.unknown(1, inp, 2)
    for seen in (("1", None), ("2", "2")):
        read = txn_op(READ_AB, TxnOutput(True, seen), 4, 5, client=2)
        assert check_txn([setup, pending, read]).ok
    torn = txn_op(READ_AB, TxnOutput(True, ("2", None)), 4, 5, client=2)
    assert check_txn([setup, pending, torn]).status is CheckStatus.ILLEGAL


def test_single_key_outputs_do_not_pass_for_transactions() -> None:
    assert TX.step((), Get("a"), TxnOutput(True)) == (False, ())
    assert TX.step((), READ_AB, None)[0] is False


def test_transactions_join_keys_into_one_partition() -> None:
    history = [
        txn_op(Put("x", "1"), None, 0, 1),
        txn_op(Transaction((IfValue("a", None),), (Put("b", "1"),)), TxnOutput(True), 0, 1),
        txn_op(Transaction((), (Get("b"), Delete("c"))), TxnOutput(True), 2, 3),
        txn_op(Get("a"), None, 2, 3),
        Operation.unknown(0, Get("x"), 2),
        Operation.unknown(0, Transaction((), (Get("x"),)), 2),  # a read: dropped
        txn_op(Transaction(), TxnOutput(True), 2, 3),  # no key: checked alone
    ]
    parts = TX.partition(history)
    assert list(parts) == ["x", ("a", "b", "c"), ()]
    assert [len(p) for p in parts.values()] == [1, 3, 1]
    assert check_txn(history).ok
    history[-1] = txn_op(Transaction(), TxnOutput(False), 2, 3)  # no compare fails
    assert check_txn(history).status is CheckStatus.ILLEGAL


def test_txn_model_keeps_single_key_semantics() -> None:
    assert TX.step((), Put("b", "1"), None) == (True, (("b", "1"),))
    # bytes keys sort after str keys:
    state: KVTxnState = (("b", "1"), (b"a", "2"))
    assert TX.step((("b", "1"),), Put(b"a", "2"), None) == (True, state)
    assert TX.step(state, CompareAndSet("b", "1", "3"), True) == (True, (("b", "3"), (b"a", "2")))
    assert TX.step(state, Get("b"), "2")[0] is False
    assert TX.step(state, Delete(b"a"), True) == (True, (("b", "1"),))
    assert TX.step(state, Get("zz"), None) == (True, state)


def txn_brute_force(history: Sequence[KVTxnOperation]) -> bool:
    """Exhaustive search over orders on the whole store (no partitions, no memo)."""

    def extend(state: KVTxnState, placed: frozenset[int]) -> bool:
        if all(i in placed for i, o in enumerate(history) if not o.is_unknown):
            return True
        for i, o in enumerate(history):
            if i in placed or any(
                j not in placed and other.return_time < o.call_time
                for j, other in enumerate(history)
            ):
                continue
            ok, after = TX.step(state, o.input, o.output)
            if ok and extend(after, placed | {i}):
                return True
        return False

    return extend((), frozenset())


def draw_step(draw: st.DrawFn, keys: list[str], values: st.SearchStrategy[str]) -> TxnStep:
    key = draw(st.sampled_from(keys))
    kind = draw(st.integers(0, 2))
    return Get(key) if kind == 0 else Put(key, draw(values)) if kind == 1 else Delete(key)


@st.composite
def small_txn_histories(draw: st.DrawFn) -> list[KVTxnOperation]:
    """A few single-key ops and transactions on three keys, random outputs."""
    keys = ["a", "b", "c"]
    values = st.sampled_from(["1", "2"])
    n = draw(st.integers(1, 5))
    history: list[KVTxnOperation] = []
    for i in range(n):
        inp: KVTxnInput
        if draw(st.booleans()):
            inp = draw_step(draw, keys, values)
        else:
            compare = tuple(
                IfValue(draw(st.sampled_from(keys)), draw(st.sampled_from([None, "1", "2"])))
                for _ in range(draw(st.integers(0, 2)))
            )
            success = tuple(draw_step(draw, keys, values) for _ in range(draw(st.integers(0, 2))))
            failure = tuple(draw_step(draw, keys, values) for _ in range(draw(st.integers(0, 2))))
            inp = Transaction(compare, success, failure)
        call = draw(st.integers(0, 8))
        if draw(st.integers(0, 4)) == 0:
            history.append(Operation.unknown(i, inp, call))
            continue
        ret = call + draw(st.integers(0, 5))
        out: KVTxnOutput
        if isinstance(inp, Transaction):
            succeeded = draw(st.booleans())
            branch = inp.success if succeeded else inp.failure
            reads: list[KVOutput] = []
            for o in branch:
                if isinstance(o, Get):
                    reads.append(draw(st.sampled_from([None, "1", "2"])))
                elif isinstance(o, Delete):
                    reads.append(draw(st.booleans()))
                else:
                    reads.append(None)
            out = TxnOutput(succeeded, tuple(reads) if draw(st.integers(0, 3)) else None)
        elif isinstance(inp, Get):
            out = draw(st.sampled_from([None, "1", "2"]))
        elif isinstance(inp, Delete):
            out = draw(st.sampled_from([True, False, None]))
        else:
            out = None
        history.append(txn_op(inp, out, call, ret, client=i))
    return history


@settings(max_examples=400, deadline=None)
@given(small_txn_histories())
def test_txn_checker_agrees_with_brute_force(history: list[KVTxnOperation]) -> None:
    result = check_txn(history)
    assert result.ok == txn_brute_force(history), result.describe()


def bank_history(ops: int, clients: int, seed: int) -> tuple[list[KVTxnOperation], int]:
    """Clients moving money between four accounts with read-then-transfer, and
    reading every balance in one transaction; each op takes effect inside its
    interval. Values are ``"balance/tag"``, unique per write. Returns the
    history and the index of one read-all op (to corrupt)."""
    rnd = random.Random(seed)
    accounts = [f"acct{i}" for i in range(4)]
    store: dict[str, str] = {a: f"25/init{a}" for a in accounts}
    setup = Transaction((), tuple(Put(a, store[a]) for a in accounts))
    history: list[KVTxnOperation] = [txn_op(setup, TxnOutput(True), -2, -1)]
    read_all = Transaction((), tuple(Get(a) for a in accounts))
    free_at = [0.0] * clients
    plans = []
    for i in range(ops):
        c = min(range(clients), key=free_at.__getitem__)
        call, latency = free_at[c], rnd.expovariate(1.0)
        plans.append((call + rnd.random() * latency, i, c, call, call + latency))
        free_at[c] = call + latency + rnd.random() * 0.1
    last_read = 0
    for _at, i, c, call, ret in sorted(plans):
        if rnd.random() < 0.4:
            out = TxnOutput(True, tuple(store[a] for a in accounts))
            history.append(txn_op(read_all, out, call, ret, client=c))
            last_read = len(history) - 1
            continue
        a, b = rnd.sample(accounts, 2)
        seen_a, seen_b = (store[a], store[b]) if rnd.random() < 0.7 else ("0/stale", store[b])
        amount = rnd.randrange(1, 5)
        bal_a, bal_b = int(seen_a.split("/")[0]), int(seen_b.split("/")[0])
        inp = transfer(a, seen_a, b, seen_b, f"{bal_a - amount}/{i}", f"{bal_b + amount}/{i}")
        succeeded = store[a] == seen_a and store[b] == seen_b
        if succeeded:
            store[a], store[b] = f"{bal_a - amount}/{i}", f"{bal_b + amount}/{i}"
        history.append(
            txn_op(
                inp, TxnOutput(succeeded, (None, None) if succeeded else ()), call, ret, client=c
            )
        )
    return history, last_read


def test_a_bank_history_of_a_thousand_transactions() -> None:
    history, last_read = bank_history(1000, 4, seed=3)
    result = check_txn(history)
    assert result.ok, result.describe()
    assert len(result.partitions) == 1
    read = history[last_read]
    assert isinstance(read.output, TxnOutput)
    assert read.output.results is not None
    torn = (read.output.results[0], "999/never", *read.output.results[2:])
    history[last_read] = txn_op(read.input, TxnOutput(True, torn), read.call_time, read.return_time)
    assert check_txn(history).status is CheckStatus.ILLEGAL
