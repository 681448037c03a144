"""Watchers: the change feed of a node, fed by its applied batches (``GET /v1/watch``).

Theory of operation
-------------------
Every applied entry that changed keys carries its :class:`~raftdb.kv.changes.Change` s
(``KVResult.changes``); the node hands them to :meth:`WatchHub.publish` on the
loop, once the batch is applied, and then :meth:`WatchHub.advance` with the
batch's last index. The state machine keeps the same changes as its *watch
history* (the last ``watch_history`` of them, :meth:`StateMachine.history`),
so a watcher can start at any retained index, on any member.

A :class:`Watcher` is a consumer of one key or one prefix, from index ``since``
on. It has two modes:

- *catching up*: its consumer reads the history after its position in pages
  (``sm.history`` in a worker thread), keeping the matching changes. A page
  that ends the history, read after the hub's applied index, makes it live.
  A history whose floor passed its position (the window moved on, or a
  snapshot from the leader replaced the state) ends it with a ``closed`` event
  ``{"error": "compacted", "oldest_index": floor}``.
- *live*: :meth:`WatchHub.publish` appends matching changes to its queue.
  Changes at or below its position were read from the history already and are
  skipped, so that nothing is delivered twice and the two modes join without a
  gap (dedup by index; an index is never split, a transaction's changes
  arrive together).

The apply path is never slowed by watchers. ``publish`` costs O(matching
watchers): key watchers are found by one dict lookup, prefix watchers by one
lookup per distinct watched prefix length; a watcher's queue is a deque
appended to, its consumer woken by a future. Nothing in it blocks or awaits.
Events (:class:`~raftdb.node.handle.WatchEvent`) are made, and previous values
looked up, by the consumer.

Bounds: at most ``max_watchers`` watchers and blocking waits at once
(``429`` beyond), and at most ``watch_buffer`` changes queued per watcher. A
watcher whose queue would overflow gets, after what is queued, a final
``closed`` event ``{"error": "watcher_too_slow", "since": I}``: it has seen
every matching change up to ``I``, and resumes with ``since=I`` (``I`` is
the index before the first change it dropped). An index with more changes
than the buffer (a transaction, a lease's end) is still queued whole when
the queue is empty, so that every index can be delivered.

After ``watch_progress_s`` without an event, a watcher gets a ``progress``
event with the index up to which it has seen everything (etcd's progress
notify): the hub's applied index when it is live and idle.

:meth:`WatchHub.wait` is the same machinery without a queue: a Consul-style
blocking read returns once a matching change after an index exists.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Final, TypeVar

from raftdb.kv.changes import Change, ChangeKind
from raftdb.kv.commands import KeyValue
from raftdb.node.errors import (
    CompactedError,
    NodeError,
    ServiceUnavailableError,
    TooManyRequestsError,
)
from raftdb.node.handle import WatchEvent, WatchEventKind
from raftdb.raft.errors import StorageError, UsageError

if TYPE_CHECKING:
    from raftdb.kv.state_machine import StateMachine
    from raftdb.node.metrics import NodeMetrics

__all__ = ["HISTORY_PAGE", "WatchHub", "Watcher"]

log = logging.getLogger("raftdb.node")

_T = TypeVar("_T")

#: Changes read from the history at once while a watcher catches up.
HISTORY_PAGE: Final = 512
#: Previous values remembered (shared by the watchers that show them), at most
#: this many and this many bytes of keys and values.
_PREV_CACHE: Final = 4096
_PREV_CACHE_BYTES: Final = 8 << 20
#: Previous values looked up in a row before a watcher lets the loop run others
#: (a lease's end may delete thousands of keys at one index).
_PREV_BURST: Final = 64
#: ``Retry-After`` of a ``429`` for too many watchers.
_BUSY_RETRY_AFTER: Final = 1.0


def _unavailable(e: Exception) -> NodeError:
    return ServiceUnavailableError(f"reading the watch history failed: {type(e).__name__}: {e}")


def _size(slot: tuple[bytes, int], kv: KeyValue | None) -> int:
    """What a remembered previous value costs, roughly, in bytes."""
    return len(slot[0]) + (len(kv.value) if kv is not None else 0) + 64


def _stopped_data(error: NodeError, since: int) -> dict[str, int | str]:
    """A ``closed`` event's data for a watcher ended by ``error``: resume after ``since``."""
    return {"error": error.code, "message": error.message, "since": since}


