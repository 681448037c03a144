"""A long-lived thread that runs a node's disk jobs in order, fed by a plain queue.

Why not ``loop.run_in_executor(ThreadPoolExecutor(1), ...)``: every job then costs
a ``concurrent.futures.Future`` with its condition variable, a work item, the
executor's lock and semaphore, and ``asyncio.wrap_future``'s chain of callbacks
(the concurrent future's done-callback schedules a copy of its state into an
asyncio future, whose own callbacks are then scheduled in turn). A node submits
two such jobs per Ready (save, apply) on every member, so at one client
connection that fixed cost is paid for every single write. Here a job is one
tuple in a ``queue.SimpleQueue`` (implemented in C, no Python-level lock) and
its result one ``call_soon_threadsafe`` that settles an asyncio future directly.

Jobs run one at a time, first in first out, on the same thread (the storage and
the state machine rely on having a single writer). A job that raises settles its
future with the exception. A future cancelled while its job waits or runs does
not stop the job (disk work is never half done); its result is dropped.

A job may have a follow-up (:meth:`DiskThread.submit_then`), run on the thread
right after the job's result is posted and before the next job: the apply
thread makes a batch durable there, while the loop already answers it.

Several threads may share one :class:`Inbox` (a node's log and apply threads
do): their results wait in it, and only the first result after the loop last
emptied it costs a ``call_soon_threadsafe`` (a write to the loop's self-pipe
and a wake-up of its selector). A save and an apply that finish close together
are then handed back in one turn of the loop, not two.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

__all__ = ["DiskThread", "Inbox"]

_T = TypeVar("_T")
_Job = tuple[
    asyncio.AbstractEventLoop,
    "asyncio.Future[Any]",
    Callable[..., Any],
    tuple[Any, ...],
    Callable[[], None] | None,
]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]
#: Put on the queue by :meth:`DiskThread.shutdown`: the thread ends after the jobs before it.
_STOP: Final = None

log = logging.getLogger("raftdb.node")


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: hand a job's outcome to its future (unless it was cancelled)."""
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class Inbox:
    """Where disk threads leave their jobs' outcomes for the event loop: one
    ``call_soon_threadsafe`` per batch of outcomes, however many threads post."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Outcomes waiting for their loop, by loop; a loop is a key only while
        # its drain is scheduled.
        self._waiting: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}

    def post(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        result: Any,
        error: BaseException | None,
    ) -> None:
        """From any thread: settle ``future`` on ``loop`` soon (dropped if the loop is closed)."""
        with self._lock:
            waiting = self._waiting.get(loop)
            if waiting is not None:  # a drain is scheduled already: it takes this one too
                waiting.append((future, result, error))
                return
            self._waiting[loop] = [(future, result, error)]
        try:
            loop.call_soon_threadsafe(self._drain, loop)
        except RuntimeError:  # a closed loop: nobody awaits it
            with self._lock:
                self._waiting.pop(loop, None)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: settle every outcome posted for it, oldest first."""
        with self._lock:
            outcomes = self._waiting.pop(loop, [])
        for future, result, error in outcomes:
            _settle(future, result, error)


class DiskThread:
    """One thread, its jobs in order: :meth:`submit` from the event loop,
    :meth:`shutdown` once no job will be submitted any more."""

    def __init__(self, name: str, inbox: Inbox | None = None) -> None:
        """Args:
        name: the thread's name.
        inbox: where the outcomes go, shared with other threads (default: its own).
        """
        self._inbox = inbox if inbox is not None else Inbox()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._lock = threading.Lock()  # start and shutdown only, never per job
        self._started = False
        self._stopped = False

    def submit(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """Run ``fn(*args)`` on the thread after the jobs before it; the future
        (of the running loop) gets its result or its exception.

        Raises:
            RuntimeError: after :meth:`shutdown`.
        """
        return self.submit_then(fn, None, *args)

    def submit_then(
        self, fn: Callable[..., _T], then: Callable[[], None] | None, *args: Any
    ) -> asyncio.Future[_T]:
        """:meth:`submit`, and if ``fn`` returned, run ``then()`` on the thread once
        its result is posted, before the next job. ``then`` handles its own
        errors (one that escapes is logged; the thread goes on).

        Raises:
            RuntimeError: after :meth:`shutdown`.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        if not self._started:
            with self._lock:
                if self._stopped:
                    raise RuntimeError(f"{self._thread.name}: submit after shutdown")
                if not self._started:
                    self._thread.start()
                    self._started = True
        elif self._stopped:
            raise RuntimeError(f"{self._thread.name}: submit after shutdown")
        self._jobs.put((loop, future, fn, args, then))
        return future

    def shutdown(self) -> None:
        """Let the jobs submitted so far finish, then end the thread (blocking:
        call it from a thread, or when nothing is queued)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            started = self._started
        if started:
            self._jobs.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        jobs = self._jobs
        post = self._inbox.post
        while True:
            job = jobs.get()
            if job is None:
                return
            loop, future, fn, args, then = job
            outcome: tuple[Any, BaseException | None]
            try:
                outcome = (fn(*args), None)
            except BaseException as e:  # handed to the awaiting side, whatever it is
                outcome = (None, e)
            post(loop, future, *outcome)
            failed = outcome[1] is not None
            del job, future, outcome  # no reference to a result outlives its job
            if then is not None and not failed:
                try:
                    then()
                except Exception:
                    log.exception("%s: a job's follow-up failed", self._thread.name)
            del then
