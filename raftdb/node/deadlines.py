"""Deadlines for the futures that requests wait on, checked by the node's ticker.

A request waits on a plain future; its time limit is an entry here, not an
``asyncio.wait_for`` around the wait. ``wait_for`` (with the ``shield`` a write
needs, so that a timeout does not cancel the proposal's future) made two more
futures, a timer and their callbacks for every request: about a tenth of the
leader's event loop under write load. Here a request costs a heap push and two
dictionary operations, and a timeout fires at most one tick late.

The heap holds only ``(deadline, token)`` pairs; the future and its error
callback sit in a dictionary that the waiter empties as soon as its wait ends
(:meth:`Deadlines.discard`). Holding them until the deadline instead kept
thousands of finished requests alive under load, and the garbage collector's
full passes over them stalled the loop for tens of milliseconds.

Every operation is O(log n) in the waits being timed: ``add`` pushes, ``sweep``
pops only what expired, ``discard`` is a dictionary pop. The heap entries of
discarded waits stay until their deadline comes; when they are most of the
heap, ``add`` rebuilds it from the waits still timed (amortized O(1) per
request), so the heap's size follows the requests waiting now, not all those
of the last ``request_timeout_s``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

__all__ = ["Deadlines"]

# Discarded entries the heap may hold beyond twice the live ones before ``add``
# rebuilds it: small heaps are never rebuilt.
_COMPACT_SLACK = 1024


class Deadlines:
    """Futures that fail with an error of their own when their deadline passes."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._waiting: dict[int, tuple[asyncio.Future[Any], Callable[[], BaseException]]] = {}
        self._tokens = itertools.count()

    def __len__(self) -> int:
        """How many waits are being timed."""
        return len(self._waiting)

    def add(
        self, deadline: float, future: asyncio.Future[Any], expire: Callable[[], BaseException]
    ) -> int:
        """Fail ``future`` with ``expire()`` if it is not done by ``deadline`` (loop time).

        ``expire`` is called only then: it may also forget the request (drop it
        from the node's tables) before returning the error to raise.

        Returns:
            A token for :meth:`discard`, which the waiter calls when its wait ends.
        """
        token = next(self._tokens)
        waiting, heap = self._waiting, self._heap
        waiting[token] = (future, expire)
        if len(heap) > 2 * len(waiting) + _COMPACT_SLACK:
            self._compact()
        heapq.heappush(heap, (deadline, token))
        return token

    def _compact(self) -> None:
        """Rebuild the heap from the waits still timed (see the module docstring)."""
        waiting = self._waiting
        self._heap[:] = [entry for entry in self._heap if entry[1] in waiting]
        heapq.heapify(self._heap)

    def discard(self, token: int) -> None:
        """The wait of ``token`` ended (answered, failed or cancelled): stop timing it."""
        self._waiting.pop(token, None)

    def sweep(self, now: float) -> int:
        """Fail the futures whose deadline is at or before ``now``; how many were failed."""
        heap, waiting = self._heap, self._waiting
        failed = 0
        while heap and heap[0][0] <= now:
            _, token = heapq.heappop(heap)
            entry = waiting.pop(token, None)
            if entry is not None and not entry[0].done():
                entry[0].set_exception(entry[1]())
                failed += 1
        return failed

    def clear(self) -> None:
        """Forget every deadline (the futures were answered some other way)."""
        self._heap.clear()
        self._waiting.clear()
