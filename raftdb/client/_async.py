"""The asyncio client: :class:`AsyncClient`, a thin driver of the shared call logic
(the same calls, retries and results as :class:`~raftdb.client.Client`)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator
from types import TracebackType
from typing import BinaryIO, TypeVar

import httpx

from raftdb.client import _ops
from raftdb.client._base import ClientBase, answer, failure
from raftdb.client._core import Op, Outcome, Send, Sleep, Step, describe_failure, run_call
from raftdb.client._ops import Consistency
from raftdb.client._snapshot import (
    SNAPSHOT_REQUEST,
    Download,
    Progress,
    SnapshotSaved,
    next_member,
    parse_header,
    refusal,
    retried,
)
from raftdb.client._sync import WATCH_IDLE_TIMEOUT, _read_index
from raftdb.client._watch import (
    ProgressEvent,
    SSEParser,
    StreamClosed,
    WatchCursor,
    WatchEvent,
    open_error,
    watch_keys,
)
from raftdb.client.errors import (
    EndpointsUnavailableError,
    LeaseNotFoundError,
    LockNotHeldError,
    RaftdbError,
)
from raftdb.client.txn import Txn
from raftdb.client.types import (
    DeleteResult,
    GetResult,
    KeyValue,
    Lease,
    LeaseInfo,
    Listing,
    LockHold,
    Member,
    Status,
    TxnResult,
    WriteResult,
    to_bytes,
)

T = TypeVar("T")


class AsyncClient(ClientBase):
    """An asyncio raftdb client over one or more endpoints (see docs/client.md).

    ``endpoints`` is a list of API URLs or one comma-separated string. ``timeout`` bounds
    every call (all its attempts and waits); each method takes its own ``timeout=`` too.
    ``token`` is sent as ``Authorization: Bearer``; ``ca_file`` verifies the nodes'
    certificates, ``cert_file``/``key_file`` is the client's certificate. Safe for
    concurrent tasks of one event loop; close it (or use ``async with``) to free its connections.
    """

    def _open(self) -> None:
        self._http = httpx.AsyncClient(verify=self._verify, timeout=self.timeout)

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- driving the shared logic -------------------------------------------------------

    async def _send(self, step: Send) -> Outcome:
        r = step.request
        try:
            resp = await self._http.request(
                r.method,
                step.endpoint + r.target,
                content=r.content,
                headers=r.all_headers(self.token),
                timeout=self._attempt_timeout(step.timeout),
            )
        except httpx.TransportError as e:
            return failure(e)
        return answer(resp)

    async def _drive(self, gen: Generator[Step, Outcome, T]) -> T:
        try:
            step = next(gen)
            while True:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    step = gen.send(None)
                else:
                    step = gen.send(await self._send(step))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _run(self, op: Op[T], timeout: float | None, pin: str | None = None) -> T:
        return await self._drive(run_call(self.view, op, self._timeout(timeout), pin=pin))

    # -- keys ---------------------------------------------------------------------------

    async def get(
        self,
        key: bytes | str,
        *,
        consistency: Consistency = "linearizable",
        wait_index: int | None = None,
        wait: float = 60.0,
        timeout: float | None = None,
    ) -> GetResult | None:
        """The key's value and ``mod_index``, or ``None`` when the key does not exist.
        ``consistency="stale"``: answered from the member's own state, at once.
        ``wait_index``: a blocking read (Consul's): answers once the key changes after
        that index (give the last answer's ``read_index``), or after ``wait`` seconds
        with the value as it is; ``timeout`` is then counted beyond ``wait``."""
        op = _ops.get(key, consistency, wait_index=wait_index, wait=wait)
        extra = 0.0 if wait_index is None else wait
        return await self._run(op, self._timeout(timeout) + extra)

    async def put(
        self,
        key: bytes | str,
        value: bytes | str,
        *,
        if_match: int | None = None,
        create_only: bool = False,
        lease: int | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> WriteResult:
        """Write ``value``; its index is the key's new ``mod_index``. ``if_match``: only if
        the key's ``mod_index`` is that; ``create_only``: only if the key is absent
        (else :class:`~raftdb.client.errors.ConditionFailedError`); ``lease``: attach it.
        Carries an ``Idempotency-Key`` (``idempotency_key`` or a new one): applied once."""
        op = _ops.put(
            key,
            value,
            if_match=if_match,
            create_only=create_only,
            lease=lease,
            idempotency_key=idempotency_key,
        )
        return await self._run(op, timeout)

    async def delete(
        self,
        key: bytes | str,
        *,
        if_match: int | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> DeleteResult:
        """Delete the key (``existed`` says whether it did); ``if_match`` as for ``put``."""
        op = _ops.delete(key, if_match=if_match, idempotency_key=idempotency_key)
        return await self._run(op, timeout)

    async def list(
        self,
        prefix: bytes | str = b"",
        *,
        start: bytes | str | None = None,
        page_size: int = 1000,
        consistency: Consistency = "linearizable",
        timeout: float | None = None,
    ) -> AsyncIterator[KeyValue]:
        """Every key under ``prefix`` (from ``start``), with values, in byte order: pages
        of ``page_size`` fetched as the iterator goes, following ``Link``. Each page is
        one consistent read; ``timeout`` bounds each page."""
        target: str | None = _ops.list_first(
            prefix, start=start, page_size=page_size, consistency=consistency
        )
        while target is not None:
            entries, target, _ = await self._run(_ops.list_page(target), timeout)
            for entry in entries:
                yield entry

    async def list_wait(
        self,
        prefix: bytes | str,
        wait_index: int,
        *,
        wait: float = 60.0,
        page_size: int = 1000,
        consistency: Consistency = "linearizable",
        timeout: float | None = None,
    ) -> Listing:
        """A blocking listing (Consul's): every key under ``prefix``, read once a key
        under it changes after ``wait_index`` (at once if one already has), or after
        ``wait`` seconds as it is. ``index`` of the answer is the next call's
        ``wait_index``: a loop of calls sees every change, however they fall between
        calls. Only the first page waits; later pages (``Link``) follow at once, each
        one consistent read. ``timeout`` bounds each page, counted beyond ``wait``
        for the first."""
        target: str | None = _ops.list_first(
            prefix,
            start=None,
            page_size=page_size,
            consistency=consistency,
            wait_index=wait_index,
            wait=wait,
        )
        entries: builtins.list[KeyValue] = []
        index: int | None = None
        limit = self._timeout(timeout) + wait
        while target is not None:
            page, target, read_at = await self._run(_ops.list_page(target), limit)
            entries += page
            if index is None:
                index = read_at
            limit = self._timeout(timeout)
        assert index is not None  # the first page's
        return Listing(entries, index)

    async def txn(
        self, txn: Txn, *, idempotency_key: str | None = None, timeout: float | None = None
    ) -> TxnResult:
        """Run a transaction (:class:`~raftdb.client.Txn`) as one log entry."""
        return await self._run(_ops.txn(txn, idempotency_key=idempotency_key), timeout)

    # -- leases -------------------------------------------------------------------------

    async def lease_grant(
        self, ttl: int, *, idempotency_key: str | None = None, timeout: float | None = None
    ) -> Lease:
        """Grant a lease of ``ttl`` whole seconds."""
        return await self._run(_ops.lease_grant(ttl, idempotency_key=idempotency_key), timeout)

    async def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> Lease:
        """Renew the lease for its full TTL."""
        return await self._run(_ops.lease_keepalive(lease_id), timeout)

    async def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> None:
        """Revoke the lease: its keys are deleted."""
        await self._run(_ops.lease_revoke(lease_id), timeout)

    async def lease_info(
        self,
        lease_id: int,
        *,
        consistency: Consistency = "linearizable",
        timeout: float | None = None,
    ) -> LeaseInfo:
        """The lease's TTL, remaining seconds and keys."""
        return await self._run(_ops.lease_info(lease_id, consistency), timeout)

    async def leases(self, *, timeout: float | None = None) -> builtins.list[LeaseInfo]:
        """Every lease (an admin token when the cluster has tokens)."""
        return await self._run(_ops.leases(), timeout)

    @contextlib.asynccontextmanager
    async def lease(
        self, ttl: int, *, timeout: float | None = None
    ) -> AsyncIterator[AsyncKeptLease]:
        """Grant a lease and keep it alive (renewed every ``ttl/3`` by a task) until the
        block ends, then revoke it. ``kept.lost`` is set if the lease ended anyway."""
        granted = await self.lease_grant(ttl, timeout=timeout)
        kept = AsyncKeptLease(self, granted)
        try:
            yield kept
        finally:
            await kept.stop()
            with contextlib.suppress(LeaseNotFoundError):
                await self.lease_revoke(granted.id, timeout=timeout)

    # -- locks --------------------------------------------------------------------------

    async def lock_acquire(
        self, name: bytes | str, lease_id: int, *, wait: float = 60.0, timeout: float | None = None
    ) -> LockHold:
        """Take the lock ``name`` for the lease, waiting up to ``wait`` seconds
        (:class:`~raftdb.client.errors.RequestTimeoutError` after). ``fence`` is its
        fencing token: guard every write made under the lock with it (docs/api.md)."""
        return await self._run(_ops.lock(name, lease_id, wait), self._timeout(timeout) + wait)

    async def lock_release(
        self, name: bytes | str, lease_id: int, *, timeout: float | None = None
    ) -> None:
        """Release the lock held by the lease."""
        await self._run(_ops.unlock(name, lease_id), timeout)

    @contextlib.asynccontextmanager
    async def lock(
        self, name: bytes | str, *, ttl: int = 15, wait: float = 60.0
    ) -> AsyncIterator[LockHold]:
        """Hold the lock ``name`` for the block, on a lease of ``ttl`` seconds kept alive
        meanwhile; released (and the lease revoked) when the block ends."""
        async with self.lease(ttl) as kept:
            hold = await self.lock_acquire(name, kept.id, wait=wait)
            try:
                yield hold
            finally:
                with contextlib.suppress(LockNotHeldError, LeaseNotFoundError):
                    await self.lock_release(name, kept.id)

    @contextlib.asynccontextmanager
    async def election(
        self,
        name: bytes | str,
        value: bytes | str,
        *,
        key: bytes | str,
        ttl: int = 15,
        wait: float = 300.0,
    ) -> AsyncIterator[AsyncLeadership]:
        """Campaign in the election ``name`` and lead for the block: hold the lock
        ``name`` (waiting up to ``wait`` seconds) on a lease kept alive, then publish
        ``value`` at ``key`` with a write guarded by the fence, so that a deposed
        leader can never overwrite its successor. ``key`` must not be under
        ``name/`` (every key there is a contender). Observers read or watch ``key``.
        On leaving, the publication is deleted (fenced too) and the lock released.

        Raises:
            LockNotHeldError: the lock was lost before ``value`` could be published.
        """
        if to_bytes(key).startswith(to_bytes(name).rstrip(b"/") + b"/"):
            raise ValueError("an election's key must not be under its name/ (a contender)")
        async with self.lock(name, ttl=ttl, wait=wait) as hold:
            leadership = AsyncLeadership(self, hold, to_bytes(key))
            if not await leadership.proclaim(value):
                raise LockNotHeldError(f"lost the lock {hold.key!r} before publishing")
            try:
                yield leadership
            finally:
                with contextlib.suppress(RaftdbError):
                    await self.txn(_ops.fenced(hold, delete=leadership.key))

    # -- cluster ------------------------------------------------------------------------

    async def members(self, *, timeout: float | None = None) -> builtins.list[Member]:
        """The membership, as the answering member has applied it."""
        return await self._run(_ops.members(), timeout)

    async def member_add(
        self, member_id: int, peer_url: str, *, learner: bool = False, timeout: float | None = None
    ) -> Member:
        """Add a voter or a learner, or promote a learner (same id and URL)."""
        return await self._run(_ops.add_member(member_id, peer_url, learner), timeout)

    async def member_remove(self, member_id: int, *, timeout: float | None = None) -> None:
        """Remove a member."""
        await self._run(_ops.remove_member(member_id), timeout)

    async def leader_transfer(self, member_id: int, *, timeout: float | None = None) -> int:
        """Hand leadership to the voter ``member_id``; answers once it leads."""
        return await self._run(_ops.transfer_leader(member_id), timeout)

    async def status(self, endpoint: str | None = None, *, timeout: float | None = None) -> Status:
        """``/v1/status`` of ``endpoint`` (only it), or of the first member that answers."""
        pin = None if endpoint is None else endpoint.rstrip("/")
        return await self._run(_ops.status(), timeout, pin)

    # -- backup -------------------------------------------------------------------------

    async def snapshot(
        self, dest: BinaryIO, *, progress: Progress | None = None, timeout: float | None = None
    ) -> SnapshotSaved:
        """As :meth:`Client.snapshot <raftdb.client.Client.snapshot>`. ``dest`` is
        written to on the event loop: a local file, not a slow pipe."""
        seconds = self._timeout(timeout)
        deadline = time.monotonic() + seconds
        request = SNAPSHOT_REQUEST
        last: RaftdbError | None = None
        while True:
            endpoint, wait = next_member(self.view, deadline, seconds, last, time.monotonic())
            if endpoint is None:
                await asyncio.sleep(wait)
                continue
            remaining = max(0.001, deadline - time.monotonic())
            download: Download | None = None
            try:
                async with self._http.stream(
                    request.method,
                    endpoint + request.target,
                    headers=request.all_headers(self.token),
                    # Each wait for the answer (or more of it) gets the whole timeout.
                    timeout=httpx.Timeout(seconds, connect=min(remaining, self.connect_timeout)),
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                        last = refusal(self.view, endpoint, answer(response), time.monotonic())
                        if retried(last):
                            continue
                        raise last
                    download = Download(dest, parse_header(response.headers), progress)
                    async for chunk in response.aiter_bytes():
                        download.write(chunk)
            except httpx.TransportError as e:
                self.view.down(endpoint, time.monotonic())
                if download is not None:
                    raise download.cut(endpoint, e) from e
                last = EndpointsUnavailableError(f"{endpoint}: {describe_failure(e)}")
                continue
            assert download is not None
            self.view.ok(endpoint)
            return download.saved(endpoint)

    # -- watch --------------------------------------------------------------------------

    def watch(
        self,
        prefix: bytes | str | None = None,
        *,
        key: bytes | str | None = None,
        since: int | None = None,
        prev: bool = False,
        progress: bool = False,
        reconnect_timeout: float | None = None,
    ) -> AsyncWatch:
        """The changes under ``prefix`` (or to ``key``) after ``since`` (default: from now),
        as an async iterator of :class:`WatchEvent` (and :class:`ProgressEvent` with
        ``progress=True``). Without ``since`` it starts at the index of a linearizable
        read made when the ``async with`` block starts (or at the first iteration). It
        reconnects to another member when a stream fails and resumes exactly after what
        it delivered; it gives up with
        :class:`~raftdb.client.errors.EndpointsUnavailableError` when no member serves it
        for ``reconnect_timeout`` (default: the client's timeout)."""
        p, k = watch_keys(prefix, key)
        cursor = WatchCursor(prefix=p, key=k, since=since, prev=prev)
        return AsyncWatch(self, cursor, progress, self._timeout(reconnect_timeout))


class AsyncKeptLease:
    """A lease renewed every ``ttl/3`` by a background task (``AsyncClient.lease``)."""

    def __init__(self, client: AsyncClient, lease: Lease) -> None:
        self.id = lease.id
        self.ttl = lease.ttl
        #: Why the lease was lost (it expired or was revoked), or ``None``.
        self.lost: RaftdbError | None = None
        self._client = client
        self._task = asyncio.create_task(self._run(), name=f"lease-{lease.id}")

    async def _run(self) -> None:
        interval = max(0.2, self.ttl / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._client.lease_keepalive(self.id, timeout=interval)
            except LeaseNotFoundError as e:
                self.lost = e
                return
            except RaftdbError:
                continue  # the next round tries again; the TTL leaves two more

    async def stop(self) -> None:
        """Stop renewing (the task has ended when this returns)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class AsyncWatch:
    """An async iterator over a watch's events; ``aclose()`` (or ``async with``) ends it.

    ``aclose()`` may come from another task while one waits for the next event (as
    ``Watch.close()`` may come from another thread): the waiting task is woken, its
    stream closed, and its ``__anext__`` ends the iteration (``StopAsyncIteration``).
    """

    def __init__(
        self, client: AsyncClient, cursor: WatchCursor, progress: bool, reconnect_timeout: float
    ) -> None:
        self.cursor = cursor
        self._client = client
        self._progress = progress
        self._reconnect_timeout = reconnect_timeout
        self._closed = False
        self._events = self._generate()
        #: The task inside ``__anext__`` (running the generator), and whether
        #: ``aclose`` cancelled it; ``_idle`` is set while no task is inside.
        self._waiter: asyncio.Task[object] | None = None
        self._woken = False
        self._idle = asyncio.Event()
        self._idle.set()

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> WatchEvent | ProgressEvent:
        if self._closed:
            raise StopAsyncIteration
        task = asyncio.current_task()
        self._waiter, self._woken = task, False
        self._idle.clear()
        try:
            return await self._events.__anext__()
        except asyncio.CancelledError:
            # Cancelled by aclose() alone: the iteration ends. Cancelled by anyone
            # else too (the task's own cancellation): that goes on.
            if self._woken and task is not None and task.uncancel() == 0:
                raise StopAsyncIteration from None
            raise
        finally:
            self._waiter = None
            self._idle.set()

    async def __aenter__(self) -> AsyncWatch:
        await self._start()
        return self

    async def _start(self) -> None:
        cursor = self.cursor
        if cursor.complete is None:  # "from now": the linearizable read's index
            op = Op(cursor.start_request(), _read_index, frozenset({404}))
            cursor.started(await self._client._run(op, None))

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the watch and its stream (also while another task waits for an event)."""
        self._closed = True
        waiter = self._waiter
        if waiter is not None and waiter is not asyncio.current_task():
            # The generator runs in that task: it cannot be closed from here. Wake
            # the task; the cancellation closes the stream on its way out.
            self._woken = True
            waiter.cancel()
            await self._idle.wait()
        await self._events.aclose()

    async def _generate(self) -> AsyncGenerator[WatchEvent | ProgressEvent, None]:
        client, cursor = self._client, self.cursor
        await self._start()
        give_up = time.monotonic() + self._reconnect_timeout
        while not self._closed:
            now = time.monotonic()
            endpoint, when = client.view.pick(False, now)
            if endpoint is None or when > now:
                if when >= give_up:
                    raise EndpointsUnavailableError(
                        f"no member served the watch for {self._reconnect_timeout:g}s"
                    )
                await asyncio.sleep(when - now)
                continue
            request = cursor.stream_request()
            timeout = httpx.Timeout(WATCH_IDLE_TIMEOUT, connect=client.connect_timeout)
            try:
                async with client._http.stream(
                    "GET",
                    endpoint + request.target,
                    headers=request.all_headers(client.token),
                    timeout=timeout,
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                        err = open_error(response.status_code, response.content)
                        if response.status_code in (429, 503):
                            client.view.down(endpoint, time.monotonic(), 1.0)
                            continue
                        raise err
                    client.view.ok(endpoint)
                    give_up = time.monotonic() + self._reconnect_timeout
                    parser = SSEParser()
                    async for line in response.aiter_lines():
                        raw = parser.line(line)
                        if raw is None:
                            continue
                        event = cursor.on_event(raw)
                        if event is None or (
                            isinstance(event, ProgressEvent) and not self._progress
                        ):
                            continue
                        yield event
            except StreamClosed:
                continue
            except httpx.TransportError:
                client.view.down(endpoint, time.monotonic())
                continue
            # The stream ended without a ``closed`` event: the member went away.
            client.view.down(endpoint, time.monotonic())


class AsyncLeadership:
    """The leadership of an election (``AsyncClient.election``): the lock's hold and the key
    the leader publishes its value at."""

    def __init__(self, client: AsyncClient, hold: LockHold, key: bytes) -> None:
        self.hold = hold
        self.key = key
        self._client = client

    @property
    def fence(self) -> int:
        """The fencing token of this leadership: larger for every later leader."""
        return self.hold.fence

    async def proclaim(self, value: bytes | str) -> bool:
        """Publish a new ``value`` at ``key``, only while still the leader: ``False``
        means the leadership is lost (stop acting as the leader)."""
        t = _ops.fenced(self.hold, put=(self.key, value))
        return (await self._client.txn(t)).succeeded