class _Subscriber(abc.ABC):
    """What the hub's index holds: a watcher or a blocking wait, on a key or a prefix."""

    __slots__ = ("key", "prefix")

    def __init__(self, prefix: bytes, key: bytes | None) -> None:
        self.prefix = prefix
        self.key = key

    def matches(self, key: bytes) -> bool:
        """Whether a change of ``key`` is one this subscriber wants."""
        return key == self.key if self.key is not None else key.startswith(self.prefix)

    @abc.abstractmethod
    def offer(self, index: int, changes: Sequence[Change]) -> None:
        """The matching changes of the entry at ``index`` (on the loop; must not block)."""

    @abc.abstractmethod
    def reset(self) -> None:
        """The state machine was replaced by a snapshot: what was applied jumped."""

    @abc.abstractmethod
    def stop(self, error: NodeError) -> None:
        """The node stops serving: end with ``error``."""


class WatchHub:
    """A node's watchers and blocking waits: see the module docstring.

    Every method runs on the node's event loop.
    """

    def __init__(
        self,
        state_machine: Callable[[], StateMachine | None],
        *,
        max_watchers: int,
        buffer: int,
        progress_s: float,
        metrics: NodeMetrics | None = None,
        damaged: Callable[[Exception], NodeError] | None = None,
        page: int = HISTORY_PAGE,
    ) -> None:
        """Args:
        state_machine: the node's state machine (``None`` before it is open).
        max_watchers: most watchers and waits at once (``max_watchers``).
        buffer: most changes queued per watcher (``watch_buffer``).
        progress_s: idle time before a ``progress`` event (``watch_progress_s``).
        metrics: where watchers and delivered events are counted.
        damaged: what a failed history read becomes (the node stops serving on
            damage found by a read, and answers ``503``); default: a ``503``.
        page: changes read from the history at once.
        """
        self._sm = state_machine
        self.max_watchers = max_watchers
        self.buffer = buffer
        self.progress_s = progress_s
        self.page = page
        self._metrics = metrics
        self._damaged = damaged or _unavailable
        #: The last index published (every change up to it went through publish).
        self.applied = 0
        #: Counts restores: a history read started before one is thrown away.
        self.epoch = 0
        #: Watchers and waits holding a slot (``max_watchers``).
        self.count = 0
        self._by_key: dict[bytes, dict[_Subscriber, None]] = {}
        self._by_prefix: dict[bytes, dict[_Subscriber, None]] = {}
        self._lengths: list[int] = []  # distinct lengths of watched prefixes, ascending
        self._length_uses: dict[int, int] = {}
        self._subscribed = 0
        self._prev: collections.OrderedDict[tuple[bytes, int], KeyValue | None]
        self._prev = collections.OrderedDict()
        self._prev_bytes = 0
        self._stopped: NodeError | None = None
        # Watchers with new changes to wake at the end of the batch (advance).
        self._to_wake: list[Watcher] = []
        self._wake_scheduled = False

    # -- what the node calls ---------------------------------------------------------

    def start(self, applied: int) -> None:
        """The state machine is open at ``applied``: everything up to it is history."""
        self.applied = applied

    def publish(self, changes: Sequence[Change]) -> None:
        """One applied entry's changes (all at one index), to the watchers that match.

        O(matching watchers) plus one lookup per distinct watched prefix length;
        never blocks (see the module docstring).
        """
        if not self._subscribed or not changes:
            return
        index = changes[0].index
        if len(changes) == 1:  # the common case, without the grouping below
            for sub in self._matching_list(changes[0].key):
                sub.offer(index, changes)
            return
        targets: dict[_Subscriber, list[Change]] = {}
        for change in changes:
            for sub in self._matching(change.key):
                found = targets.get(sub)
                if found is None:
                    targets[sub] = [change]
                else:
                    found.append(change)
        for sub, matching in targets.items():
            sub.offer(index, matching)

    def advance(self, applied: int) -> None:
        """Every change up to ``applied`` is published (the end of an applied batch).

        The watchers that got changes are woken after the batch, in one loop
        callback: once per batch each, however many changes it had, and not
        on the apply path (its requests are answered first).
        """
        if applied > self.applied:
            self.applied = applied
        if self._to_wake and not self._wake_scheduled:
            self._wake_scheduled = True
            asyncio.get_running_loop().call_soon(self._wake_all)

    def _wake_later(self, watcher: Watcher) -> None:
        self._to_wake.append(watcher)

    def _wake_all(self) -> None:
        self._wake_scheduled = False
        to_wake, self._to_wake = self._to_wake, []
        for watcher in to_wake:
            watcher._wake()

    def restored(self, applied: int) -> None:
        """A leader's snapshot replaced the state machine's state, now at ``applied``.

        Live watchers missed what the snapshot skipped: each catches up again
        from its position, from the snapshot's history (or ends ``compacted``).
        Blocking waits return (something may have changed).
        """
        self.epoch += 1
        self.applied = applied
        self._prev.clear()
        self._prev_bytes = 0
        for subs in (*self._by_key.values(), *self._by_prefix.values()):
            for sub in list(subs):
                sub.reset()

    def stop(self, error: NodeError) -> None:
        """The node stops serving: every watcher ends with a ``closed`` event naming
        ``error``, every wait raises it, and new ones are refused with it."""
        self._stopped = error
        for subs in (*self._by_key.values(), *self._by_prefix.values()):
            for sub in list(subs):
                sub.stop(error)

    # -- watchers and waits ----------------------------------------------------------

    async def watch(
        self, *, prefix: bytes = b"", key: bytes | None = None, since: int, prev: bool = False
    ) -> Watcher:
        """A watcher of ``key`` (or of every key under ``prefix``) after index ``since``.

        ``since`` must not be ahead of what this node applied (the node checks
        that against a read index first). The first page of the history is
        read before this returns, so a compacted ``since`` fails here, before a
        stream starts.

        Raises:
            TooManyRequestsError: ``max_watchers`` watchers and waits exist (``429``).
            CompactedError: changes after ``since`` are no longer retained (``410``).
            NodeError: the node has stopped serving (the error it stopped with).
        """
        self._admit()
        watcher = Watcher(self, prefix, key, since, prev)
        try:
            await watcher._start()
        except BaseException:
            watcher._release()
            raise
        return watcher

    async def wait(
        self,
        *,
        prefix: bytes = b"",
        key: bytes | None = None,
        after: int,
        timeout: float,  # noqa: ASYNC109 (a blocking read's wait: its end is an answer)
    ) -> None:
        """Return once a change of ``key`` (or under ``prefix``) with an index above
        ``after`` is applied here, or after ``timeout`` seconds, whichever is first.

        A change already applied returns at once (found in the history); so
        does an ``after`` older than the history (``compacted``: it cannot be
        told, so the caller reads again), and a snapshot installed meanwhile.

        Raises:
            TooManyRequestsError: ``max_watchers`` watchers and waits exist (``429``).
            NodeError: the node stopped serving meanwhile.
        """
        self._admit()
        self.count += 1
        self._count_changed()
        waiter = _Waiter(self, prefix, key, after)
        self._subscribe(waiter)
        try:
            if after < self.applied and await self._changed_since(waiter, after):
                return
            with contextlib.suppress(TimeoutError):
                # Raises the node's error if it stops serving meanwhile.
                await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
        finally:
            self._unsubscribe(waiter)
            self.count -= 1
            self._count_changed()
            if waiter.future.done() and not waiter.future.cancelled():
                waiter.future.exception()  # retrieved: a stop that came after the answer

    async def _changed_since(self, waiter: _Waiter, after: int) -> bool:
        """Whether the history holds a change ``waiter`` matches after ``after``, up to
        the applied index (or the history no longer reaches back to ``after``)."""
        position = after
        epoch = self.epoch
        while position < self.applied and not waiter.future.done():
            page = await self.read_history(position)
            if page is None or self.epoch != epoch:
                return True  # the state machine went away, or was replaced: read again
            floor, changes, seen = page
            if position < floor:
                return True
            if any(waiter.matches(c.key) for c in changes):
                return True
            position = max(position, seen)
        return False

    async def read_history(self, after: int) -> tuple[int, list[Change], int] | None:
        """One page of the history after ``after``, in a worker thread:
        ``(floor, changes, seen)``, every change up to ``seen`` being in the page
        or before ``after``; ``None`` without a state machine.

        Raises:
            NodeError: the read failed (damage: the node stops serving), or the
                node stopped meanwhile.
        """
        sm = self._sm()
        if sm is None:
            return None
        page = self.page

        def read() -> tuple[int, list[Change], int]:
            # Read before the history: the history's view is at or after it.
            applied = sm.applied_index
            floor, changes = sm.history(after, page)
            if len(changes) >= page:
                return floor, changes, changes[-1].index  # more may follow
            last = changes[-1].index if changes else after
            return floor, changes, max(last, applied)

        return await self._read(read)

    async def _read(self, read: Callable[[], _T]) -> _T:
        """``read()`` of the state machine in a worker thread; its failure as a NodeError."""
        try:
            return await asyncio.to_thread(read)
        except (StorageError, OSError, UsageError) as e:
            if self._stopped is not None:
                raise self._stopped from None  # closed under the read: the node stops
            if isinstance(e, UsageError):
                raise
            raise self._damaged(e) from None

    def previous(self, change: Change) -> KeyValue | None:
        """The key as it was before ``change`` (its change at ``prev_mod_index``), if the
        history still holds it; remembered for every watcher that shows it.

        A point read of the history on the loop, as a ``get`` is (one seek in
        the state machine's history; no thread hop per event).

        Raises:
            NodeError: the read failed (damage: the node stops serving).
        """
        wanted = change.prev_mod_index
        if wanted <= 0:
            return None
        if wanted == change.index:
            # An earlier write of the same transaction: not remembered (several
            # writes of one key in one transaction would share the slot).
            return self._look_up_previous(change)
        slot = (change.key, wanted)
        cache = self._prev
        if slot in cache:
            return cache[slot]
        found = self._look_up_previous(change)
        cache[slot] = found
        self._prev_bytes += _size(slot, found)
        while len(cache) > _PREV_CACHE or self._prev_bytes > _PREV_CACHE_BYTES:
            self._prev_bytes -= _size(*cache.popitem(last=False))
        return found

    def _look_up_previous(self, change: Change) -> KeyValue | None:
        sm = self._sm()
        if sm is None:
            return None
        wanted = change.prev_mod_index
        try:
            floor, changes = sm.history(wanted - 1, 1)
        except (StorageError, OSError) as e:
            raise self._damaged(e) from None
        if wanted <= floor:
            return None
        before: Change | None = None
        for c in changes:
            if c.index != wanted:
                break
            if c.index == change.index and c == change:
                break  # an earlier write of the same transaction, if any, is before it
            if c.key == change.key:
                before = c
        if before is None or before.kind != ChangeKind.PUT:
            return None
        return KeyValue(before.key, before.value, before.create_index, before.mod_index)

    # -- the index of subscribers ----------------------------------------------------

    def _admit(self) -> None:
        if self._stopped is not None:
            raise self._stopped
        if self.count >= self.max_watchers:
            raise TooManyRequestsError(
                f"this node serves {self.count} watchers and waits, its limit "
                "(max_watchers); retry shortly or watch through another node",
                _BUSY_RETRY_AFTER,
            )

    def _count_changed(self) -> None:
        if self._metrics is not None:
            self._metrics.watchers.set(self.count)

    def _matching_list(self, key: bytes) -> list[_Subscriber]:
        """:meth:`_matching` as a list (the subscribers may leave while offered to)."""
        exact = self._by_key.get(key)
        found: list[_Subscriber] = list(exact) if exact else []
        by_prefix = self._by_prefix
        size = len(key)
        for length in self._lengths:
            if length > size:
                break
            subs = by_prefix.get(key[:length])
            if subs:
                found.extend(subs)
        return found

    def _matching(self, key: bytes) -> Iterator[_Subscriber]:
        exact = self._by_key.get(key)
        if exact:
            yield from exact
        by_prefix = self._by_prefix
        size = len(key)
        for length in self._lengths:
            if length > size:
                return
            subs = by_prefix.get(key[:length])
            if subs:
                yield from subs

    def _subscribe(self, sub: _Subscriber) -> None:
        if sub.key is not None:
            self._by_key.setdefault(sub.key, {})[sub] = None
        else:
            self._by_prefix.setdefault(sub.prefix, {})[sub] = None
            length = len(sub.prefix)
            uses = self._length_uses.get(length, 0)
            self._length_uses[length] = uses + 1
            if not uses:
                self._lengths = sorted(self._length_uses)
        self._subscribed += 1

    def _unsubscribe(self, sub: _Subscriber) -> None:
        table, name = (
            (self._by_key, sub.key) if sub.key is not None else (self._by_prefix, sub.prefix)
        )
        subs = table.get(name)
        if subs is None or sub not in subs:
            return
        del subs[sub]
        if not subs:
            del table[name]
        self._subscribed -= 1
        if sub.key is None:
            length = len(sub.prefix)
            uses = self._length_uses[length] - 1
            if uses:
                self._length_uses[length] = uses
            else:
                del self._length_uses[length]
                self._lengths = sorted(self._length_uses)

    def _delivered(self) -> None:
        if self._metrics is not None:
            self._metrics.watch_events.inc()


