"""The node: what the REST API and the peer transport call, beside the Ready loop.

:class:`Node` opens the node's disk (``raftdb.node.disk``), makes the Raft core
and the transport, and starts the :class:`~raftdb.node.ready_loop.ReadyLoop`
that drives them (its module docstring tells the order of a Ready). The rest
of the class is what others call on the same asyncio loop:

- the ``NodeHandle`` service methods (``raftdb.node.handle``): writes and
  linearizable reads are handed to ``raftdb.node.requests`` and wait there
  until the Ready loop has proposed them, in batches, and their entries are
  applied; stale reads, membership and status read the applied state;
- the ``TransportHandler`` callbacks (``raftdb.transport.transport``): peer
  messages are stepped into the core at once, and the Ready loop is woken;
- what the disk calls back: ``_after_apply`` answers the requests of an applied
  batch, hands its changes to the watchers (``raftdb.node.watch``) and its
  lease results to the lease keeper (``raftdb.node.leases``) and follows
  membership changes; ``_on_restored`` starts both again from a snapshot the
  leader sent; ``_fail`` stops serving for good (``503`` from then on) on a
  broken invariant or an unexpected storage error.

Transactions, leases, watches and locks (issue 12) are built on the same
paths: a transaction or a lease command is one write (one log entry); a
watch reads the state machine's watch history and then follows the applied
batches; a lock is a recipe of transactions, reads and watches
(``raftdb.node.locks``).

A full disk makes the node read-only (``raftdb.node.disk``: the ``nospace``
alarm): writes and membership changes answer ``507`` before anything is
proposed, stale reads are served from the state applied before the disk
filled, and linearizable reads answer ``507`` at once, since this node can
neither confirm a read index nor apply up to one until its disk takes writes
again (read stale, or from another node). The alarm clears by itself when a
retried write succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, Any, TypeVar

from raftdb.kv.changes import MAX_LEASE_TTL, Lease
from raftdb.kv.commands import (
    Command,
    ConfChangeResult,
    InvalidCommandError,
    KeyValue,
    KVResult,
    Op,
    parse_command,
)
from raftdb.kv.txn import Txn
from raftdb.node import locks
from raftdb.node.backup import BackupGate, BackupStream, open_backup
from raftdb.node.cluster_view import ClusterView, counter_value
from raftdb.node.disk import NodeDisk
from raftdb.node.errors import (
    BadRequestError,
    LeaseNotFoundError,
    MemberNotFoundError,
    NodeError,
    NodeRemovedError,
    NoSpaceError,
    NotReadyError,
    OutcomeUnknownError,
    ServiceUnavailableError,
)
from raftdb.node.handle import (
    ClusterStatus,
    Consistency,
    LeaseInfo,
    LockHeld,
    Member,
    NodeStatus,
    TxnAnswer,
    WriteResult,
)
from raftdb.node.identity_keeper import ClusterIdKeeper, bootstrap_cluster_id
from raftdb.node.leases import LeaseKeeper
from raftdb.node.loop_lag import LoopLagMonitor
from raftdb.node.metrics import NodeMetrics
from raftdb.node.ready_loop import ReadyLoop
from raftdb.node.requests import WaitingRequests, no_leader
from raftdb.node.watch import Watcher, WatchHub
from raftdb.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    Entry,
    InvalidMessageError,
    Message,
    ProposalDroppedError,
    RawNode,
    Role,
)
from raftdb.raft.errors import StorageError
from raftdb.storage import is_no_space
from raftdb.transport.transport import PeerAuth, Transport

if TYPE_CHECKING:
    from raftdb.config import NodeConfig
    from raftdb.kv.snapshot import SnapshotStream
    from raftdb.kv.state_machine import StateMachine

__all__ = ["Node"]

log = logging.getLogger("raftdb.node")

_T = TypeVar("_T")

# A learner is promoted only when it is at most this many entries behind.
_PROMOTION_LAG = 1000
# Retry-After of a 507: space comes back when an operator frees some, not in
# a moment; the node itself retries every couple of seconds.
_NOSPACE_RETRY_AFTER = 5.0
# Printed once at start when sync is off: what the operator gives up.
_SYNC_OFF_WARNING = (
    "WARNING: node %d runs with sync = false: writes are acknowledged before they are "
    "on disk, so a power loss can lose acknowledged writes and this node's vote; a node "
    "that forgets its vote can vote twice in one term, and two leaders become possible. "
    "Use it only for tests and benchmarks."
)

#: How many times a read-only transaction is run again when its answer came from
#: this node's session instead of its reads (see ``Node.txn``): once more is enough
#: unless the node catches up through another snapshot meanwhile.
_TXN_RERUNS = 2

# The commands the lease keeper follows.
_LEASE_OPS = frozenset({Op.LEASE_GRANT, Op.LEASE_KEEPALIVE, Op.LEASE_REVOKE, Op.LEASE_EXPIRE})

# A range of more keys than this, or with values, is read off the event loop
# (a thread), so that a large listing cannot delay heartbeats and other requests.
_INLINE_RANGE_KEYS = 256


class Node:
    """A raftdb server node: see the module docstring.

    Implements ``NodeHandle`` (for the REST API) and ``TransportHandler`` (for
    the peer transport).
    """

    def __init__(
        self, config: NodeConfig, *, on_fatal: Callable[[str], None] | None = None
    ) -> None:
        """Args:
        config: the node's settings.
        on_fatal: called once, on the loop, when the node stops serving for good
            (broken storage or invariant); the server uses it to exit, so that
            a process manager sees the failure.
        """
        self.config = config
        self._on_fatal = on_fatal
        self._id: int = config.id
        self.data_dir = Path(config.data_dir)
        self._timeout = float(config.request_timeout_s)
        self.metrics = NodeMetrics(config.id)
        # Leader changes, last contact per peer, read counters (GET /v1/cluster/status).
        self._view = ClusterView(config.id, config.election_timeout_s, self.metrics.registry)
        self._loop_lag = LoopLagMonitor(self.metrics.registry)
        self._raw: RawNode | None = None
        self._transport: Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._ready_loop: ReadyLoop | None = None
        self._stopping = False
        self._failed: str | None = None
        self._removed = False
        self._disk = NodeDisk(
            config,
            self.data_dir,
            self.metrics,
            after_apply=self._after_apply,
            restored=self._on_restored,
            fail=self._fail,
            stopping=self._is_stopping,
            failed=self._has_failed,
        )
        self._requests = WaitingRequests(
            config, self.metrics, wake=self._wake.set, applied_index=self._applied_index
        )
        self._members: dict[int, str] = {}
        self._learners: frozenset[int] = frozenset()
        self._was_member = False
        self._known_urls: dict[int, str] = {}
        self._snapshot_checks: set[asyncio.Task[None]] = set()
        self._backups = BackupGate()
        self._cluster_id = ClusterIdKeeper(self.data_dir, config.id)
        self._hub = WatchHub(
            lambda: self._disk.sm,
            max_watchers=config.max_watchers,
            buffer=config.watch_buffer,
            progress_s=config.watch_progress_s,
            metrics=self.metrics,
            damaged=self._read_failed,
        )
        self._leases = LeaseKeeper(
            leases=self._sm_leases,
            write=lambda cmd: self._write(cmd, None),
            metrics=self.metrics,
            node_id=config.id,
        )

    @property
    def _sm(self) -> StateMachine | None:
        """The state machine (the disk's), or None before ``start``."""
        return self._disk.sm

    # -- life ------------------------------------------------------------------------

    @property
    def id(self) -> int:
        """This node's id."""
        return self._id

    async def start(self) -> None:
        """Open storage and state machine, start the core, the transport and the loops."""
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        storage, sm = await self._disk.open()
        hard_state, _ = storage.initial_state()
        fresh = storage.last_index() == 0 and hard_state.is_empty()
        applied = min(sm.applied_index, hard_state.commit)
        self._raw = RawNode(
            Config(
                id=self._id,
                storage=storage,
                election_tick=cfg.election_ticks,
                heartbeat_tick=cfg.heartbeat_ticks,
                applied=max(applied, self._disk.last_snapshot_index),
                max_size_per_msg=1 << 20,
                max_uncommitted_entries_size=256 << 20,
                max_inflight_msgs=256,
                check_quorum=True,
                pre_vote=True,
                rng=random.Random(),
                logger=logging.getLogger(f"raftdb.raft.{self._id}"),
            )
        )
        urls = {i + 1: url for i, url in enumerate(cfg.cluster)}
        await asyncio.to_thread(
            self._cluster_id.open,
            bootstrap=bootstrap_cluster_id(cfg.cluster_token, cfg.cluster)
            if fresh and not cfg.join
            else None,
            empty=self._still_empty if fresh and sm.applied_index == 0 else None,
        )
        if fresh and not cfg.join:
            self._raw.bootstrap([(i, url.encode()) for i, url in sorted(urls.items())])
            log.info("node %d bootstrapped a cluster of %d", self._id, len(urls))
        self._members = sm.members() or dict(urls)
        self._learners = frozenset(sm.conf_state().learners)
        applied_members = sm.members()
        self._was_member = self._id in applied_members
        if applied_members and not self._was_member and not cfg.join:
            self._removed = True
            log.warning(
                "node %d is not a member of its cluster (removed); it will not serve", self._id
            )
        own_url = urls.get(self._id) or self._members.get(self._id)
        if not own_url:
            raise RuntimeError(f"raftdb: no peer URL for node {self._id} in 'cluster'")
        self._transport = Transport(
            self._id,
            cfg.listen_peer_url or own_url,
            self._peers(urls),
            self,
            cluster_token=cfg.cluster_token,
            auth=self._peer_auth(),
            cluster_id=self._cluster_id.value,
            adopt_cluster_id=self._cluster_id.adopter,
            snapshot_dir=self.data_dir / "snapshots-in",
        )
        await self._transport.start()
        self._ready_loop = ReadyLoop(
            self._raw,
            self._disk,
            self._transport,
            self._requests,
            self._wake,
            tick_ms=cfg.tick_ms,
            commit_notice_delay_ms=cfg.commit_notice_delay_ms,
            fail=self._fail,
            failed=self._has_failed,
            observe=self._view.observe,
        )
        self._ready_loop.start()
        self._hub.start(sm.applied_index)
        self._leases.load(sm.leases(), self._loop.time())
        self._leases.start(self._leading)
        self._loop_lag.start()
        if not cfg.sync:
            log.warning(_SYNC_OFF_WARNING, self._id)
        log.info(
            "node %d started: term %d, commit %d, applied %d, members %s",
            self._id,
            self._raw.term,
            self._raw.commit_index,
            sm.applied_index,
            sorted(self._members),
        )

    def _still_empty(self) -> bool:
        """No Raft state yet: no term, no entry, nothing applied (it may adopt a cluster id)."""
        raw = self._raw
        return (
            raw is not None
            and raw.term == 0
            and raw.last_index == 0
            and self._applied_index() == 0
            and self._disk.last_snapshot_index == 0
        )

    def _peer_auth(self) -> PeerAuth:
        """The peer credentials ``peer_auth`` names, read now (rotating them takes a restart)."""
        cfg = self.config
        if cfg.peer_auth == "tls":
            return PeerAuth.with_tls(cfg.peer_cert_file, cfg.peer_key_file, cfg.peer_ca_file)
        if cfg.peer_auth == "secret":
            return PeerAuth.with_secret(cfg.peer_secret_bytes())
        return PeerAuth.none()

    def _peers(self, fallback: dict[int, str]) -> dict[int, str]:
        self._known_urls.update({i: u for i, u in self._members.items() if u})
        peers = dict(fallback)
        peers.update({i: u for i, u in self._members.items() if u})
        peers.pop(self._id, None)
        return peers

    def end_streams(self) -> None:
        """The server is shutting down (see ``raftdb.app.RunningNode.end_streams``):
        every watcher ends with a ``closed`` event (``not_ready``, with the
        ``since`` to resume from on another member), blocking reads and lock
        waits answer ``503``, and new ones are refused. Writes and reads in
        flight go on until :meth:`stop`."""
        self._hub.stop(NotReadyError("the node is stopping"))

    async def stop(self) -> None:
        """Stop serving: fail waiting requests, stop the loops and transport, close files."""
        if self._stopping:
            return
        self._stopping = True
        self.end_streams()
        await self._leases.stop()
        await self._loop_lag.stop()
        if self._ready_loop is not None:
            await self._ready_loop.stop()
        if self._transport is not None:
            await self._transport.stop()
        for check in list(self._snapshot_checks):
            check.cancel()
        await asyncio.gather(*self._snapshot_checks, return_exceptions=True)
        self._requests.fail_all(NotReadyError("the node is stopping"))
        await self._disk.close()
        log.info("node %d stopped", self._id)

    def _fail(self, why: str) -> None:
        """Broken storage or invariant: stop driving the core, answer 503 from now on."""
        if self._failed is None:
            self._failed = why
            log.critical("node %d stopped serving: %s", self._id, why)
            failed = ServiceUnavailableError(f"node failed: {why}", retry_after=5)
            self._hub.stop(failed)
            self._requests.fail_all(failed)
            if self._on_fatal is not None:
                self._on_fatal(why)

    def _is_stopping(self) -> bool:
        """Whether ``stop`` has begun (asked by the disk)."""
        return self._stopping

    def _has_failed(self) -> bool:
        """Whether ``_fail`` has stopped the node (asked by the disk and the Ready loop)."""
        return bool(self._failed)

    # -- applied batches and membership ----------------------------------------------

    def _after_apply(self, entries: list[Entry], results: list[Any]) -> None:
        """Answer the requests whose entries were applied; wake reads waiting for them;
        hand the changes to the watchers and the lease results to the lease keeper.

        The disk calls it on the loop once a batch is applied. Watchers and
        leases learn of an entry before its request is answered, so a client
        that watches or asks after its write sees it.
        """
        conf_changed = False
        hub, leases = self._hub, self._leases
        now = -1.0
        for entry, result in zip(entries, results, strict=False):
            if isinstance(result, KVResult):
                try:
                    # The fields, not a Command: this runs for every applied write.
                    fields = parse_command(entry.data)
                except InvalidCommandError:
                    continue
                if result.changes:
                    hub.publish(result.changes)
                if fields[1] in _LEASE_OPS:
                    if now < 0:
                        now = asyncio.get_running_loop().time()
                    leases.applied(Command.decode(entry.data), result, now)
                self._requests.resolve_write(result, fields[5], fields[6])
            elif isinstance(result, ConfChangeResult):
                conf_changed = True
                self._requests.resolve_conf(result)
        if entries:
            hub.advance(entries[-1].index)
        self.metrics.applied.set(self._applied_index())
        if conf_changed:
            self._on_conf_change()
        self._requests.wake_applied()

    def _on_restored(self) -> None:
        """A leader's snapshot replaced the state machine's state (the disk calls it on
        the loop, before any later entry is applied): watchers catch up again from
        its history, the lease keeper starts again from its leases, and the membership
        is the snapshot's (a new member learns it so, and whether it is a learner)."""
        sm = self._sm
        assert sm is not None
        assert self._loop is not None
        self._on_conf_change()
        self._hub.restored(sm.applied_index)
        self._leases.load(sm.leases(), self._loop.time())
        self._requests.wake_applied()  # reads waiting for an index the snapshot reached

    def _on_conf_change(self) -> None:
        sm = self._sm
        assert sm is not None
        old = set(self._members)
        self._members = sm.members()
        self._learners = frozenset(sm.conf_state().learners)
        if self._id in self._members:
            self._was_member = True
            self._removed = False
        elif self._was_member and not self._removed:
            self._removed = True
            log.warning("node %d was removed from the cluster; it no longer serves", self._id)
            removed = NodeRemovedError("this node was removed from the cluster")
            self._hub.stop(removed)
            self._requests.fail_all(removed)
        if old - set(self._members) and self._loop is not None:
            # Keep talking to a removed member for a while, so that it learns
            # the commit of its own removal and stops by itself.
            grace = 4 * self.config.election_ticks * self.config.tick_ms / 1000
            self._loop.call_later(grace, self._sync_peers)
        self._sync_peers(keep=old)

    def _sync_peers(self, keep: set[int] | None = None) -> None:
        if self._transport is None or self._stopping:
            return
        peers = self._peers({})
        for node_id in keep or ():
            url = self._known_urls.get(node_id)
            if url and node_id != self._id:
                peers.setdefault(node_id, url)
        self._transport.set_peers(peers)

    def _applied_index(self) -> int:
        return self._disk.applied_index

    # -- transport handler ----------------------------------------------------------

    def on_messages(self, messages: list[Message]) -> None:
        """Step messages from peers into the core."""
        raw = self._raw
        if raw is None or self._failed:
            return
        if messages:  # all from one peer: when it was last heard from
            self._view.heard[messages[0].frm] = monotonic()
        for m in messages:
            try:
                raw.step(m)
            except InvalidMessageError as e:
                log.warning("node %d dropped a message from %d: %s", self._id, m.frm, e)
            except Exception as e:  # a broken invariant: stop, never serve on
                log.exception("node %d: stepping a message failed", self._id)
                self._fail(f"{type(e).__name__}: {e}")
                return
        self._wake.set()

    def on_unreachable(self, peer_id: int) -> None:
        """The transport could not deliver to ``peer_id``."""
        if self._raw is not None:
            self._raw.report_unreachable(peer_id)

    def open_snapshot(self, message: Message) -> SnapshotStream:
        """A fresh state machine snapshot to stream with a SNAP message.

        The state machine is at or past the snapshot the core names (snapshots
        are taken from it), and applying skips what it already holds.
        """
        assert self._sm is not None
        self.metrics.snapshots_sent.inc()
        return self._sm.snapshot()

    def on_snapshot_sent(self, peer_id: int, ok: bool) -> None:
        """The transport finished streaming a snapshot to ``peer_id``."""
        if self._raw is not None:
            self._raw.report_snapshot(peer_id, ok)
            self._wake.set()

    def on_snapshot_received(self, message: Message, path: Path) -> None:
        """A whole snapshot stream arrived in ``path``: check it, keep it, step its message.

        The transport checked that the bytes arrived as sent (size, CRC-32);
        this checks that they are a whole snapshot, and the one the message
        announces, before the core sees the message. Once the core takes a
        snapshot, it must be installed: a damaged stream from a faulty or
        hostile member would otherwise stop this node at restore. The check
        reads the file in a worker thread; a stream that fails it is dropped
        with a warning, and the leader, finding this node still behind, sends
        another.
        """
        if message.snapshot is None:
            path.unlink(missing_ok=True)
            return
        check = asyncio.get_running_loop().create_task(self._step_checked_snapshot(message, path))
        self._snapshot_checks.add(check)
        check.add_done_callback(self._snapshot_checks.discard)

    async def _step_checked_snapshot(self, message: Message, path: Path) -> None:
        assert message.snapshot is not None
        meta = message.snapshot.metadata
        try:
            problem = await asyncio.to_thread(self._disk.check_received_snapshot, meta, path)
        except BaseException:
            self._disk.drop_received_snapshot(path)
            raise
        if problem is not None or self._stopping:
            self._disk.drop_received_snapshot(path)
            if problem is not None:
                log.warning(
                    "node %d: dropped the snapshot at index %d from peer %d: %s",
                    self._id,
                    meta.index,
                    message.frm,
                    problem,
                )
            return
        self._disk.keep_received_snapshot(meta, path)
        self.on_messages([message])

    # -- requests --------------------------------------------------------------------

    def _check_serving(self) -> RawNode:
        """The core, if this node serves at all (stale reads need nothing more)."""
        raw = self._raw
        if self._failed:
            raise ServiceUnavailableError(f"node failed: {self._failed}", retry_after=5)
        if self._removed:
            raise NodeRemovedError("this node was removed from the cluster")
        if raw is None or self._stopping:
            raise NotReadyError("the node is starting or stopping")
        return raw

    def _check_disk(self, refused: str) -> RawNode:
        """The core, if this node serves and its disk takes writes: what writes,
        membership changes and linearizable reads need (see the module docstring).

        Args:
            refused: what is refused while the disk is full, for the message.

        Raises:
            NoSpaceError: the disk is full (``507``); the node retries by itself.
            ServiceUnavailableError: saving fails for another reason, retried.
        """
        raw = self._check_serving()
        disk = self._disk
        if disk.no_space is not None:
            raise NoSpaceError(
                f"this node's disk is full: it cannot write to its storage ({disk.no_space}); "
                f"it is read-only until space returns, so {refused}; it retries by itself",
                retry_after=_NOSPACE_RETRY_AFTER,
            )
        if disk.save_error is not None:
            raise ServiceUnavailableError(
                f"this node cannot write to its storage ({disk.save_error}); "
                "it retries, and serves again once a write succeeds",
                retry_after=2,
            )
        return raw

    async def put(
        self,
        key: bytes,
        value: bytes,
        *,
        if_match: int | None = None,
        if_none_match: bool = False,
        idempotency_key: bytes | None = None,
        lease: int = 0,
    ) -> WriteResult:
        """See ``NodeHandle.put``."""
        _check_lease_id(lease, allow_none=True)
        try:
            if if_none_match:
                cmd = Command.put(key, value, create_only=True, lease=lease)
            else:
                cmd = Command.put(key, value, if_mod=if_match, lease=lease)
        except InvalidCommandError as e:
            raise BadRequestError(str(e)) from None
        result = await self._write(cmd, idempotency_key)
        # mod_index is the put's own index, or the first attempt's for a duplicate.
        return WriteResult(result.mod_index, result.prev_mod_index > 0, result.duplicate)

    async def delete(
        self,
        key: bytes,
        *,
        if_match: int | None = None,
        idempotency_key: bytes | None = None,
    ) -> WriteResult:
        """See ``NodeHandle.delete``."""
        try:
            cmd = Command.delete(key, if_mod=if_match)
        except InvalidCommandError as e:
            raise BadRequestError(str(e)) from None
        result = await self._write(cmd, idempotency_key)
        # mod_index is the delete's own index, or the first attempt's for a
        # duplicate; 0 only in a duplicate answered from a session stored
        # before deletes recorded it (raftdb.kv.applier._duplicate).
        index = result.mod_index or result.index
        return WriteResult(index, result.prev_mod_index > 0, result.duplicate)

    async def _write(self, cmd: Command, idempotency_key: bytes | None) -> KVResult:
        raw = self._check_disk("writes are refused (stale reads are served)")
        return await self._requests.write(raw, cmd, idempotency_key)

    # -- transactions ----------------------------------------------------------------

    async def txn(self, txn: Txn, *, idempotency_key: bytes | None = None) -> TxnAnswer:
        """See ``NodeHandle.txn``."""
        try:
            cmd = Command.txn(txn.encode())
        except InvalidCommandError as e:
            raise BadRequestError(str(e)) from None
        reruns = 0
        while True:
            result = await self._write(cmd, idempotency_key)
            outcome = result.txn
            if outcome is None:  # an OK answer to a TXN always has one
                raise OutcomeUnknownError("the transaction was applied without an outcome")
            if not result.duplicate:
                return TxnAnswer(result.mod_index, outcome.succeeded, outcome.results)
            # A request without a key answered as a duplicate: its first copy
            # was applied where this node did not see it (it caught up through
            # a leader's snapshot), and its second proposal was answered from
            # this node's session, which keeps no reads. If the branch that ran
            # only read, it changed nothing: run it again, for its reads.
            if (
                idempotency_key is not None
                or txn.writes(outcome.succeeded)
                or reruns == _TXN_RERUNS
            ):
                break
            reruns += 1
        # mod_index: the first attempt's index. Its writes were applied once;
        # their results and its reads were not kept.
        return TxnAnswer(result.mod_index, outcome.succeeded, None, True)

    # -- leases ----------------------------------------------------------------------

    async def lease_grant(self, ttl: int, *, idempotency_key: bytes | None = None) -> LeaseInfo:
        """See ``NodeHandle.lease_grant``."""
        minimum = self.config.min_lease_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int):
            raise BadRequestError(f"a lease's ttl is a whole number of seconds, got {ttl!r}")
        if ttl < minimum:
            raise BadRequestError(
                f"a lease's ttl must be at least {minimum} seconds (got {ttl}): above twice "
                "the election timeout, so that a leader change cannot expire it early"
            )
        if ttl > MAX_LEASE_TTL:
            raise BadRequestError(f"a lease's ttl must be at most {MAX_LEASE_TTL} seconds")
        result = await self._write(Command.lease_grant(ttl), idempotency_key)
        return self._lease_info(result.lease, result.ttl)

    async def lease_keepalive(self, lease_id: int) -> LeaseInfo:
        """See ``NodeHandle.lease_keepalive``."""
        _check_lease_id(lease_id)
        result = await self._write(Command.lease_keepalive(lease_id), None)
        return self._lease_info(lease_id, result.ttl)

    async def lease_revoke(self, lease_id: int) -> None:
        """See ``NodeHandle.lease_revoke``."""
        _check_lease_id(lease_id)
        await self._write(Command.lease_revoke(lease_id), None)

    async def lease_info(
        self, lease_id: int, consistency: Consistency = "linearizable"
    ) -> LeaseInfo:
        """See ``NodeHandle.lease_info``."""
        _check_lease_id(lease_id)
        await self._read_point(consistency)
        assert self._sm is not None
        sm = self._sm
        lease = self._read_state(lambda: sm.lease(lease_id))
        if lease is None:
            raise LeaseNotFoundError(
                f"lease {lease_id} does not exist (never granted, revoked or expired)"
            )
        return self._lease_info(lease.id, lease.ttl, tuple(sorted(lease.keys)))

    async def leases(self, consistency: Consistency = "linearizable") -> list[LeaseInfo]:
        """See ``NodeHandle.leases``."""
        await self._read_point(consistency)
        return [self._lease_info(lease.id, lease.ttl) for lease in self._sm_leases()]

    def _lease_info(self, lease_id: int, ttl: int, keys: tuple[bytes, ...] = ()) -> LeaseInfo:
        """A lease as this member sees it: its remaining time from the lease keeper
        (the full TTL if not applied here yet: a read may see a grant a moment
        before the keeper does)."""
        assert self._loop is not None
        remaining = self._leases.remaining(lease_id, self._loop.time())
        left = float(ttl) if remaining is None else max(0.0, min(float(ttl), remaining))
        return LeaseInfo(lease_id, ttl, left, keys)

    def _leading(self) -> bool | None:
        """Whether this node leads now (the lease keeper asks every tick); ``None``
        while it does not serve (failed, removed, not started): no change then."""
        raw = self._raw
        if raw is None or self._failed or self._removed:
            return None
        return raw.role == Role.LEADER

    def _sm_leases(self) -> list[Lease]:
        sm = self._sm
        if sm is None:
            return []
        return self._read_state(sm.leases)

    # -- watch -----------------------------------------------------------------------

    async def watch(
        self,
        *,
        prefix: bytes = b"",
        key: bytes | None = None,
        since: int | None = None,
        prev: bool = True,
    ) -> Watcher:
        """See ``NodeHandle.watch``.

        ``since`` at or below what this node applied needs no round trip; a
        ``since`` ahead of it is checked against a read index (it may be an
        index another member already applied). ``prev=False`` skips looking
        up each event's previous value (one history read per change).
        """
        self._check_serving()
        _check_watched(prefix, key)
        if since is None:
            since = await self.read_index()
        elif isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise BadRequestError(f"since must be an index >= 0, got {since!r}")
        elif since > self._hub.applied:
            read = await self.read_index()
            if since > read:
                raise BadRequestError(
                    f"since {since} is after the last index of the cluster ({read})"
                )
        return await self._hub.watch(prefix=prefix, key=key, since=since, prev=prev)

    async def wait_for_change(
        self,
        *,
        prefix: bytes = b"",
        key: bytes | None = None,
        index: int,
        timeout: float,  # noqa: ASYNC109 (the API's wait: its end is an answer, not an error)
    ) -> None:
        """See ``NodeHandle.wait_for_change``."""
        self._check_serving()
        _check_watched(prefix, key)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise BadRequestError(f"the wait index must be an index >= 0, got {index!r}")
        await self._hub.wait(prefix=prefix, key=key, after=index, timeout=max(0.0, timeout))

    # -- locks -----------------------------------------------------------------------

    async def lock(
        self,
        name: bytes,
        lease: int,
        timeout: float,  # noqa: ASYNC109 (on time-out the wait key is deleted: a 408)
    ) -> LockHeld:
        """See ``NodeHandle.lock`` (the recipe: ``raftdb.node.locks``)."""
        _check_lease_id(lease)
        return await locks.acquire(self, name, lease, timeout)

    async def unlock(self, name: bytes, lease: int) -> None:
        """See ``NodeHandle.unlock``."""
        _check_lease_id(lease)
        await locks.release(self, name, lease)

    async def read_index(self) -> int:
        """Confirm leadership (ReadIndex) and wait until this node applied the read index."""
        raw = self._check_disk(
            "it cannot answer a linearizable read (read with consistency=stale, "
            "or from another node)"
        )
        return await self._requests.read_index(raw)

    async def get(
        self, key: bytes, consistency: Consistency = "linearizable"
    ) -> tuple[KeyValue | None, int]:
        """See ``NodeHandle.get``."""
        self._view.count_read(consistency)
        index = await self._read_point(consistency)
        assert self._sm is not None
        sm = self._sm
        return self._read_state(lambda: sm.get(key)), index

    async def snapshot(self) -> BackupStream:
        """See ``NodeHandle.snapshot``: a read point, then the state machine's snapshot
        (``raftdb.node.backup``)."""
        await self.read_index()
        assert self._sm is not None
        return await open_backup(self._sm, self._backups, self._id)

    async def _read_point(self, consistency: Consistency) -> int:
        if consistency == "linearizable":
            return await self.read_index()
        self._check_serving()
        return self._applied_index()

    async def range(
        self,
        prefix: bytes = b"",
        *,
        start: bytes | None = None,
        limit: int | None = None,
        consistency: Consistency = "linearizable",
        values: bool = True,
        max_bytes: int | None = None,
    ) -> tuple[list[KeyValue], int]:
        """See ``NodeHandle.range``.

        A small range of keys is read on the loop; a larger one, or one with
        values, in a thread (``asyncio.to_thread``): the state machine reads
        from any thread, and its one bounded page (``max_bytes``) keeps the
        thread's work and memory bounded too.
        """
        self._view.count_read(consistency)
        return await self.read_range(
            prefix,
            start=start,
            limit=limit,
            consistency=consistency,
            values=values,
            max_bytes=max_bytes,
        )

    async def read_range(
        self,
        prefix: bytes = b"",
        *,
        start: bytes | None = None,
        limit: int | None = None,
        consistency: Consistency = "linearizable",
        values: bool = True,
        max_bytes: int | None = None,
    ) -> tuple[list[KeyValue], int]:
        """:meth:`range` without counting it as a client's read (the lock recipe's listings)."""
        index = await self._read_point(consistency)
        assert self._sm is not None
        sm = self._sm

        def read() -> list[KeyValue]:
            return sm.range(prefix, start or b"", limit, values=values, max_bytes=max_bytes)

        if values or limit is None or limit > _INLINE_RANGE_KEYS:
            try:
                return await asyncio.to_thread(read), index
            except StorageError as e:
                raise self._damaged(e) from None
        return self._read_state(read), index

    def _read_state(self, read: Callable[[], _T]) -> _T:
        """A read of the state machine. Damage found there (a ``StorageError``: the
        plugin verifies what it reads) stops the node as a failed write does;
        the read answers ``503``, never a wrong value. A state machine that
        cannot read for lack of space (its database could not be reopened
        after a refused batch) answers ``507``."""
        try:
            return read()
        except OSError as e:
            if not is_no_space(e):
                raise
            raise NoSpaceError(
                f"this node's disk is full and its state cannot be read now ({e}); "
                "read from another node",
                retry_after=_NOSPACE_RETRY_AFTER,
            ) from None
        except StorageError as e:
            raise self._damaged(e) from None

    def _read_failed(self, e: Exception) -> NodeError:
        """What a failed read of the watch history answers (see :meth:`_read_state`)."""
        if isinstance(e, OSError) and is_no_space(e):
            return NoSpaceError(
                f"this node's disk is full and its history cannot be read now ({e}); "
                "watch through another node",
                retry_after=_NOSPACE_RETRY_AFTER,
            )
        if isinstance(e, StorageError):
            return self._damaged(e)
        return ServiceUnavailableError(f"reading the watch history failed: {e}", 1)

    def _damaged(self, e: StorageError) -> ServiceUnavailableError:
        """Stop the node for damage a read found (see :meth:`_read_state`); the read's ``503``."""
        self._fail(f"{type(e).__name__}: {e}")
        return ServiceUnavailableError(f"node failed: {type(e).__name__}: {e}", 5)

    # -- membership ------------------------------------------------------------------

    async def add_member(self, node_id: int, peer_url: str, learner: bool = False) -> Member:
        """See ``NodeHandle.add_member``."""
        raw = self._check_disk("membership changes are refused")
        if node_id <= 0:
            raise BadRequestError(f"member id must be a positive integer, got {node_id}")
        current = self._members.get(node_id)
        if current is not None and current != peer_url:
            raise BadRequestError(f"member {node_id} exists with peer URL {current!r}")
        if not learner and node_id in self._learners and raw.role == Role.LEADER:
            progress = raw.status().progress.get(node_id)
            if progress is None or progress.match + _PROMOTION_LAG < raw.commit_index:
                raise ServiceUnavailableError(
                    f"learner {node_id} is not caught up yet (at "
                    f"{progress.match if progress else 0} of {raw.commit_index}); retry later",
                    retry_after=2,
                )
        kind = ConfChangeType.ADD_LEARNER if learner else ConfChangeType.ADD_VOTER
        result = await self._requests.change(raw, ConfChange(kind, node_id, peer_url.encode()))
        if result.error:
            raise BadRequestError(result.error)
        return Member(node_id, peer_url, learner)

    async def remove_member(self, node_id: int) -> None:
        """See ``NodeHandle.remove_member``."""
        raw = self._check_disk("membership changes are refused")
        if node_id not in self._members:
            raise MemberNotFoundError(f"no member with id {node_id}")
        result = await self._requests.change(raw, ConfChange(ConfChangeType.REMOVE_NODE, node_id))
        if result.error:
            raise BadRequestError(result.error)

    def members(self) -> list[Member]:
        """See ``NodeHandle.members``."""
        return [Member(i, url, i in self._learners) for i, url in sorted(self._members.items())]

    async def transfer_leader(self, node_id: int) -> None:
        """See ``NodeHandle.transfer_leader``."""
        raw = self._check_serving()
        if node_id not in self._members:
            raise MemberNotFoundError(f"no member with id {node_id}")
        if node_id in self._learners:
            raise BadRequestError(f"member {node_id} is a learner and cannot lead")
        if raw.lead == node_id:
            return
        if raw.lead == 0:
            raise no_leader(raw, "hand over leadership", self.config)
        try:
            raw.transfer_leader(node_id)
        except ProposalDroppedError as e:
            raise BadRequestError(e.reason) from None
        self._wake.set()
        # The request is one message that nothing resends: a follower forwards
        # it to the leader (the transport may drop it), the leader gives up
        # after an election timeout (TimeoutNow or a vote lost on the way, the
        # target not caught up in time), and a leader change forgets it. So it
        # is asked again, to whoever leads then, every election timeout until
        # leadership moved or time is up (the leader ignores a repeat of the
        # transfer it is doing).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        again = self.config.election_ticks * self.config.tick_ms / 1000
        ask_at = loop.time() + again
        while loop.time() < deadline:
            await asyncio.sleep(self.config.tick_ms / 1000)
            if raw.lead == node_id:
                return
            if loop.time() >= ask_at:
                ask_at = loop.time() + again
                if raw.lead != 0:
                    with contextlib.suppress(ProposalDroppedError):
                        raw.transfer_leader(node_id)
                        self._wake.set()
        raise ServiceUnavailableError(
            f"leadership did not move to {node_id} in time", retry_after=1
        )

    # -- inspection ------------------------------------------------------------------

    def status(self) -> NodeStatus:
        """See ``NodeHandle.status``."""
        raw = self._raw
        if raw is None:
            raise NotReadyError("the node is starting")
        st = raw.status()
        role: Any = "learner" if self._id in self._learners else st.role.value
        if role == "pre-candidate":
            role = "candidate"
        return NodeStatus(
            id=self._id,
            role=role,
            leader=st.lead,
            term=st.term,
            commit_index=st.commit,
            applied_index=self._applied_index(),
            first_index=st.first_index,
            last_index=st.last_index,
            members=self.members(),
            alarms=self._disk.alarms,
            sync=self.config.sync,
            cluster_id=self._cluster_id.value,
        )

    def cluster_status(self) -> ClusterStatus:
        """See ``NodeHandle.cluster_status`` (the rules: ``raftdb.node.cluster_view``)."""
        status = self.status()  # raises NotReadyError while starting
        assert self._raw is not None
        progress = self._raw.status().progress
        return self._view.build(status, progress, writes=counter_value(self.metrics.proposals))

    def is_ready(self) -> bool:
        """See ``NodeHandle.is_ready``."""
        raw = self._raw
        return (
            raw is not None
            and not self._failed
            and self._disk.save_error is None
            and not self._removed
            and not self._stopping
            and raw.lead != 0
            # A joining node has applied nothing until the leader's log or
            # snapshot reaches it: 0 >= 0 would call it ready too early.
            and self._applied_index() > 0
            and self._applied_index() >= raw.commit_index
        )

    def metrics_text(self) -> str:
        """See ``NodeHandle.metrics_text``."""
        raw = self._raw
        if raw is not None:
            queues = self._transport.queue_lengths() if self._transport is not None else {}
            self.metrics.update(raw.status(), self._applied_index(), queues)
        self.metrics.set_alarms(self._disk.alarms)
        self.metrics.set_cluster_id(self._cluster_id.value)
        return self.metrics.render()


def _check_lease_id(lease: int, *, allow_none: bool = False) -> None:
    """Raise ``400`` unless ``lease`` is a lease id (or 0, "none", with ``allow_none``)."""
    if isinstance(lease, bool) or not isinstance(lease, int) or lease < (0 if allow_none else 1):
        raise BadRequestError(f"a lease id is an integer >= 1, got {lease!r}")


def _check_watched(prefix: bytes, key: bytes | None) -> None:
    """Raise ``400`` unless the watch names a non-empty key or (only) a prefix."""
    if key is not None and (not key or prefix):
        raise BadRequestError("watch a non-empty key, or a prefix, not both")
