"""Data-directory surgery done offline: restore a member from a backup, or recover a
survivor of a lost quorum as a cluster of one (``raftdb snapshot restore``,
``raftdb recover``).

Both build what :meth:`raftdb.node.node.Node.start` reads, through the node's
own plugins (:mod:`raftdb.plugins`, in :data:`~raftdb.node.disk.LOG_DIR` and
:data:`~raftdb.node.disk.STATE_DIR`): a state machine at some index ``i``
whose membership is the new cluster's, a storage holding a snapshot at
``i`` with that conf state and a hard state committing ``i`` (so the node is
not *fresh* and does not bootstrap), and a new cluster identity
(:mod:`raftdb.node.identity`), so that members of the old cluster and of the
new one refuse each other.

Restore (as ``etcdutl snapshot restore``). The backup is read twice: once
to check it whole (every frame, checksum and count) and take its SHA-256,
then to restore it, its header rewritten on the way to the ``--cluster``
list (voters ``1..n``, member ``i`` at entry ``i-1``, no learners); keys,
sessions, leases and the watch history pass unchanged. The index and term
stay the backup's. Nothing in the result depends on the member but its
place in the list, so members restored separately from the same file and
list form one cluster, whose identity is derived from the file's SHA-256
and the list. The directory is built beside the target
(``.<name>.restore-<pid>``) and renamed into place only when complete, so a
crash midway never leaves a data directory a node would start from: a
half-built one (a state machine without its log) would look fresh and
bootstrap.

Recover (as ``etcd --force-new-cluster``). Two designs were possible:
append conf-change entries that remove the other members and commit them
by fiat, or rebuild the member around a snapshot. This module does the
latter, because the core then needs no special mode and the result is the
same shape as a restore's: every entry of the survivor's log after its
state machine's applied index is applied to the state machine (committed or
not: see the risk below), then one empty entry at ``last + 1`` in the
survivor's current term (the recovery's own index, always newer than the
stored snapshot, so the storage accepts it even when the log holds nothing
after its snapshot), then the state machine's own snapshot is restored back
into it with its membership rewritten to ``{N}`` alone, and the storage
takes a snapshot at that index with conf state ``{N}`` and a hard state
committing it. The state machine switches first (its restore is atomic);
a crash before the storage's save leaves a state machine ahead of its log,
which running ``recover`` again repairs (it applies nothing and moves one
index further).

The risk, as etcd's: the survivor's log may end with entries the old
cluster never committed (it had them, a majority did not); they become
committed here. Entries the old cluster committed but the survivor never
received are lost. :func:`plan_recover` counts the entries past the
survivor's known commit index so the operator sees it before agreeing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from raftdb.config import NodeConfig
from raftdb.kv.changes import Change
from raftdb.kv.snapshot import (
    SnapshotFormatError,
    SnapshotInfo,
    SnapshotReader,
    encode_stream,
)
from raftdb.kv.state_machine import StateMachine
from raftdb.node.disk import LOG_DIR, STATE_DIR
from raftdb.node.identity import (
    ClusterIdError,
    derive_cluster_id,
    read_cluster_id,
    write_cluster_id,
)
from raftdb.plugins import PluginError, open_state_machine, open_storage
from raftdb.raft import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from raftdb.storage.protocol import Storage

__all__ = [
    "Progress",
    "RebuildError",
    "RecoverPlan",
    "Recovered",
    "Restored",
    "plan_recover",
    "recover_member",
    "restore_member",
    "rewrite_members",
]

#: ``progress(description, total)``: a context yielding ``advance(amount)``
#: (:meth:`raftdb.cli.common.Output.progress` with its unit bound).
Progress = Callable[[str, float | None], AbstractContextManager[Callable[[float], None]]]

_CHUNK: Final = 1 << 20
#: Entries read from the log and applied per batch during a recovery.
_APPLY_BATCH: Final = 512
_APPLY_BYTES: Final = 16 << 20


class RebuildError(Exception):
    """A restore or recovery refused or failed; the message is one line saying why."""


def _no_progress(
    description: str, total: float | None
) -> AbstractContextManager[Callable[[float], None]]:
    return nullcontext(lambda amount: None)


# -- restore ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Restored:
    """What :func:`restore_member` built.

    Attributes:
        data_dir: the member's new data directory.
        node_id: the member.
        index, term: the backup's (the new cluster starts after them).
        members: the new membership, ``{id: peer URL}``.
        keys, leases, sessions: what the backup held.
        bytes: the backup's size; sha256: its checksum (hex).
        cluster_id: the new cluster's identity.
        seconds: how long the restore took.
    """

    data_dir: Path
    node_id: int
    index: int
    term: int
    members: dict[int, str]
    keys: int
    leases: int
    sessions: int
    bytes: int
    sha256: str
    cluster_id: str
    seconds: float


def _file_chunks(path: Path, advance: Callable[[float], None]) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            advance(len(chunk))
            yield chunk


@dataclass(frozen=True, slots=True)
class _Checked:
    info: SnapshotInfo
    keys: int
    sessions: int
    leases: int
    sha256: str
    size: int


def _check_file(path: Path, progress: Progress) -> _Checked:
    """Read the whole backup as a restore would (``check_stream``'s checks), counting
    what it holds and taking its SHA-256."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    counts = [0, 0, 0]
    with progress(f"checking {path.name}", size) as advance:

        def chunks() -> Iterator[bytes]:
            for chunk in _file_chunks(path, advance):
                digest.update(chunk)
                yield chunk

        reader = SnapshotReader(chunks())
        for kv in reader.kv_batches():
            counts[0] += len(kv)
        for sessions in reader.session_batches():
            counts[1] += len(sessions)
        for leases in reader.lease_batches():
            counts[2] += len(leases)
        for _ in reader.history_batches():
            pass
        reader.finish()
    return _Checked(reader.info, counts[0], counts[1], counts[2], digest.hexdigest(), size)


def rewrite_members(chunks: Iterable[bytes], info: SnapshotInfo) -> Iterator[bytes]:
    """The snapshot ``chunks`` with its header replaced by ``info`` (same index and
    term expected); everything else passes through unchanged, checked as read.

    Raises (while iterated):
        SnapshotFormatError: the input stream is damaged.
    """
    reader = SnapshotReader(chunks)
    if (reader.info.index, reader.info.term) != (info.index, info.term):
        raise ValueError("rewrite_members keeps the snapshot's index and term")

    def history() -> Iterator[Change]:
        for batch in reader.history_batches():
            yield from batch
        reader.finish()  # the END counts and nothing after them, before END goes out

    return encode_stream(
        info,
        (record for batch in reader.kv_batches() for record in batch),
        (session for batch in reader.session_batches() for session in batch),
        leases=(lease for batch in reader.lease_batches() for lease in batch),
        history=history(),
        history_floor=reader.history_floor,
    )


def _require_empty(data_dir: Path) -> None:
    if data_dir.is_symlink() or (data_dir.exists() and not data_dir.is_dir()):
        raise RebuildError(f"{data_dir} exists and is not a directory")
    if data_dir.is_dir() and any(data_dir.iterdir()):
        raise RebuildError(
            f"data directory {data_dir} is not empty: a restore builds a new member "
            "from nothing (move it away or choose another --data-dir)"
        )


def _remove_abandoned_stages(parent: Path, name: str) -> None:
    """Delete what restores into ``name`` that crashed left behind (their process is gone)."""
    for stage in parent.glob(f".{name}.restore-*"):
        pid = stage.name.rsplit("-", 1)[1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(stage, ignore_errors=True)
        except OSError:
            pass  # alive, someone else's: leave it


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_error(exc: Exception, data_dir: Path) -> RebuildError:
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and "lock" in text.lower():
        return RebuildError(
            f"the data in {data_dir} is in use (its database is locked): "
            f"stop the node first ({text})"
        )
    return RebuildError(f"cannot open the data in {data_dir}: {text}")


def restore_member(
    backup: Path, config: NodeConfig, *, progress: Progress = _no_progress
) -> Restored:
    """Build ``config.data_dir`` for member ``config.id`` of a new cluster whose
    peers are ``config.cluster``, from the snapshot file ``backup`` (see the
    module docstring). Uses ``config``'s ``storage``, ``state_machine``,
    ``sync`` and ``watch_history``.

    Raises:
        RebuildError: the data directory is not empty, the file is damaged or
            unreadable, or a plugin failed; nothing is left in the data directory.
    """
    started = time.monotonic()
    data_dir = Path(config.data_dir)
    _require_empty(data_dir)
    try:
        checked = _check_file(backup, progress)
    except SnapshotFormatError as exc:
        raise RebuildError(f"{backup} is not a whole raftdb snapshot: {exc}") from None
    except OSError as exc:
        raise RebuildError(f"cannot read {backup}: {exc.strerror or exc}") from None
    info = checked.info
    if info.index == 0:
        raise RebuildError(
            f"{backup} is the snapshot of an empty log (index 0): nothing to restore"
        )
    cluster = tuple(config.cluster)
    members = {i: url for i, url in enumerate(cluster, start=1)}
    new_info = SnapshotInfo(info.index, info.term, ConfState(tuple(members)), members)
    cluster_id = derive_cluster_id("restore", checked.sha256, *cluster)

    parent = data_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_stages(parent, data_dir.name)
    stage = parent / f".{data_dir.name}.restore-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        _build(stage, backup, config, new_info, checked.size, progress)
        write_cluster_id(stage, cluster_id)
        _fsync_dir(stage)
        if data_dir.is_dir():
            data_dir.rmdir()  # empty (checked): the staged one takes its name
        os.replace(stage, data_dir)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return Restored(
        data_dir,
        config.id,
        info.index,
        info.term,
        members,
        checked.keys,
        checked.leases,
        checked.sessions,
        checked.size,
        checked.sha256,
        cluster_id,
        time.monotonic() - started,
    )


def _build(
    stage: Path,
    backup: Path,
    config: NodeConfig,
    info: SnapshotInfo,
    size: int,
    progress: Progress,
) -> None:
    """The state machine from the rewritten backup, then the storage around it."""
    try:
        with ExitStack() as stack:
            sm = open_state_machine(
                config.state_machine,
                stage / STATE_DIR,
                sync=config.sync,
                watch_history=config.watch_history,
            )
            stack.callback(sm.close)
            with progress(f"restoring {backup.name}", size) as advance:
                restored = sm.restore(rewrite_members(_file_chunks(backup, advance), info))
            if restored.index != info.index:  # a plugin that did not restore what it read
                raise RebuildError(
                    f"the state machine restored index {restored.index}, not {info.index}"
                )
            storage = open_storage(config.storage, stage / LOG_DIR, sync=config.sync)
            stack.callback(storage.close)
            storage.save(
                HardState(term=info.term, vote=0, commit=info.index),
                [],
                Snapshot(SnapshotMetadata(info.index, info.term, info.conf_state)),
            )
    except SnapshotFormatError as exc:  # the file changed since it was checked
        raise RebuildError(f"{backup} is not a whole raftdb snapshot: {exc}") from None
    except PluginError as exc:
        raise RebuildError(str(exc)) from None
    except OSError as exc:
        raise RebuildError(f"restoring into {stage} failed: {exc}") from None


# -- recover ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecoverPlan:
    """What :func:`recover_member` will do to a survivor's data (nothing is changed yet).

    Attributes:
        data_dir, node_id, peer_url: the survivor and the URL it keeps.
        old_members: the membership its state machine holds now.
        old_cluster_id: the identity its data records (``None``: none).
        term: its current term (the recovered cluster's).
        commit: the commit index it knows of.
        applied: its state machine's applied index.
        last_index: its log's last entry.
        new_index: the recovery's own index (the new cluster starts after it).
        to_apply: entries of the log that will be applied to the state machine.
        uncommitted: of those, the ones past ``commit`` (maybe never committed
            in the old cluster; they become committed).
    """

    data_dir: Path
    node_id: int
    peer_url: str
    old_members: dict[int, str]
    old_cluster_id: str | None
    term: int
    commit: int
    applied: int
    last_index: int
    new_index: int
    to_apply: int
    uncommitted: int


@dataclass(frozen=True, slots=True)
class Recovered:
    """What :func:`recover_member` did: its plan, carried out, and the new identity."""

    plan: RecoverPlan
    cluster_id: str
    seconds: float


def _survivor_url(config: NodeConfig, members: dict[int, str]) -> str:
    """The URL the survivor keeps: its ``cluster`` entry, as the node's own start picks it."""
    cluster = tuple(config.cluster)
    if config.id <= len(cluster) and cluster[config.id - 1]:
        return cluster[config.id - 1]
    return members.get(config.id, "")


@dataclass(slots=True)
class _Survivor:
    """The survivor's storage and state machine, open (close it)."""

    storage: Storage
    sm: StateMachine

    def close(self) -> None:
        try:
            self.sm.close()
        finally:
            self.storage.close()


def _open_survivor(config: NodeConfig) -> _Survivor:
    data_dir = Path(config.data_dir)
    if not (data_dir / LOG_DIR).is_dir() or not (data_dir / STATE_DIR).is_dir():
        raise RebuildError(f"{data_dir} holds no member's data (no {LOG_DIR}/ and {STATE_DIR}/)")
    try:
        storage = open_storage(config.storage, data_dir / LOG_DIR, sync=config.sync)
    except PluginError as exc:
        raise RebuildError(str(exc)) from None
    except Exception as exc:
        raise _open_error(exc, data_dir) from None
    try:
        sm = open_state_machine(
            config.state_machine,
            data_dir / STATE_DIR,
            sync=config.sync,
            watch_history=config.watch_history,
        )
    except BaseException as exc:
        storage.close()
        if isinstance(exc, PluginError):
            raise RebuildError(str(exc)) from None
        if isinstance(exc, Exception):
            raise _open_error(exc, data_dir) from None
        raise
    return _Survivor(storage, sm)


def _plan(config: NodeConfig, survivor: _Survivor) -> RecoverPlan:
    storage, sm = survivor.storage, survivor.sm
    data_dir = Path(config.data_dir)
    hard_state, _ = storage.initial_state()
    last = storage.last_index()
    if last == 0 and hard_state.is_empty():
        raise RebuildError(f"{data_dir} holds an empty log: there is nothing to recover")
    applied = sm.applied_index
    if applied < storage.first_index() - 1:
        raise RebuildError(
            f"the state machine in {data_dir} is at index {applied}, before the log's "
            f"first index {storage.first_index()}: this member cannot be recovered"
        )
    members = sm.members()
    if members and config.id not in members:
        known = ", ".join(str(i) for i in sorted(members))
        raise RebuildError(
            f"node {config.id} is not a member of the cluster whose data is in {data_dir} "
            f"(members: {known}): is --id right?"
        )
    url = _survivor_url(config, members)
    if not url:
        raise RebuildError(f"no peer URL for node {config.id}: give it in 'cluster'")
    try:
        old_id = read_cluster_id(data_dir)
    except (ClusterIdError, OSError) as exc:
        raise RebuildError(str(exc)) from None
    term = max(hard_state.term, storage.term(last), 1)
    to_apply = max(0, last - applied)
    return RecoverPlan(
        data_dir=data_dir,
        node_id=config.id,
        peer_url=url,
        old_members=members,
        old_cluster_id=old_id,
        term=term,
        commit=hard_state.commit,
        applied=applied,
        last_index=last,
        new_index=max(last, applied) + 1,
        to_apply=to_apply,
        uncommitted=max(0, last - max(hard_state.commit, applied)),
    )


def plan_recover(config: NodeConfig) -> RecoverPlan:
    """Look at a survivor's data and say what :func:`recover_member` would do.

    Raises:
        RebuildError: the data is missing, in use by a running node, or cannot
            be recovered.
    """
    with closing(_open_survivor(config)) as survivor:
        return _plan(config, survivor)


def recover_member(config: NodeConfig, *, progress: Progress = _no_progress) -> Recovered:
    """Turn the survivor ``config.id``'s data in ``config.data_dir`` into a cluster of
    one that keeps every entry it has (see the module docstring for how, and the risk).

    Raises:
        RebuildError: as :func:`plan_recover`, or a plugin failed midway (running
            it again then finishes the job).
    """
    started = time.monotonic()
    with closing(_open_survivor(config)) as survivor:
        plan = _plan(config, survivor)
        storage, sm = survivor.storage, survivor.sm
        try:
            _apply_log(storage, sm, plan, progress)
            sm.apply([Entry(term=plan.term, index=plan.new_index)])
            members = {plan.node_id: plan.peer_url}
            conf = ConfState((plan.node_id,))
            with sm.snapshot() as stream:
                info = stream.info
                if info.index != plan.new_index:
                    raise RebuildError(
                        f"the state machine is at {info.index} after applying, not {plan.new_index}"
                    )
                new_info = SnapshotInfo(info.index, info.term, conf, members)
                restored = sm.restore(rewrite_members(stream, new_info))
            if restored.conf_state != conf:
                raise RebuildError("the state machine did not take the new membership")
            storage.save(
                HardState(term=plan.term, vote=0, commit=plan.new_index),
                [],
                Snapshot(SnapshotMetadata(plan.new_index, info.term, conf)),
            )
        except (SnapshotFormatError, OSError) as exc:
            raise RebuildError(f"recovering {plan.data_dir} failed: {exc}") from None
    cluster_id = derive_cluster_id(
        "recover",
        plan.old_cluster_id or "",
        str(plan.node_id),
        plan.peer_url,
        str(plan.new_index),
        str(plan.term),
    )
    write_cluster_id(plan.data_dir, cluster_id)
    return Recovered(plan, cluster_id, time.monotonic() - started)


def _apply_log(storage: Storage, sm: StateMachine, plan: RecoverPlan, progress: Progress) -> None:
    """Apply the log's entries after the state machine's applied index, in batches."""
    lo, hi = plan.applied + 1, plan.last_index + 1
    if lo >= hi:
        return
    with progress("applying the log", hi - lo) as advance:
        while lo < hi:
            batch = storage.entries(lo, min(hi, lo + _APPLY_BATCH), _APPLY_BYTES)
            sm.apply(batch)
            advance(len(batch))
            lo += len(batch)