class _Waiter(_Subscriber):
    """A blocking wait (:meth:`WatchHub.wait`): a future set by the first match."""

    __slots__ = ("after", "future", "hub")

    def __init__(self, hub: WatchHub, prefix: bytes, key: bytes | None, after: int) -> None:
        super().__init__(prefix, key)
        self.hub = hub
        self.after = after
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def offer(self, index: int, changes: Sequence[Change]) -> None:
        if index > self.after and not self.future.done():
            self.future.set_result(None)
            self.hub._unsubscribe(self)

    def reset(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def stop(self, error: NodeError) -> None:
        if not self.future.done():
            self.future.set_exception(error)
        self.hub._unsubscribe(self)


class Watcher(_Subscriber):
    """One watch stream: an async iterator of :class:`~raftdb.node.handle.WatchEvent` s.

    ``put`` and ``delete`` events in index order, ``progress`` events when
    idle, and at most one final ``closed`` event, after which iteration ends
    (see the module docstring). Call :meth:`aclose` when done with it (the
    stream's client went away): that frees its ``max_watchers`` slot.
    Iterated by one consumer task at a time.
    """

    __slots__ = (
        "_epoch",
        "_final",
        "_finished",
        "_group_index",
        "_group_prevs",
        "_holds_slot",
        "_hub",
        "_last_sent",
        "_live",
        "_queue",
        "_started",
        "_wake_due",
        "_wakeup",
        "position",
        "prev",
    )

    def __init__(
        self, hub: WatchHub, prefix: bytes, key: bytes | None, since: int, prev: bool
    ) -> None:
        super().__init__(prefix, key)
        self._hub = hub
        #: Every matching change up to this index is queued or delivered.
        self.position = since
        #: Whether events carry the previous value (``WatchEvent.prev``).
        self.prev = prev
        self._queue: collections.deque[Change] = collections.deque()
        self._live = False
        self._final: WatchEvent | None = None
        self._finished = False
        self._wakeup: asyncio.Future[None] | None = None
        self._wake_due = False  # in the hub's list of watchers to wake
        self._epoch = hub.epoch
        self._started = False  # _start returned: failures end the stream, not the call
        # With prev: the index whose previous values were looked up, and those
        # not handed out yet (see _look_up_group).
        self._group_index = -1
        self._group_prevs: collections.deque[KeyValue | None] = collections.deque()
        self._last_sent = asyncio.get_running_loop().time()
        hub.count += 1
        hub._count_changed()
        self._holds_slot = True
        hub._subscribe(self)

    @property
    def live(self) -> bool:
        """Whether it follows the applied batches (it has caught up with the history)."""
        return self._live

    @property
    def closed(self) -> bool:
        """Whether it has ended (its last event was handed out, or :meth:`aclose`)."""
        return self._finished

    @property
    def ready(self) -> bool:
        """Whether an event or the end is queued (``__anext__`` does not wait for a change)."""
        return bool(self._queue) or self._final is not None or self._finished

    async def _start(self) -> None:
        """Catch up from the history once, so a compacted start raises here."""
        hub = self._hub
        if self.position >= hub.applied:
            self._live = True
            self._started = True
            return
        await self._catch_up()
        self._started = True
        final = self._final
        if final is not None and final.data and final.data.get("error") == "compacted":
            oldest = final.data["oldest_index"]
            assert isinstance(oldest, int)
            raise CompactedError(
                f"the changes after index {self.position} are no longer retained "
                f"(watch_history); the oldest index to watch from is {oldest}",
                oldest,
            )

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> WatchEvent:
        hub = self._hub
        loop = asyncio.get_running_loop()
        while True:
            if self._finished:
                raise StopAsyncIteration
            if self._queue:
                change = self._queue[0]
                previous = None
                if self.prev:
                    if change.index != self._group_index and not await self._look_up_group():
                        continue  # ended (a failed lookup, or meanwhile): look again
                    previous = self._group_prevs.popleft() if self._group_prevs else None
                self._queue.popleft()
                self._last_sent = loop.time()
                hub._delivered()
                kind: WatchEventKind = "put" if change.kind == ChangeKind.PUT else "delete"
                return WatchEvent(kind, change.index, change, previous)
            if self._final is not None:
                final = self._final
                self._finish()
                return final
            idle = loop.time() - self._last_sent
            if idle >= hub.progress_s:
                self._last_sent = loop.time()
                seen = max(self.position, hub.applied) if self._live else self.position
                return WatchEvent("progress", seen, data={"applied_index": seen})
            if not self._live:
                await self._catch_up()
                continue
            # A bare future and a timer (not asyncio.wait, which costs several
            # callbacks per wake-up): waking 1,000 watchers is 1,000 set_result.
            wakeup: asyncio.Future[None] = loop.create_future()
            self._wakeup = wakeup
            timer = loop.call_later(hub.progress_s - idle, _wake_up, wakeup)
            try:
                await wakeup
            finally:
                timer.cancel()
                self._wakeup = None

    async def aclose(self) -> None:
        """End the stream now and free its slot (idempotent)."""
        self._finish()

    async def _look_up_group(self) -> bool:
        """The previous values of the queued changes at the first queued index, all
        before the first of them is handed out, so that a failed lookup ends the
        stream between two indexes, never inside one (its ``since`` must not
        split a transaction). Whether the first queued change can go out now
        (the stream may have ended meanwhile: the loop runs others between
        bursts of lookups)."""
        queue = self._queue
        change = queue[0]
        group = list(itertools.takewhile(lambda c: c.index == change.index, queue))
        prevs: list[KeyValue | None] = []
        try:
            for done, c in enumerate(group, start=1):
                prevs.append(self._hub.previous(c))
                if done % _PREV_BURST == 0:
                    await asyncio.sleep(0)
                    if self._finished or not queue or queue[0] is not change:
                        return False
        except NodeError as e:
            queue.clear()
            self._end(_stopped_data(e, change.index - 1))
            return False
        self._group_index = change.index
        self._group_prevs = collections.deque(prevs)
        return True

    # -- internals --------------------------------------------------------------------

    async def _catch_up(self) -> None:
        """Read one page of the history after :attr:`position`; go live at its end."""
        hub = self._hub
        epoch = hub.epoch
        try:
            page = await hub.read_history(self.position)
        except NodeError as e:
            if not self._started:
                raise  # before the stream: the caller answers it
            self._end(_stopped_data(e, self.position))
            return
        if self._finished or self._final is not None:
            return
        if page is None:
            self._end({"error": "unavailable", "since": self.position})
            return
        if hub.epoch != epoch or self._epoch != epoch:
            self._epoch = hub.epoch
            return  # a snapshot replaced the state meanwhile: read again
        floor, changes, seen = page
        if self.position < floor:
            self._end({"error": "compacted", "oldest_index": floor})
            return
        position = self.position
        queue = self._queue
        for change in changes:
            if change.index > position and self.matches(change.key):
                queue.append(change)
        self.position = max(position, seen)
        if self.position >= hub.applied:
            self._live = True

    def offer(self, index: int, changes: Sequence[Change]) -> None:
        if not self._live or index <= self.position or self._final is not None:
            return
        queue = self._queue
        if queue and len(queue) + len(changes) > self._hub.buffer:
            self._end({"error": "watcher_too_slow", "since": index - 1})
            return
        queue.extend(changes)
        self.position = index
        if self._wakeup is not None and not self._wake_due:
            self._wake_due = True
            self._hub._wake_later(self)

    def reset(self) -> None:
        self._live = False
        self._wake()

    def stop(self, error: NodeError) -> None:
        if self._final is None:
            self._end(_stopped_data(error, self.position))

    def _end(self, data: dict[str, int | str]) -> None:
        """End after what is queued with a ``closed`` event; stop receiving changes."""
        since = data.get("since", self.position)
        assert isinstance(since, int)
        self._final = WatchEvent("closed", since, data=data)
        self._hub._unsubscribe(self)
        self._wake()

    def _finish(self) -> None:
        self._finished = True
        self._queue.clear()
        self._hub._unsubscribe(self)
        self._release()
        self._wake()

    def _release(self) -> None:
        if self._holds_slot:
            self._holds_slot = False
            self._hub._unsubscribe(self)
            self._hub.count -= 1
            self._hub._count_changed()

    def _wake(self) -> None:
        self._wake_due = False
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)


def _wake_up(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
