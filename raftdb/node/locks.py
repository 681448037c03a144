"""Locks on leases, create-only keys and watch: etcd's ``concurrency`` recipe.

A lock ``name`` is the set of keys ``name/<lease id, 16 hex digits>``, each
attached to its holder's lease. To take it (:func:`acquire`), a client puts
its own key if it does not exist yet (one transaction); the holder is the key
with the lowest ``create_index``; every other waits for the deletion of the
key just before its own (by ``create_index``), then looks again. The queue is
therefore fair (first come, first served), and a release wakes only the next
waiter, never all of them (no thundering herd).

The lock's **fencing token** is the holder's ``create_index`` (``fence``): it
increases with every acquisition. What the lock promises, and what not:

- while the holder's lease is kept alive and its key not deleted, no other
  client holds the lock;
- a holder that pauses longer than its lease's TTL (a GC pause, a partition)
  loses the lock when the leader expires the lease, *without knowing it*: it
  may still believe it holds it while another holds it too. Only the fence
  protects the resource: guard every write with a transaction that compares
  the holder key's ``create_index`` with the fence (the write fails once the
  key is gone or was re-created), or have the resource reject fences lower
  than the highest it has seen (Jepsen found etcd locks unsafe without this).

A key that already exists for the lease (a retry after a lost answer) is
reused: the same place in the queue, the same fence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from raftdb.kv.txn import CmpOp, Compare, Target, Txn, TxnOp
from raftdb.node.errors import (
    BadRequestError,
    LeaseNotFoundError,
    LockNotHeldError,
    NodeError,
    RequestTimeoutError,
)
from raftdb.node.handle import LockHeld

if TYPE_CHECKING:
    from raftdb.node.node import Node

__all__ = ["acquire", "lock_key", "release"]

log = logging.getLogger("raftdb.node")


def lock_key(name: bytes, lease: int) -> bytes:
    """The key of ``lease``'s place in the queue of lock ``name``."""
    return name + b"/" + f"{lease:016x}".encode()


def _check(name: bytes, timeout: float | None = None) -> None:
    if not isinstance(name, bytes) or not name:
        raise BadRequestError("a lock needs a non-empty name")
    if timeout is not None and not timeout >= 0:  # also refuses NaN
        raise BadRequestError(f"a lock's wait must be >= 0 seconds, got {timeout!r}")


async def acquire(
    node: Node,
    name: bytes,
    lease: int,
    timeout: float,  # noqa: ASYNC109 (on time-out the wait key is deleted: a 408)
) -> LockHeld:
    """Take lock ``name`` for ``lease``; returns once held (see the module docstring).

    Raises:
        RequestTimeoutError: not held within ``timeout`` seconds; the key this
            call created is deleted again.
        LeaseNotFoundError: the lease does not exist, or ended while waiting.
        LockNotHeldError: the key was deleted while waiting (an unlock).
        NodeError: from the writes and reads it makes.
    """
    _check(name, timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    own = lock_key(name, lease)
    put = TxnOp.put(own, b"", lease=lease)
    # Create-only, or reuse: the second put re-attaches an existing key to the
    # lease and keeps its create_index, which either result gives.
    answer = await node.txn(
        Txn(
            compare=(Compare(own, Target.CREATE_INDEX, CmpOp.EQ, 0),),
            success=(put,),
            failure=(put,),
        )
    )
    created = answer.succeeded
    try:
        return await _wait_for_turn(node, name, own, lease, deadline)
    except BaseException as e:
        if created:
            # Leave no place in the queue behind (it would hold the lock for
            # nobody until the lease ends). Awaited on a time-out; in the
            # background when cancelled (the caller went away).
            cleanup = loop.create_task(_delete_quietly(node, own))
            if isinstance(e, RequestTimeoutError):
                await cleanup
            else:
                _background.add(cleanup)
                cleanup.add_done_callback(_background.discard)
        raise


_background: set[asyncio.Task[None]] = set()


async def _delete_quietly(node: Node, key: bytes) -> None:
    try:
        await node.delete(key)
    except NodeError as e:
        log.warning("lock: could not delete %r after giving up: %s", key, e)


async def _wait_for_turn(
    node: Node, name: bytes, own: bytes, lease: int, deadline: float
) -> LockHeld:
    loop = asyncio.get_running_loop()
    prefix = name + b"/"
    while True:
        keys, at = await node.read_range(prefix, values=False)
        mine = next((kv for kv in keys if kv.key == own), None)
        if mine is None:
            try:
                await node.lease_info(lease)
            except LeaseNotFoundError:
                raise LeaseNotFoundError(
                    f"lease {lease} ended while waiting for lock {name!r}"
                ) from None
            raise LockNotHeldError(f"the key {own!r} was deleted while waiting for the lock")
        ahead = [kv for kv in keys if kv.create_index < mine.create_index]
        if not ahead:
            return LockHeld(own, mine.create_index)
        before = max(ahead, key=lambda kv: kv.create_index)
        left = deadline - loop.time()
        if left <= 0:
            raise _timed_out(name)
        watcher = await node.watch(key=before.key, since=at, prev=False)
        try:
            async with asyncio.timeout(left):
                async for event in watcher:
                    if event.kind in ("delete", "closed"):
                        break  # look again (closed: the stream ended, the state may have)
        except TimeoutError:
            raise _timed_out(name) from None
        finally:
            with contextlib.suppress(Exception):
                await watcher.aclose()


def _timed_out(name: bytes) -> RequestTimeoutError:
    return RequestTimeoutError(f"lock {name!r} was not acquired in time; its wait key is deleted")


async def release(node: Node, name: bytes, lease: int) -> None:
    """Release lock ``name`` held (or waited for) by ``lease``: delete its key.

    Raises:
        LockNotHeldError: ``lease`` has no key under ``name``.
        NodeError: from the delete.
    """
    _check(name)
    result = await node.delete(lock_key(name, lease))
    if not result.existed:
        raise LockNotHeldError(f"lease {lease} does not hold or wait for lock {name!r}")
