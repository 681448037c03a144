"""``make bench-pair``'s summary: B/A per round, then median and range over rounds.

The rounds themselves need wrk and two clusters for minutes; these tests feed the
summary synthetic rounds, so that each ratio it prints is checked.
"""

from __future__ import annotations

import pytest

from benchmarks.cluster.pair import ratios, render, summarise
from benchmarks.cluster.report import Record, Results
from benchmarks.cluster.runner import build_parser
from benchmarks.cluster.wrk import WrkResult


def _results(figures: dict[tuple[str, int], tuple[float, float, float]]) -> Results:
    """One round of one side: (op, connections) -> (requests/s, CPU s, p99 ms), 1000 answers."""
    results = Results()
    for (op, connections), (rps, cpu_s, p99) in figures.items():
        wrk = WrkResult(1000, 0, rps, p99 / 2, p99, p99 * 2, 1)
        results.records.append(Record(0, "raftdb", op, connections, "leader", wrk, cpu_s))
    return results


def test_a_round_gives_b_over_a_for_the_loads_both_measured() -> None:
    a = _results({("put", 1): (500.0, 2.0, 4.0), ("put", 64): (5000.0, 0.3, 20.0)})
    b = _results({("put", 1): (550.0, 1.8, 3.0), ("get", 64): (9000.0, 0.1, 9.0)})
    one = ratios(a, b)
    assert list(one) == [("put", "leader", 1)]  # put 64 and get 64 are on one side only
    r = one[("put", "leader", 1)]
    assert r.rps == pytest.approx(1.1)
    assert r.cpu == pytest.approx(0.9)  # 1,800 µs against 2,000 µs per answer
    assert r.p99 == pytest.approx(0.75)
    assert (r.a_rps, r.b_rps) == (500.0, 550.0)
    assert r.a_cpu_us == pytest.approx(2000.0)


def test_a_side_without_cpu_or_answers_leaves_those_out() -> None:
    a = _results({("put", 1): (500.0, 2.0, 4.0), ("put", 16): (0.0, 1.0, 4.0)})
    b = _results({("put", 1): (500.0, 2.0, 4.0), ("put", 16): (800.0, 1.0, 4.0)})
    b.records[0] = Record(0, "raftdb", "put", 1, "leader", b.records[0].result, None)
    one = ratios(a, b)
    assert list(one) == [("put", "leader", 1)]  # A answered nothing at 16 connections
    assert one[("put", "leader", 1)].cpu is None


def test_the_summary_is_the_median_and_range_over_rounds() -> None:
    a = _results({("put", 1): (500.0, 2.0, 4.0)})
    rounds = [
        ratios(a, _results({("put", 1): (rps, cpu, 4.0)}))
        for rps, cpu in ((450.0, 2.2), (550.0, 1.8), (600.0, 1.6))
    ]
    (row,) = summarise(rounds)
    assert (row.op, row.mode, row.connections, row.rounds) == ("put", "leader", 1, 3)
    assert row.rps == pytest.approx((1.1, 0.9, 1.2))
    assert row.cpu == pytest.approx((0.9, 0.8, 1.1))
    assert (row.b_faster, row.b_cheaper) == (2, 2)
    assert row.b_rps == 550.0
    table = render([row], "aaaaaaa", "bbbbbbb")
    assert "B = bbbbbbb over A = aaaaaaa" in table
    assert "| put leader 1 | 3 | 1.10 (0.90–1.20) | 2/3 | 0.90 (0.80–1.10) | 2/3 |" in table


def test_a_load_missing_from_some_rounds_counts_only_the_others() -> None:
    a = _results({("put", 1): (500.0, 2.0, 4.0), ("put", 64): (5000.0, 0.3, 20.0)})
    full = ratios(a, _results({("put", 1): (500.0, 2.0, 4.0), ("put", 64): (6000.0, 0.3, 20.0)}))
    part = ratios(a, _results({("put", 1): (1000.0, 2.0, 4.0)}))
    rows = {row.connections: row for row in summarise([full, part])}
    assert rows[1].rounds == 2
    assert rows[1].rps == pytest.approx((1.5, 1.0, 2.0))
    assert rows[64].rounds == 1
    assert rows[64].rps == pytest.approx((1.2, 1.2, 1.2))


def test_the_command_line_takes_the_two_revisions_and_the_loads() -> None:
    args = build_parser().parse_args(
        ["pair", "--a", "main", "--b", "HEAD", "--ops", "put,get", "--connections", "1,64"]
    )
    assert (args.command, args.a, args.b, args.rounds) == ("pair", "main", "HEAD", 6)
    assert (args.ops, args.connections, args.modes) == (["put", "get"], [1, 64], ["leader"])
    assert (args.duration, args.warmup) == (5.0, 2.0)
