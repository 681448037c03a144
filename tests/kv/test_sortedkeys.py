"""raftdb.kv.sortedkeys: the chunked sorted key set against a plain sorted list."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.kv.sortedkeys import SortedKeys, prefix_end

keys = st.binary(max_size=3)


@settings(deadline=None)  # a shared 2-core machine: no per-example timing
@given(st.lists(st.tuples(st.booleans(), keys), max_size=300), keys, st.none() | keys)
def test_matches_a_sorted_set(ops: list[tuple[bool, bytes]], lo: bytes, hi: bytes | None) -> None:
    model: set[bytes] = set()
    s = SortedKeys(load=4)
    for add, key in ops:
        if add:
            s.add(key)
            model.add(key)
        else:
            s.discard(key)
            model.discard(key)
        s.check()
    assert list(s) == sorted(model)
    assert len(s) == len(model)
    want = [k for k in sorted(model) if k >= lo and (hi is None or k < hi)]
    assert list(s.irange(lo, hi)) == want
    for _, key in ops:
        assert (key in s) == (key in model)


def test_large_random_workload_and_copy() -> None:
    rng = random.Random(1)
    s = SortedKeys(load=16)
    model: set[bytes] = set()
    for _ in range(20_000):
        key = rng.randbytes(2)
        if rng.random() < 0.7:
            s.add(key)
            model.add(key)
        else:
            s.discard(key)
            model.discard(key)
    s.check()
    copy = s.copy()
    s.add(b"\xff\xff\xff")
    copy.check()
    assert list(copy) == sorted(model)
    assert b"\xff\xff\xff" not in copy


def test_from_sorted() -> None:
    s = SortedKeys.from_sorted([b"a", b"b", b"c"], load=4)
    s.check()
    assert list(s) == [b"a", b"b", b"c"]
    with pytest.raises(ValueError, match="ascending"):
        SortedKeys.from_sorted([b"b", b"a"])
    with pytest.raises(ValueError, match="ascending"):
        SortedKeys.from_sorted([b"a", b"a"])
    assert 3 not in s


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"", None), (b"a", b"b"), (b"a\xff", b"b"), (b"\xff\xff", None), (b"ab\x00", b"ab\x01")],
)
def test_prefix_end(prefix: bytes, end: bytes | None) -> None:
    assert prefix_end(prefix) == end


@settings(deadline=None)  # a shared 2-core machine: no per-example timing
@given(st.binary(max_size=4), st.binary(max_size=6))
def test_prefix_end_bounds_exactly_the_prefixed_keys(prefix: bytes, key: bytes) -> None:
    end = prefix_end(prefix)
    inside = key >= prefix and (end is None or key < end)
    assert inside == key.startswith(prefix)
