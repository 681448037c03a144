"""The soak's trend check, sample parsing and leak check, on synthetic data (fast)."""

from __future__ import annotations

import math
import random
import socket
from pathlib import Path

import pytest

from tests.soak.leaks import leftovers
from tests.soak.samples import (
    Sample,
    append,
    lag_histogram,
    proc_figures,
    quantile,
    read_samples,
    write_header,
)
from tests.soak.trend import BOUNDS, check_trends, fit_line, segments

HOUR = 3600.0


def _series(
    node: int,
    segment: int,
    rss: list[float],
    *,
    start: float = 0.0,
    every: float = 60.0,
    fds: list[int] | None = None,
    threads: list[int] | None = None,
) -> list[Sample]:
    return [
        Sample(
            t=start + n * every,
            node=node,
            segment=segment,
            pid=1000 * node + segment,
            rss_mib=value,
            fds=fds[n] if fds else 30,
            threads=threads[n] if threads else 9,
            lag_max_s=0.002,
            lag_p99_s=0.001,
        )
        for n, value in enumerate(rss)
    ]


def _grows(samples: list[Sample], warmup: float = 0.0) -> list[str]:
    return [f"{g.node}/{g.segment}/{g.figure}" for g in check_trends(samples, warmup) if g.grows]


def test_the_line_fit_is_least_squares() -> None:
    fit = fit_line([0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 5.0, 7.0])
    assert fit.slope == pytest.approx(2.0)
    assert fit.intercept == pytest.approx(1.0)
    assert fit.rise == pytest.approx(6.0)
    assert fit.points == 4
    with pytest.raises(ValueError, match="distinct times"):
        fit_line([1.0, 1.0], [2.0, 3.0])


def test_flat_series_pass() -> None:
    samples = _series(1, 1, [60.0] * 120)  # two hours, one sample a minute
    grown = check_trends(samples, warmup=300)
    assert {g.figure for g in grown} == set(BOUNDS)
    assert all(g.fit.per_hour == pytest.approx(0.0) for g in grown)
    assert _grows(samples) == []


def test_noisy_flat_series_pass() -> None:
    rng = random.Random(7)
    # +- 3 MiB of allocator noise around 60 MiB, fds and threads moving by a few.
    rss = [60 + rng.uniform(-3, 3) for _ in range(120)]
    fds = [30 + rng.randrange(-6, 7) for _ in range(120)]
    threads = [9 + rng.randrange(-2, 3) for _ in range(120)]
    assert _grows(_series(1, 1, rss, fds=fds, threads=threads)) == []
    # A short segment of the same noise would fit a steep line: the floor keeps it quiet.
    short = _series(2, 3, [52.0, 55.0, 53.0, 58.0, 56.0], every=3.0)
    assert fit_line([s.t for s in short], [s.rss_mib for s in short]).per_hour > 1000
    assert _grows(short) == []


