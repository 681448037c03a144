"""How late the node's event loop wakes: ``raftdb_event_loop_lag_seconds``.

Everything a node does for its clients and peers runs on one asyncio loop, so a
callback that blocks it (a slow fsync done on the loop, a large JSON encode, a
CPU-bound check) delays every request and heartbeat at once. The cheapest way
to see that from outside is to ask the loop to wake a small task every
:data:`INTERVAL_S` and measure how late it does: on an idle, healthy loop the
lag is well under a millisecond; sustained lag of tens of milliseconds means
something blocks the loop.

The monitor costs one wake-up per interval. It records each measurement in a
histogram (``raftdb_event_loop_lag_seconds``: rates, quantiles over any window
by differencing two scrapes) and keeps the largest of the last
:data:`WINDOW_S` seconds as a gauge (``raftdb_event_loop_lag_max_seconds``),
since a histogram only bounds the maximum by its bucket. A process that is
stopped (``SIGSTOP``) or starved of CPU shows up too: the loop cannot run while
the process does not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Final

from prometheus_client import CollectorRegistry, Gauge, Histogram

__all__ = ["INTERVAL_S", "LAG_BUCKETS", "WINDOW_S", "LoopLagMonitor"]

#: How often the monitor asks to be woken, seconds.
INTERVAL_S: Final = 0.5
#: The span of ``raftdb_event_loop_lag_max_seconds``, seconds.
WINDOW_S: Final = 60.0
#: Histogram buckets, seconds: fine at the bottom, where a healthy loop lives.
LAG_BUCKETS: Final = (
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)


class LoopLagMonitor:
    """A periodic task measuring how late the running loop wakes it.

    Args:
        registry: where the two metrics are registered (the node's own).
        interval: seconds between wake-ups.
        window: the span of the max gauge, seconds.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        interval: float = INTERVAL_S,
        window: float = WINDOW_S,
    ) -> None:
        self.interval = interval
        self.histogram = Histogram(
            "raftdb_event_loop_lag_seconds",
            "How late the event loop woke a task that asked to wake every "
            f"{interval:g} s (time a callback blocked the loop).",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self._recent: deque[float] = deque(maxlen=max(1, round(window / interval)))
        self.max_gauge = Gauge(
            "raftdb_event_loop_lag_max_seconds",
            f"The largest event-loop lag of the last {window:g} s.",
            registry=registry,
        )
        self.max_gauge.set_function(lambda: max(self._recent, default=0.0))
        self._task: asyncio.Task[None] | None = None

    def observe(self, lag: float) -> None:
        """Record one measurement (``lag`` seconds, clamped at 0)."""
        lag = max(0.0, lag)
        self.histogram.observe(lag)
        self._recent.append(lag)

    def start(self) -> None:
        """Start measuring on the running loop (once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        """Stop measuring. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.observe(loop.time() - due)
