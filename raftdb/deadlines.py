"""Deadlines for the futures that requests wait on, checked by the node's ticker.

A request waits on a plain future; its time limit is an entry here, not an
``asyncio.wait_for`` around the wait. ``wait_for`` (with the ``shield`` a write
needs, so that a timeout does not cancel the proposal's future) made two more
futures, a timer and their callbacks for every request: about a tenth of the
leader's event loop under write load. One heap, swept every tick, costs a push
per request, and a timeout fires at most one tick late.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

__all__ = ["Deadlines"]


class Deadlines:
    """Futures that fail with an error of their own when their deadline passes."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, asyncio.Future[Any], Callable[[], BaseException]]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def add(
        self, deadline: float, future: asyncio.Future[Any], expire: Callable[[], BaseException]
    ) -> None:
        """Fail ``future`` with ``expire()`` if it is not done by ``deadline`` (loop time).

        ``expire`` is called only then: it may also forget the request (drop it
        from the node's tables) before returning the error to raise.
        """
        heapq.heappush(self._heap, (deadline, next(self._order), future, expire))

    def sweep(self, now: float) -> int:
        """Fail the futures whose deadline is at or before ``now``; how many were failed."""
        heap = self._heap
        failed = 0
        while heap and heap[0][0] <= now:
            _, _, future, expire = heapq.heappop(heap)
            if not future.done():
                future.set_exception(expire())
                failed += 1
        return failed

    def clear(self) -> None:
        """Forget every deadline (the futures were answered some other way)."""
        self._heap.clear()