def test_a_leaking_series_fails() -> None:
    # 60 MiB growing 0.2 MiB a minute: 12 MiB/h, 20 %/h of its mean, 24 MiB in two hours.
    leak = _series(1, 1, [60 + 0.2 * n for n in range(120)])
    assert _grows(leak) == ["1/1/rss_mib"]
    (growth,) = [g for g in check_trends(leak, 0) if g.grows]
    assert growth.fit.per_hour == pytest.approx(12.0)
    assert "node 1 (process 1) rss_mib grows +12.00/h" in growth.describe()
    # An fd per minute and a thread every five minutes leak too.
    fds = _series(2, 1, [60.0] * 120, fds=[30 + n for n in range(120)])
    threads = _series(3, 1, [60.0] * 120, threads=[9 + n // 5 for n in range(120)])
    assert _grows(fds + threads) == ["2/1/fds", "3/1/threads"]


def test_the_warmup_and_restarts_split_the_series() -> None:
    # A process that fills its caches for 5 minutes, then stays flat, is not a leak...
    warming = _series(1, 1, [30 + 6 * n for n in range(5)] + [60.0] * 40)
    assert _grows(warming, warmup=0) == ["1/1/rss_mib"]
    assert _grows(warming, warmup=300) == []
    # ... and neither is a node whose every new process starts low again (kills).
    restarts = [
        s
        for k in range(4)
        for s in _series(2, k + 1, [40.0 + (n % 3) for n in range(10)], start=k * 600.0)
    ]
    assert sorted(segments(restarts)) == [(2, 1), (2, 2), (2, 3), (2, 4)]
    assert _grows(restarts, warmup=60) == []
    # A segment with too few samples after warm-up is not judged at all.
    assert check_trends(_series(3, 1, [50.0, 90.0, 130.0]), warmup=0) == []


def test_samples_round_trip_through_csv(tmp_path: Path) -> None:
    path = tmp_path / "samples.csv"
    write_header(path)
    written = _series(1, 1, [52.125, 53.5]) + [
        Sample(120.0, 2, 2, 7, 51.0, 12, 3, math.nan, math.nan)
    ]
    append(path, written[:2])
    append(path, written[2:])
    back = read_samples(path)
    assert back[:2] == written[:2]
    assert math.isnan(back[2].lag_p99_s)
    assert back[2].fds == 12


_METRICS = """\
# HELP raftdb_event_loop_lag_seconds lag
# TYPE raftdb_event_loop_lag_seconds histogram
raftdb_event_loop_lag_seconds_bucket{le="0.001"} 90.0
raftdb_event_loop_lag_seconds_bucket{le="0.01"} 99.0
raftdb_event_loop_lag_seconds_bucket{le="0.1"} 100.0
raftdb_event_loop_lag_seconds_bucket{le="+Inf"} 100.0
raftdb_event_loop_lag_seconds_count 100.0
raftdb_event_loop_lag_seconds_sum 0.2
raftdb_event_loop_lag_max_seconds 0.04
"""


def test_lag_quantiles_come_from_histogram_differences() -> None:
    first = lag_histogram(_METRICS)
    assert first is not None
    assert first.max_s == 0.04
    assert quantile(0.99, first.since(None)) == pytest.approx(0.01)
    assert quantile(0.5, first.since(None)) == pytest.approx(0.001 * 50 / 90)
    later = lag_histogram(
        _METRICS.replace('"0.001"} 90.0', '"0.001"} 100.0')
        .replace('"0.01"} 99.0', '"0.01"} 109.0')
        .replace('"0.1"} 100.0', '"0.1"} 120.0')
        .replace('"+Inf"} 100.0', '"+Inf"} 120.0')
    )
    assert later is not None
    # Since the first scrape: 10 under 1 ms, 10 more between 10 and 100 ms.
    assert later.since(first) == [(0.001, 10.0), (0.01, 10.0), (0.1, 20.0), (math.inf, 20.0)]
    assert quantile(0.99, later.since(first)) == pytest.approx(0.01 + 0.09 * 9.8 / 10)
    assert math.isnan(quantile(0.99, first.since(first)))
    assert lag_histogram("raftdb_term 3.0\n") is None


def test_proc_figures_of_this_process() -> None:
    import os

    figures = proc_figures(os.getpid())
    assert figures is not None
    assert figures.rss_mib > 1
    assert figures.fds >= 3
    assert figures.threads >= 1
    assert proc_figures(2**22 + 12345) is None  # above pid_max: never a process


def test_leftovers_finds_a_port_still_taken(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        found = leftovers(tmp_path, pids=[2**22 + 12345], ports=[port])
        assert found == [f"port {port} is still taken"]
    assert leftovers(tmp_path, pids=[], ports=[port]) == []


def test_judge_reads_a_run_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.soak.judge import main

    write_header(tmp_path / "samples.csv")
    append(tmp_path / "samples.csv", _series(1, 1, [60 + 0.2 * n for n in range(120)]))
    assert main([str(tmp_path), "--no-plot", "--warmup-seconds", "0"]) == 1
    out = capsys.readouterr().out
    assert "node 1 process 1 rss_mib: +12.00/h" in out
    assert "GROWS" in out
    flat = tmp_path / "flat"
    flat.mkdir()
    write_header(flat / "samples.csv")
    append(flat / "samples.csv", _series(2, 1, [60.0] * 30))
    assert main([str(flat), "--no-plot"]) == 0
