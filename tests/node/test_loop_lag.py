"""The event-loop lag monitor (raftdb.node.loop_lag) and its metrics on a node."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from raftdb.node.loop_lag import LoopLagMonitor
from tests.soak.samples import lag_histogram, quantile

from .cluster import LocalCluster, eventually


def _count(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value("raftdb_event_loop_lag_seconds_count")
    return 0.0 if value is None else value


def test_a_blocked_loop_is_measured_as_lag() -> None:
    registry = CollectorRegistry()
    monitor = LoopLagMonitor(registry, interval=0.02, window=60.0)

    async def body() -> None:
        monitor.start()
        monitor.start()  # once only
        await eventually(lambda: _count(registry) >= 2, "two measurements")
        before = _count(registry)
        time.sleep(0.3)  # noqa: ASYNC251 - the blocking call the monitor exists to see
        await eventually(lambda: _count(registry) > before, "a measurement after the block")
        await monitor.stop()
        await monitor.stop()  # idempotent

    asyncio.run(body())
    parsed = lag_histogram(generate_latest(registry).decode())
    assert parsed is not None
    # The wake-up due during the block came at least 0.3 s minus one interval late.
    assert parsed.max_s >= 0.25
    below = registry.get_sample_value("raftdb_event_loop_lag_seconds_bucket", {"le": "0.2"})
    total = registry.get_sample_value("raftdb_event_loop_lag_seconds_bucket", {"le": "+Inf"})
    assert below is not None
    assert total is not None
    assert below < total


def test_the_max_gauge_covers_only_its_window() -> None:
    registry = CollectorRegistry()
    monitor = LoopLagMonitor(registry, interval=0.5, window=2.0)  # the last 4 measurements
    for lag in (3.0, 0.1, 0.2, 0.1, 0.05):
        monitor.observe(lag)
    assert registry.get_sample_value("raftdb_event_loop_lag_max_seconds") == 0.2
    monitor.observe(-0.001)  # a timer that fired a hair early counts as no lag
    assert registry.get_sample_value("raftdb_event_loop_lag_seconds_bucket", {"le": "0.001"}) == 1
    assert registry.get_sample_value("raftdb_event_loop_lag_seconds_count") == 6


def test_every_node_exports_its_loop_lag(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        node = c.nodes[1]
        await eventually(
            lambda: "raftdb_event_loop_lag_seconds_count 0.0" not in node.metrics_text(),
            "a first lag measurement",
        )
        parsed = lag_histogram(node.metrics_text())
        assert parsed is not None
        assert parsed.buckets[-1][1] >= 1
        assert quantile(0.99, parsed.since(None)) >= 0.0

    LocalCluster(tmp_path, 1).run(body)
