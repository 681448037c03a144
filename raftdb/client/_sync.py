"""The synchronous client: :class:`Client`, a thin driver of the shared call logic."""

from __future__ import annotations

import builtins
import contextlib
import socket
import threading
import time
from collections.abc import Generator, Iterator
from types import TracebackType
from typing import BinaryIO, TypeVar

import httpx

from raftdb.client import _ops
from raftdb.client._base import ClientBase, answer, failure
from raftdb.client._core import Answer, Op, Outcome, Send, Sleep, Step, describe_failure, run_call
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

#: Longest a watch stream may stay silent before it is taken as dead (a node sends a
#: progress event every ``watch_progress_s``, 5 s by default, while idle).
WATCH_IDLE_TIMEOUT = 30.0


class Client(ClientBase):
    """A synchronous raftdb client over one or more endpoints (see docs/client.md).

    ``endpoints`` is a list of API URLs or one comma-separated string. ``timeout`` bounds
    every call (all its attempts and waits); each method takes its own ``timeout=`` too.
    ``token`` is sent as ``Authorization: Bearer``; ``ca_file`` verifies the nodes'
    certificates, ``cert_file``/``key_file`` is the client's certificate. Thread-safe
    for concurrent calls; close it (or use ``with``) to free its connections.
    """

    def _open(self) -> None:
        self._http = httpx.Client(verify=self._verify, timeout=self.timeout)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- driving the shared logic -------------------------------------------------------

    def _send(self, step: Send) -> Outcome:
        r = step.request
        try:
            resp = self._http.request(
                r.method,
                step.endpoint + r.target,
                content=r.content,
                headers=r.all_headers(self.token),
                timeout=self._attempt_timeout(step.timeout),
            )
        except httpx.TransportError as e:
            return failure(e)
        return answer(resp)

    def _drive(self, gen: Generator[Step, Outcome, T]) -> T:
        try:
            step = next(gen)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = gen.send(None)
                else:
                    step = gen.send(self._send(step))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _run(self, op: Op[T], timeout: float | None, pin: str | None = None) -> T:
        return self._drive(run_call(self.view, op, self._timeout(timeout), pin=pin))

    # -- keys ---------------------------------------------------------------------------

    def get(
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
        return self._run(op, self._timeout(timeout) + extra)

    def put(
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
        return self._run(op, timeout)

    def delete(
        self,
        key: bytes | str,
        *,
        if_match: int | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> DeleteResult:
        """Delete the key (``existed`` says whether it did); ``if_match`` as for ``put``."""
        op = _ops.delete(key, if_match=if_match, idempotency_key=idempotency_key)
        return self._run(op, timeout)

    def list(
        self,
        prefix: bytes | str = b"",
        *,
        start: bytes | str | None = None,
        page_size: int = 1000,
        consistency: Consistency = "linearizable",
        timeout: float | None = None,
    ) -> Iterator[KeyValue]:
        """Every key under ``prefix`` (from ``start``), with values, in byte order: pages
        of ``page_size`` fetched as the iterator goes, following ``Link``. Each page is
        one consistent read; ``timeout`` bounds each page."""
        target: str | None = _ops.list_first(
            prefix, start=start, page_size=page_size, consistency=consistency
        )
        while target is not None:
            entries, target, _ = self._run(_ops.list_page(target), timeout)
            yield from entries

    def list_wait(
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
            page, target, read_at = self._run(_ops.list_page(target), limit)
            entries += page
            if index is None:
                index = read_at
            limit = self._timeout(timeout)
        assert index is not None  # the first page's
        return Listing(entries, index)

    def txn(
        self, txn: Txn, *, idempotency_key: str | None = None, timeout: float | None = None
    ) -> TxnResult:
        """Run a transaction (:class:`~raftdb.client.Txn`) as one log entry."""
        return self._run(_ops.txn(txn, idempotency_key=idempotency_key), timeout)

    # -- leases -------------------------------------------------------------------------

    def lease_grant(
        self, ttl: int, *, idempotency_key: str | None = None, timeout: float | None = None
    ) -> Lease:
        """Grant a lease of ``ttl`` whole seconds."""
        return self._run(_ops.lease_grant(ttl, idempotency_key=idempotency_key), timeout)

    def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> Lease:
        """Renew the lease for its full TTL."""
        return self._run(_ops.lease_keepalive(lease_id), timeout)

    def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> None:
        """Revoke the lease: its keys are deleted."""
        self._run(_ops.lease_revoke(lease_id), timeout)

    def lease_info(
        self,
        lease_id: int,
        *,
        consistency: Consistency = "linearizable",
        timeout: float | None = None,
    ) -> LeaseInfo:
        """The lease's TTL, remaining seconds and keys."""
        return self._run(_ops.lease_info(lease_id, consistency), timeout)

    def leases(self, *, timeout: float | None = None) -> builtins.list[LeaseInfo]:
        """Every lease (an admin token when the cluster has tokens)."""
        return self._run(_ops.leases(), timeout)

    @contextlib.contextmanager
    def lease(self, ttl: int, *, timeout: float | None = None) -> Iterator[KeptLease]:
        """Grant a lease and keep it alive (renewed every ``ttl/3`` in a thread) until the
        block ends, then revoke it. ``kept.lost`` is set if the lease ended anyway."""
        granted = self.lease_grant(ttl, timeout=timeout)
        kept = KeptLease(self, granted)
        try:
            yield kept
        finally:
            kept.stop()
            with contextlib.suppress(LeaseNotFoundError):
                self.lease_revoke(granted.id, timeout=timeout)

    # -- locks --------------------------------------------------------------------------

    def lock_acquire(
        self, name: bytes | str, lease_id: int, *, wait: float = 60.0, timeout: float | None = None
    ) -> LockHold:
        """Take the lock ``name`` for the lease, waiting up to ``wait`` seconds
        (:class:`~raftdb.client.errors.RequestTimeoutError` after). ``fence`` is its
        fencing token: guard every write made under the lock with it (docs/api.md)."""
        return self._run(_ops.lock(name, lease_id, wait), self._timeout(timeout) + wait)

    def lock_release(
        self, name: bytes | str, lease_id: int, *, timeout: float | None = None
    ) -> None:
        """Release the lock held by the lease."""
        self._run(_ops.unlock(name, lease_id), timeout)

    @contextlib.contextmanager
    def lock(self, name: bytes | str, *, ttl: int = 15, wait: float = 60.0) -> Iterator[LockHold]:
        """Hold the lock ``name`` for the block, on a lease of ``ttl`` seconds kept alive
        meanwhile; released (and the lease revoked) when the block ends."""
        with self.lease(ttl) as kept:
            hold = self.lock_acquire(name, kept.id, wait=wait)
            try:
                yield hold
            finally:
                with contextlib.suppress(LockNotHeldError, LeaseNotFoundError):
                    self.lock_release(name, kept.id)

    @contextlib.contextmanager
    def election(
        self,
        name: bytes | str,
        value: bytes | str,
        *,
        key: bytes | str,
        ttl: int = 15,
        wait: float = 300.0,
    ) -> Iterator[Leadership]:
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
        with self.lock(name, ttl=ttl, wait=wait) as hold:
            leadership = Leadership(self, hold, to_bytes(key))
            if not leadership.proclaim(value):
                raise LockNotHeldError(f"lost the lock {hold.key!r} before publishing")
            try:
                yield leadership
            finally:
                with contextlib.suppress(RaftdbError):
                    self.txn(_ops.fenced(hold, delete=leadership.key))

    # -- cluster ------------------------------------------------------------------------

    def members(self, *, timeout: float | None = None) -> builtins.list[Member]:
        """The membership, as the answering member has applied it."""
        return self._run(_ops.members(), timeout)

    def member_add(
        self, member_id: int, peer_url: str, *, learner: bool = False, timeout: float | None = None
    ) -> Member:
        """Add a voter or a learner, or promote a learner (same id and URL)."""
        return self._run(_ops.add_member(member_id, peer_url, learner), timeout)

    def member_remove(self, member_id: int, *, timeout: float | None = None) -> None:
        """Remove a member."""
        self._run(_ops.remove_member(member_id), timeout)

    def leader_transfer(self, member_id: int, *, timeout: float | None = None) -> int:
        """Hand leadership to the voter ``member_id``; answers once it leads."""
        return self._run(_ops.transfer_leader(member_id), timeout)

    def status(self, endpoint: str | None = None, *, timeout: float | None = None) -> Status:
        """``/v1/status`` of ``endpoint`` (only it), or of the first member that answers."""
        pin = None if endpoint is None else endpoint.rstrip("/")
        return self._run(_ops.status(), timeout, pin)

    # -- backup -------------------------------------------------------------------------

    def snapshot(
        self, dest: BinaryIO, *, progress: Progress | None = None, timeout: float | None = None
    ) -> SnapshotSaved:
        """Write a consistent snapshot of the whole state (``GET /v1/snapshot``, admin) to
        ``dest``, as the node streams it; ``progress(n)`` is called for every ``n`` bytes
        written. Every write acknowledged before the call is in it.

        ``timeout`` bounds the wait for a member to start its answer, and each wait for
        more of it, not the whole transfer. A stream cut short raises
        :class:`~raftdb.client.errors.EndpointsUnavailableError` (what ``dest`` holds is
        incomplete). The stream is not checked here (see docs/client.md)."""
        seconds = self._timeout(timeout)
        deadline = time.monotonic() + seconds
        request = SNAPSHOT_REQUEST
        last: RaftdbError | None = None
        while True:
            endpoint, wait = next_member(self.view, deadline, seconds, last, time.monotonic())
            if endpoint is None:
                time.sleep(wait)
                continue
            remaining = max(0.001, deadline - time.monotonic())
            download: Download | None = None
            try:
                with self._http.stream(
                    request.method,
                    endpoint + request.target,
                    headers=request.all_headers(self.token),
                    # Each wait for the answer (or more of it) gets the whole timeout.
                    timeout=httpx.Timeout(seconds, connect=min(remaining, self.connect_timeout)),
                ) as response:
                    if response.status_code != 200:
                        response.read()
                        last = refusal(self.view, endpoint, answer(response), time.monotonic())
                        if retried(last):
                            continue
                        raise last
                    download = Download(dest, parse_header(response.headers), progress)
                    for chunk in response.iter_bytes():
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
    ) -> Watch:
        """The changes under ``prefix`` (or to ``key``) after ``since`` (default: from now),
        as an iterator of :class:`WatchEvent` (and :class:`ProgressEvent` with
        ``progress=True``). Without ``since`` it starts at the index of a linearizable
        read made by this call: every later change is delivered. It reconnects to another
        member when a stream fails and resumes exactly after what it delivered; it gives up with
        :class:`~raftdb.client.errors.EndpointsUnavailableError` when no member serves it
        for ``reconnect_timeout`` (default: the client's timeout)."""
        p, k = watch_keys(prefix, key)
        cursor = WatchCursor(prefix=p, key=k, since=since, prev=prev)
        return Watch(self, cursor, progress, self._timeout(reconnect_timeout))


class KeptLease:
    """A lease renewed every ``ttl/3`` by a background thread (``Client.lease``)."""

    def __init__(self, client: Client, lease: Lease) -> None:
        self.id = lease.id
        self.ttl = lease.ttl
        #: Why the lease was lost (it expired or was revoked), or ``None``.
        self.lost: RaftdbError | None = None
        self._client = client
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = max(0.2, self.ttl / 3)
        while not self._stop.wait(interval):
            try:
                self._client.lease_keepalive(self.id, timeout=interval)
            except LeaseNotFoundError as e:
                self.lost = e
                return
            except RaftdbError:
                continue  # the next round tries again; the TTL leaves two more

    def stop(self) -> None:
        """Stop renewing (the thread ends before this returns)."""
        self._stop.set()
        self._thread.join()


class Watch:
    """An iterator over a watch's events; ``close()`` (or ``with``) ends it."""

    def __init__(
        self, client: Client, cursor: WatchCursor, progress: bool, reconnect_timeout: float
    ) -> None:
        self.cursor = cursor
        self._client = client
        self._progress = progress
        self._reconnect_timeout = reconnect_timeout
        self._closed = False
        self._response: httpx.Response | None = None
        if cursor.complete is None:  # "from now": from this call, whenever iterated
            start = client._run(Op(cursor.start_request(), _read_index, frozenset({404})), None)
            cursor.started(start)
        self._events = self._generate()

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> WatchEvent | ProgressEvent:
        return next(self._events)

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the watch and its stream."""
        self._closed = True
        response = self._response
        if response is not None:
            # A read blocked in another thread wakes only when its socket is shut down.
            stream = response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(ValueError):  # running in another thread: it ends itself
            self._events.close()

    def _is_closed(self) -> bool:
        return self._closed

    def _generate(self) -> Generator[WatchEvent | ProgressEvent, None, None]:
        client, cursor = self._client, self.cursor
        give_up = time.monotonic() + self._reconnect_timeout
        while not self._closed:
            now = time.monotonic()
            endpoint, when = client.view.pick(False, now)
            if endpoint is None or when > now:
                if when >= give_up:
                    raise EndpointsUnavailableError(
                        f"no member served the watch for {self._reconnect_timeout:g}s"
                    )
                time.sleep(when - now)
                continue
            request = cursor.stream_request()
            timeout = httpx.Timeout(WATCH_IDLE_TIMEOUT, connect=client.connect_timeout)
            try:
                with client._http.stream(
                    "GET",
                    endpoint + request.target,
                    headers=request.all_headers(client.token),
                    timeout=timeout,
                ) as response:
                    self._response = response
                    if response.status_code != 200:
                        response.read()
                        err = open_error(response.status_code, response.content)
                        if response.status_code in (429, 503):
                            client.view.down(endpoint, time.monotonic(), 1.0)
                            continue
                        raise err
                    client.view.ok(endpoint)
                    give_up = time.monotonic() + self._reconnect_timeout
                    parser = SSEParser()
                    for line in response.iter_lines():
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
                if self._is_closed():
                    return
                client.view.down(endpoint, time.monotonic())
                continue
            finally:
                self._response = None
            # The stream ended without a ``closed`` event: the member went away.
            client.view.down(endpoint, time.monotonic())


def _read_index(a: Answer) -> int:
    return int(a.headers.get("x-raftdb-index", "0"))


class Leadership:
    """The leadership of an election (``Client.election``): the lock's hold and the key
    the leader publishes its value at."""

    def __init__(self, client: Client, hold: LockHold, key: bytes) -> None:
        self.hold = hold
        self.key = key
        self._client = client

    @property
    def fence(self) -> int:
        """The fencing token of this leadership: larger for every later leader."""
        return self.hold.fence

    def proclaim(self, value: bytes | str) -> bool:
        """Publish a new ``value`` at ``key``, only while still the leader: ``False``
        means the leadership is lost (stop acting as the leader)."""
        t = _ops.fenced(self.hold, put=(self.key, value))
        return (self._client.txn(t)).succeeded
