"""The LevelDB state machine: keys, indexes, sessions, leases, watch history and membership on disk.

Layout. The state lives in ``<path>/db-NNNNNN/`` (a LevelDB database), and
``<path>/CURRENT`` names which one. Inside, one byte before every key says
what it holds (:mod:`raftdb_leveldb._layout` has the table): ``d`` keys and
their indexes, ``s`` sessions, ``l`` leases, ``h`` the retained watch
history in index order, ``m/...`` the format marker, the applied state and
the history floor. A database of format 1 (before leases and the history)
is upgraded at open: it has neither, and its floor is its applied index
(nothing before it is retained), as for a format-1 snapshot.

Apply. A batch of entries becomes one ``WriteBatch``: the keys it writes, the
sessions and leases it changes, the history changes it adds and trims, the
floor and the new ``m/state``, so ``applied_index`` is always exactly the
state the data shows, and LevelDB makes the batch visible to readers all at
once.

Durability (``sync`` on, the default): *durable at make_durable*
(:class:`~raftdb.state_machine.BatchesDurability`). A batch is written without
``sync``: ``apply`` returns once it is visible, and makes nothing durable.
:meth:`LevelDBStateMachine.make_durable` makes every batch so far durable; the
node calls it at most every ``state_sync_interval_ms`` (many batches, one
fsync), before a restore and at close. After a power loss the database is the
state after some prefix of the batches, at or after the last
``make_durable``'s :attr:`~LevelDBStateMachine.durable_index`; the node replays
the rest from the Raft log. Two things keep it a prefix:

- *Every log.* ``make_durable`` fsyncs every log LevelDB has, then the
  directory if it changed (a new log is a new name in it:
  :class:`~raftdb_leveldb._db.NewNames`), and makes no LevelDB write (which
  would hold every apply behind its fsync: applies go on meanwhile, on their
  own thread). LevelDB closes the log it rotates away from without an fsync,
  so batches written before a rotation sit in that old log while later ones
  go to the new one; a synced write, which fsyncs the current log only, would
  let a cut keep those and lose these (:func:`~raftdb_leveldb._db.fsync_logs`:
  a log that is gone was deleted only once its memtable was in a synced
  table). The point it reached is written by the next batch (``m/verified``),
  without sync.
- *A chain of batches.* Within one log a disk may keep later pages and lose
  earlier ones; LevelDB reads a page lost as zeros as nothing and goes on with
  the records after it. Each batch also writes a mark (``m/batch/<last>`` =
  ``first``), and opening follows them from the applied index down to
  ``m/verified``, the point every batch before which was durable: a missing
  batch is a ``CorruptionError`` that says so, never a state with a hole
  (:mod:`raftdb_leveldb._layout`).

Reads. Keys are read from LevelDB, which shows a batch whole or not at all,
while applies go on. Leases and the history are answered from memory (loaded
at open), but not from the Applier's, which runs ahead of the disk while a
batch is computed and written: readers have their own copy (a
:class:`~raftdb.state_machine.History` and a dict of the immutable leases,
sharing the Applier's objects), advanced by each batch once LevelDB has it,
under a mutex held for that step only. So a lease or history read never
waits for a batch's write or fsync, and never sees a batch the disk has not
taken.

A full disk. A batch LevelDB refuses for lack of space
(``OSError(ENOSPC)``, :mod:`raftdb.storage.nospace`) was not applied: LevelDB
adds a batch to what readers see only once its log record is written, so
reads go on seeing the state before it (the readers' copy of leases and
history is not advanced either). The Applier's memory ran ahead, and as
LevelDB refuses every write after a failed one, the next ``apply`` (the
driver retries the same batch, in order) first reopens the database
(:func:`raftdb_leveldb._db.reopen`, once there is room) and reloads the
applied state from it, leases and history included, then applies. Had the
batch reached the disk after all (its log record was written whole and only
the fsync was refused), the reopened database is at the batch's last index,
its leases and history with it: the batch is not applied again, and the
results computed the first time are returned. Any other failure still makes
the state machine refuse every later call.

Damage. At open the format marker, the state record, every session, every
lease and the whole retained history are read and checked (each change under
the key its place gives it, between the floor and the applied index); the
keys are not (a state may be gigabytes), but every read of them verifies
LevelDB's block checksums, so a damaged block is an error, never a wrong value.

Snapshot. A LevelDB snapshot pins the point in time; the stream reads keys,
sessions, leases and history from it in slices, so they are all of one
applied index, memory stays bounded whatever the size of the state, and
applies go on meanwhile.

Restore. The stream is written into a fresh ``db-NNNNNN+1``, checked to its
end, closed and fsynced file by file; only then does ``CURRENT`` switch to it
(write, fsync, rename, fsync the directory) and the old database go. A crash
at any point before the rename leaves the old state whole; the leftover
directory is removed at the next open.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, Final

from raftdb.raft import ConfState, Entry, StorageError, UsageError
from raftdb.state_machine import (
    DEFAULT_CHUNK_SIZE,
    AppliedBatch,
    Applier,
    ApplyResult,
    Change,
    CorruptionError,
    History,
    KeyValue,
    KVRecord,
    Lease,
    RWLock,
    SessionState,
    SnapshotAbortedError,
    SnapshotFormatError,
    SnapshotInfo,
    SnapshotReader,
    SnapshotStream,
    check_range_args,
    decode_info,
    decode_lease,
    decode_session,
    encode_info,
    encode_lease,
    encode_session,
    encode_stream,
    prefix_end,
)
from raftdb.storage import durable_mkdir, is_no_space
from raftdb_leveldb._db import (
    NewNames,
    fsync_dir,
    fsync_logs,
    fsync_tree,
    leveldb_errors,
    open_db,
    reopen,
)
from raftdb_leveldb._layout import (
    CHANGE,
    DATA,
    DATA_END,
    FLOOR,
    FORMAT,
    FORMAT_1,
    FORMAT_KEY,
    INDEX,
    LEASE,
    MARK,
    REC,
    SESSION,
    STATE,
    VERIFIED,
    BatchBackend,
    HistoryKeys,
    data_record,
    decode_change_record,
    decode_floor,
    encode_change_record,
    encode_floor,
    lease_key,
    read_history,
    read_leases,
    stage_leases_and_history,
)
from raftdb_leveldb._marker import unknown_format

__all__ = ["LevelDBStateMachine"]

_log = logging.getLogger("raftdb.leveldb")

_CURRENT: Final = "CURRENT"
_NAME = re.compile(r"db-(\d{6})")
_SLICE: Final = 1024  # records read from a LevelDB snapshot per lock hold
_EMPTY = SnapshotInfo(0, 0, ConfState(), {})


#: Batches written since the last make_durable beyond which ``apply`` makes them
#: durable first: it bounds the marks held, the chain opening follows and the replay
#: after a power cut, for a caller that never calls make_durable (the node calls it
#: every state_sync_interval_ms, far below this at any rate).
MAX_UNSYNCED_BATCHES: Final = 10_000


def _index(raw: bytes, where: str) -> int:
    """An 8-byte index of ``m/verified`` or a batch mark."""
    if len(raw) != INDEX.size:
        raise CorruptionError(f"{where}: a batch mark or m/verified is {len(raw)} bytes, not 8")
    value: int = INDEX.unpack(raw)[0]
    return value


#: A test-only knob: the write buffer in bytes (a small one makes LevelDB rotate its
#: log every few batches, which the power-loss tests aim at). Not a setting: unset
#: in production.
WRITE_BUFFER_ENV: Final = "TEST_RAFTDB_LEVELDB_WRITE_BUFFER"
# Bloom filters make the read every put does (for the key's create index)
# cheap when the key is new. A 32 MiB write buffer (LevelDB's default is
# 4 MiB) and 8 MiB tables cut memtable flushes and level-0 compactions by
# eight: measured on the 2-core reference machine, batches of 1000 puts went
# from about 140,000 to about 220,000 puts/s, and the worst batch from LevelDB's
# write slowdown got rarer. The cost is up to 64 MiB of memtables.
_OPTIONS: Final[dict[str, int]] = {
    "bloom_filter_bits": 10,
    "write_buffer_size": 32 << 20,
    "max_file_size": 8 << 20,
}


def _db_options() -> dict[str, int]:
    """:data:`_OPTIONS`, with the write buffer of :data:`WRITE_BUFFER_ENV` if set."""
    options = dict(_OPTIONS)
    size = os.environ.get(WRITE_BUFFER_ENV)
    if size:
        options["write_buffer_size"] = int(size)
    return options


class _Refused:
    """A batch LevelDB refused for lack of space: where the state was before it,
    and what applying it computed (returned if the batch reached the disk after all)."""

    __slots__ = ("before", "error", "last", "results")

    def __init__(
        self, before: int, last: int, results: list[ApplyResult] | None, error: OSError
    ) -> None:
        self.before = before
        self.last = last
        self.results = results
        self.error = error


class LevelDBStateMachine:
    """A :class:`~raftdb.state_machine.StateMachine` in LevelDB: the ``leveldb`` plugin.

    Args:
        path: the directory the state machine owns (created if missing).
        sync: keep the state a prefix of the applied batches across a power
            loss (the default): the batches are made durable by
            :meth:`make_durable` (see the module docstring). Off, a process
            crash loses nothing, but after a machine crash the state may not
            be a prefix of the applied batches; use it for tests and
            benchmarks.
        session_ttl: overrides :data:`raftdb.kv.commands.SESSION_TTL_ENTRIES` (one
            value for the whole cluster).
        watch_history: the changes the watch history retains (``None``: the
            Applier's default, ``DEFAULT_WATCH_HISTORY``). A node may change
            it across restarts: the next batch trims to the new bound.

    Raises:
        ValueError: ``watch_history`` is not an integer >= 0.
        CorruptionError: the state on disk is damaged or inconsistent.
        OSError: the database cannot be opened (e.g. in use by another process).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        sync: bool = True,
        session_ttl: int | None = None,
        watch_history: int | None = None,
    ) -> None:
        self._options: dict[str, int] = {}  # the Applier's (a restore makes a new one)
        if session_ttl is not None:
            self._options["session_ttl"] = session_ttl
        if watch_history is not None:
            if type(watch_history) is not int or watch_history < 0:
                raise ValueError(f"watch_history must be an integer >= 0, got {watch_history!r}")
            self._options["history_limit"] = watch_history
        self._applier = Applier(**self._options)
        self._path = Path(path)
        durable_mkdir(self._path)
        self._sync = sync
        self._db_options = _db_options()
        # Under _marks_mu (apply and make_durable run on different threads): the
        # last index of each batch written and not made durable yet (their
        # m/batch marks); what the next batch writes once make_durable made
        # some durable (m/verified, and the marks it no longer needs); and
        # durable_index, every batch up to which is durable.
        self._marks_mu = threading.Lock()
        self._marks: list[int] = []
        self._clean: tuple[int, list[int]] | None = None
        self._durable = 0
        #: Counts (inspection, benchmarks): make_durable calls that had batches to
        #: make durable (each fsyncs every log), and how many of those found the
        #: directory changed and fsynced it too.
        self.barriers = 0
        self.dir_syncs = 0
        self._lock = RWLock()
        # What lease and history reads see, as of the last batch LevelDB took
        # (see the module docstring); both under _views.
        self._views = threading.Lock()
        self._history = History(0)
        self._leases: dict[int, Lease] = {}  # in id order (ids are granted in order)
        self._failed: BaseException | None = None
        self._refused: _Refused | None = None  # the last batch, refused for lack of space
        self._closed = False
        self._floor = 0  # the history floor on disk
        self._generation = self._open_current()
        self._db = open_db(self._db_path(self._generation), create=False, **self._db_options)
        self._new_names = NewNames(self._db_path(self._generation))
        try:
            self._upgrade()
            self._load()
            self._check_batches()
        except BaseException:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"LevelDBStateMachine({str(self._path)!r})"

    # -- files -------------------------------------------------------------------

    def _db_path(self, generation: int) -> Path:
        return self._path / f"db-{generation:06d}"

    def _where(self) -> str:
        return f"LevelDB state machine {self._db_path(self._generation)}"

    def _open_current(self) -> int:
        """The generation CURRENT names, after removing leftovers; creates a fresh one."""
        current = self._path / _CURRENT
        found = sorted(p.name for p in self._path.iterdir() if _NAME.fullmatch(p.name))
        if not current.exists():
            if found:
                self._discard_aborted_first_open(found)
            self._create(1)
            self._write_current(1)
            return 1
        text = current.read_bytes()
        match = _NAME.fullmatch(text.decode("ascii", "replace").rstrip("\n"))
        if match is None or not text.endswith(b"\n"):
            raise CorruptionError(f"{current}: unreadable ({text[:40]!r})")
        name = match.group(0)
        if name not in found:
            raise CorruptionError(f"{current} names {name}, which does not exist")
        for leftover in found:
            if leftover != name:  # an interrupted restore, before or after its switch
                shutil.rmtree(self._path / leftover)
        return int(match.group(1))

    def _discard_aborted_first_open(self, found: list[str]) -> None:
        """CURRENT is written last at creation: without it, only an empty db may go."""
        where = f"LevelDB state machine {self._path}"
        if found != ["db-000001"]:
            raise CorruptionError(f"{where}: CURRENT is missing, and {found} exist")
        db = open_db(self._db_path(1), create=False)
        try:
            with leveldb_errors(where):
                raw = db.get(STATE)
                info = _EMPTY if raw is None else decode_info(raw)
                has_data = next(db.iterator(prefix=DATA, include_value=False), None)
        finally:
            db.close()
        if info.index or has_data is not None:
            raise CorruptionError(
                f"{where}: CURRENT is missing, but db-000001 holds state at index {info.index}"
            )
        shutil.rmtree(self._db_path(1))

    def _create(self, generation: int) -> None:
        path = self._db_path(generation)
        db = open_db(path, create=True, error_if_exists=True)
        try:
            with db.write_batch(sync=True) as batch:
                batch.put(FORMAT_KEY, FORMAT)
                batch.put(STATE, encode_info(_EMPTY))
                batch.put(FLOOR, encode_floor(0))
                batch.put(VERIFIED, INDEX.pack(0))
        finally:
            db.close()
        fsync_tree(path)

    def _write_current(self, generation: int) -> None:
        """Point CURRENT at ``generation``: the atomic switch of a restore."""
        tmp = self._path / (_CURRENT + ".tmp")
        with open(tmp, "wb") as f:
            f.write(f"db-{generation:06d}\n".encode("ascii"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path / _CURRENT)
        fsync_dir(self._path)

    def _upgrade(self) -> None:
        """Make a format-1 database (before leases and the watch history) a format-2
        one: it holds no leases and no history, so its floor is its applied index
        (a watcher asking for anything before it is told it is compacted). One
        synced batch, so a crash leaves it either format."""
        where = self._where()
        db = self._db
        with leveldb_errors(where):
            if db.get(FORMAT_KEY) != FORMAT_1:
                return  # format 2 already, or not ours: _load says which
            raw = db.get(STATE)
            if raw is None:
                raise CorruptionError(f"{where}: the state record is missing")
            try:
                info = decode_info(raw)
            except CorruptionError as exc:
                raise CorruptionError(f"{where}: {exc}") from None
            with db.write_batch(sync=True) as batch:
                batch.put(FLOOR, encode_floor(info.index))
                batch.put(FORMAT_KEY, FORMAT)
        _log.warning(
            "%s: upgraded from format %s to %s (no leases, and no watch history before index %d)",
            where,
            FORMAT_1.decode(),
            FORMAT.decode(),
            info.index,
        )

    def _load(self) -> None:
        """Read the applied state, sessions, leases and history; reset the Applier to them."""
        where = self._where()
        db = self._db
        with leveldb_errors(where):
            marker = db.get(FORMAT_KEY)
            if marker != FORMAT:
                raise CorruptionError(
                    unknown_format(where, marker, (FORMAT_1, FORMAT), "state machine")
                )
            raw = db.get(STATE)
            if raw is None:
                raise CorruptionError(f"{where}: the state record is missing")
            try:
                info = decode_info(raw)
                sessions = [
                    decode_session(value)
                    for value in db.iterator(
                        prefix=SESSION, include_key=False, verify_checksums=True
                    )
                ]
            except CorruptionError as exc:
                raise CorruptionError(f"{where}: {exc}") from None
            floor = decode_floor(db.get(FLOOR, verify_checksums=True), where)
            if floor > info.index:
                raise CorruptionError(
                    f"{where}: the history floor {floor} is above the applied index {info.index}"
                )
            leases = read_leases(db.iterator(prefix=LEASE, verify_checksums=True), where)
            history = read_history(
                db.iterator(prefix=CHANGE, verify_checksums=True), floor, info.index, where
            )
        try:
            applier = self._new_applier(info, sessions, leases, history, floor)
        except ValueError as exc:
            raise CorruptionError(f"{where}: {exc}") from None
        self._install(applier, info, history, floor)

    def _check_batches(self) -> None:
        """At open: check that the state is a prefix of the batches written (see
        :mod:`raftdb_leveldb._layout`), then start a new chain from it.

        Opening replays LevelDB's log into a table it fsyncs: what the database
        holds now is durable, so the marks are deleted and ``m/verified`` is the
        applied index, in one synced write. With ``sync`` off nothing is promised
        and nothing is checked.

        Raises:
            CorruptionError: a batch is missing below a later one that is there
                (a power cut lost it), or below the point ``m/verified`` says
                was durable.
        """
        index = self._info.index
        if not self._sync:
            self._durable = index
            return
        where = self._where()
        db = self._db
        with leveldb_errors(where):
            raw = db.get(VERIFIED, verify_checksums=True)
            marks = {
                _index(key[len(MARK) :], where): _index(value, where)
                for key, value in db.iterator(prefix=MARK, verify_checksums=True)
            }
        verified = None if raw is None else _index(raw, where)
        if verified is not None and index < verified:
            raise CorruptionError(
                f"{where}: the state is at index {index}, before {verified}, up to which "
                "every batch was durable: durable batches were lost"
            )
        # Without a mark for the last batch, the last writer did not mark its batches
        # (an earlier raftdb, which made each durable before the next; or sync off,
        # which promises nothing).
        if verified is not None and index in marks:
            at = index
            while at > verified:
                first = marks.get(at)
                if first is None:
                    raise CorruptionError(
                        f"{where}: the batch that ends at index {at} is missing, but later "
                        f"ones up to {index} are there (a power cut kept them and lost it): "
                        "the state is not the log's up to any index. Move this data "
                        "directory away and add the node again (it catches up from the "
                        "cluster), or restore a backup"
                    )
                at = first - 1
            if at != verified:
                raise CorruptionError(
                    f"{where}: a batch starts at {at + 1}, inside the batch that ends at "
                    f"{verified} (m/verified)"
                )
        with leveldb_errors(where), db.write_batch(sync=True) as batch:
            for last in marks:
                batch.delete(MARK + INDEX.pack(last))
            batch.put(VERIFIED, INDEX.pack(index))
        self._durable = index

    def _new_applier(
        self,
        info: SnapshotInfo,
        sessions: list[SessionState],
        leases: list[Lease],
        history: list[Change],
        floor: int,
    ) -> Applier:
        """An Applier in a state read from disk or a snapshot.

        Raises:
            ValueError: the leases or the history are inconsistent (the Applier checks).
        """
        applier = Applier(**self._options)
        applier.reset(
            info.index,
            info.term,
            info.conf_state,
            info.members,
            sessions,
            leases=leases,
            history=history,
            history_floor=floor,
        )
        return applier

    def _install(
        self, applier: Applier, info: SnapshotInfo, history: list[Change], floor: int
    ) -> None:
        """Make ``applier`` (from :meth:`_new_applier`) the state: for applies
        and for the readers' copy of leases and history."""
        view = History(applier.history.limit, history, floor)
        leases = {lease.id: lease for lease in applier.leases()}
        self._applier, self._info, self._floor = applier, info, floor
        with self._views:
            self._history, self._leases = view, leases

    def _check(self) -> None:
        if self._closed:
            raise UsageError("the state machine is closed")
        if self._failed is not None:
            raise StorageError(f"the state machine failed earlier: {self._failed!r}")

    def _db_for_reads(self) -> Any:
        """The database handle, or ENOSPC if reopening it after a refused batch
        closed it and ran out of space (the next ``apply`` opens it)."""
        db = self._db
        if db is None:
            raise OSError(
                errno.ENOSPC,
                f"{self._where()}: {os.strerror(errno.ENOSPC)} (reopening the database failed)",
            )
        return db

    def _recover(self, entries: Sequence[Entry]) -> list[ApplyResult] | None:
        """Before applying after a batch refused for lack of space: reopen the
        database and reload the applied state from it (see the module docstring).

        Returns:
            The results of the refused batch if it reached the disk after all
            and ``entries`` is that batch; ``None``: apply ``entries`` now.

        Raises:
            OSError: ENOSPC, still no room (nothing changed; reads go on).
            StorageError: the database is at neither end of the refused batch.
        """
        refused = self._refused
        assert refused is not None
        with self._lock.write():
            self._check()
            self._reopen_and_load()
            self._refused = None
            index = self._info.index
            if index == refused.before:
                return None
            if index == refused.last and entries and entries[-1].index == refused.last:
                return refused.results
            self._failed = StorageError(
                f"{self._where()}: after a batch refused for lack of space the state is at "
                f"{index}, neither before it ({refused.before}) nor after it ({refused.last})"
            )
            raise self._failed

    def _reopen_and_load(self) -> None:
        """Reopen the database after LevelDB refused a write for lack of space, and
        reload the applied state from it. Under the write lock.

        Opening replays LevelDB's log into a table, which it fsyncs, and a manifest
        it fsyncs (then ``open_db`` fsyncs the directory): what the database holds
        after this is durable.

        Raises:
            OSError: ENOSPC, still no room (nothing changed; reads go on).
        """
        path = self._db_path(self._generation)
        try:
            with leveldb_errors(self._where):
                try:
                    self._db = reopen(self._db, path, **self._db_options)
                except OSError:
                    if self._db is not None and self._db.closed:
                        self._db = None
                    raise
                self._load()
        except BaseException as exc:
            if not (isinstance(exc, OSError) and is_no_space(exc)):
                self._failed = exc
            raise

    def _sync_batches(self) -> None:
        """Make every batch written so far durable: fsync every log LevelDB has
        (one a rotation closed without an fsync, and the current one), then the
        directory if it changed (a new log's name). With the read lock held (or
        the write lock), from any thread: applies go on meanwhile, into what
        this does not cover.

        No LevelDB write: LevelDB would hold every apply behind its fsync. The
        point it reached is recorded by the next batch instead (``m/verified``,
        and the marks below it deleted), without sync: until that batch is on
        disk the older record and marks stand, which say less, never more.

        Raises:
            OSError: an fsync failed. Linux may have dropped the pages it could not
                write, so nothing written before can be trusted to be on disk: the
                state machine is failed, and the node replays from its log after a
                restart.
        """
        if not self._sync:
            return
        with self._marks_mu:
            index, taking = self._info.index, self._marks
            self._marks = []
        if not taking:
            return  # nothing written since the last time
        db_path = self._db_path(self._generation)
        try:
            fsync_logs(db_path)
            if self._new_names.after_write():
                self.dir_syncs += 1
        except BaseException as exc:
            self._failed = exc
            raise
        with self._marks_mu:
            if self._clean is not None:  # not written yet: this one says more
                taking = self._clean[1] + taking
            self._clean = (max(index, self._durable), taking)
            self._durable = max(index, self._durable)
        self.barriers += 1

    # -- apply -------------------------------------------------------------------------

    def make_durable(self) -> None:
        """Make every applied batch durable; at once if it is already.

        The node calls it on a thread of its own, while batches apply on the
        apply thread: at most every ``state_sync_interval_ms`` while it
        applies, before a restore and at close (see the module docstring). It
        covers every batch whose ``apply`` returned before the call. With
        ``sync`` off it does nothing (nothing is promised across a power loss).

        Raises:
            OSError: an fsync failed: the state machine is failed, as for a
                failed ``apply`` (see :meth:`_sync_batches`).
            StorageError: the state machine failed earlier.
        """
        with self._lock.read():
            self._check()
            self._sync_batches()

    @property
    def applied_index(self) -> int:
        return self._info.index

    @property
    def durable_index(self) -> int:
        return self._durable

    def apply(self, entries: Sequence[Entry]) -> list[ApplyResult]:
        if self._refused is not None:
            landed = self._recover(entries)
            if landed is not None:
                return landed
        with self._lock.read():  # shared: only restore, close and _recover are exclusive
            self._check()
            if len(self._marks) >= MAX_UNSYNCED_BATCHES:
                self._sync_batches()  # a caller that never calls make_durable: bound the chain
            where = self._where  # named only when something fails: a path costs µs per batch
            batch = self._db.write_batch()
            backend = BatchBackend(self._db, batch, where)
            a = self._applier
            before = a.applied_index
            out = None
            clean = None
            try:
                with leveldb_errors(where):
                    out = a.apply(entries, backend)
                    if a.applied_index == before:
                        return out.results  # nothing new (all already applied, or empty)
                    for client_id, session in out.sessions.items():
                        if session is None:
                            batch.delete(SESSION + client_id)
                        else:
                            batch.put(SESSION + client_id, encode_session(session))
                    stage_leases_and_history(batch, out, before, self._floor)
                    members = dict(a.members) if out.membership_changed else self._info.members
                    info = SnapshotInfo(a.applied_index, a.applied_term, a.conf_state, members)
                    batch.put(STATE, encode_info(info))
                    if self._sync:
                        batch.put(MARK + INDEX.pack(info.index), INDEX.pack(before + 1))
                        with self._marks_mu:
                            clean, self._clean = self._clean, None
                        if clean is not None:  # what the last make_durable reached
                            verified, covered = clean
                            for last in covered:
                                batch.delete(MARK + INDEX.pack(last))
                            batch.put(VERIFIED, INDEX.pack(verified))
                    batch.write()
            except UsageError:
                raise  # refused before anything changed
            except OSError as exc:
                self._give_back(clean)
                if not is_no_space(exc):
                    self._failed = exc
                    raise
                # Not applied; the Applier's memory is ahead: the next apply
                # reopens and reloads first (see the module docstring).
                results = out.results if out is not None else None
                self._refused = _Refused(before, a.applied_index, results, exc)
                raise
            except BaseException as exc:
                # The Applier's memory is ahead of the disk now: refuse all further use.
                self._failed = exc
                raise
            with self._marks_mu:  # make_durable reads the two together
                self._info = info
                if self._sync:
                    self._marks.append(info.index)
            self._floor = out.history_floor
            self._publish(out)
            return out.results

    def _give_back(self, clean: tuple[int, list[int]] | None) -> None:
        """A batch that was to write ``clean`` was refused: the next one writes it."""
        if clean is None:
            return
        with self._marks_mu:
            if self._clean is not None:  # a make_durable since: it reached further
                clean = (self._clean[0], clean[1] + self._clean[1])
            self._clean = clean

    def _publish(self, out: AppliedBatch) -> None:
        """Show readers the leases and history of a batch LevelDB has taken."""
        with self._views:
            if out.changes or out.history_floor != self._history.floor:
                self._history.advance(out.changes, out.history_floor)
            if out.leases:
                view = self._leases
                for lease_id, lease in out.leases.items():
                    if lease is None:
                        view.pop(lease_id, None)
                    else:
                        view[lease_id] = lease

    # -- reads -------------------------------------------------------------------------

    def get(self, key: bytes) -> KeyValue | None:
        with self._lock.read():
            self._check()
            with leveldb_errors(self._where):
                raw = self._db_for_reads().get(DATA + key, verify_checksums=True)
            if raw is None:
                return None
            if len(raw) < REC.size:
                data_record(raw, key, self._where())  # raises, naming the database
            create, mod = REC.unpack_from(raw)
            return KeyValue(key, raw[REC.size :], create, mod)

    def range(
        self,
        prefix: bytes = b"",
        start: bytes = b"",
        limit: int | None = None,
        *,
        values: bool = True,
        max_bytes: int | None = None,
    ) -> list[KeyValue]:
        check_range_args(limit, max_bytes)
        if limit == 0:
            return []
        budget = -1 if max_bytes is None else max_bytes  # -1: unbounded
        end = prefix_end(prefix)
        lo = DATA + max(prefix, start)
        hi = DATA_END if end is None else DATA + end
        out: list[KeyValue] = []
        with self._lock.read():
            self._check()
            where = self._where()
            with leveldb_errors(where):
                # One iterator: LevelDB gives it an implicit snapshot, so the
                # result is one consistent view even while applies go on.
                rows = self._db_for_reads().iterator(start=lo, stop=hi, verify_checksums=True)
                for raw_key, raw in rows:
                    key = raw_key[1:]
                    create, mod = data_record(raw, key, where)
                    value = raw[REC.size :] if values else b""
                    out.append(KeyValue(key, value, create, mod))
                    if len(out) == limit:
                        break
                    if budget >= 0:
                        budget -= len(key) + len(value)
                        if budget <= 0:
                            break
        return out

    def conf_state(self) -> ConfState:
        return self._info.conf_state

    def members(self) -> dict[int, str]:
        return dict(self._info.members)

    def history(self, after: int, limit: int) -> tuple[int, list[Change]]:
        with self._lock.read():
            self._check()
            with self._views:
                return self._history.page(after, limit)

    def lease(self, lease_id: int) -> Lease | None:
        with self._lock.read():
            self._check()
            with self._views:
                return self._leases.get(lease_id)

    def leases(self) -> list[Lease]:
        with self._lock.read():
            self._check()
            with self._views:
                return list(self._leases.values())

    # -- snapshot ------------------------------------------------------------------------

    def snapshot(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> SnapshotStream:
        with self._lock.read():
            self._check()
            where = self._where()
            generation = self._generation
            with leveldb_errors(where):
                view = self._db_for_reads().snapshot()
                # A durable point to hand out: the driver may compact the log up
                # to it. As make_durable: every log (the current one, and any a
                # rotation closed unsynced), then their names; no synced LevelDB
                # write, which would hold the applies behind its fsync.
                db_path = self._db_path(generation)
                fsync_logs(db_path)
                fsync_dir(db_path)
                raw = view.get(STATE)
                raw_floor = view.get(FLOOR, verify_checksums=True)
        if raw is None:
            raise CorruptionError(f"{where}: the state record is missing")
        info = decode_info(raw)
        floor = decode_floor(raw_floor, where)

        def scan(prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
            iterator = None
            while True:
                with self._lock.read():
                    if self._generation != generation or self._closed:
                        raise SnapshotAbortedError(
                            f"{where} was restored or closed while its snapshot was read"
                        )
                    with leveldb_errors(where):
                        if iterator is None:
                            iterator = view.iterator(
                                prefix=prefix, fill_cache=False, verify_checksums=True
                            )
                        items: list[tuple[bytes, bytes]] = list(islice(iterator, _SLICE))
                yield from items
                if len(items) < _SLICE:
                    return

        def records() -> Iterator[KVRecord]:
            for raw_key, raw in scan(DATA):
                key = raw_key[1:]
                create, mod = data_record(raw, key, where)
                yield key, raw[REC.size :], create, mod

        def sessions() -> Iterator[SessionState]:
            for _, raw in scan(SESSION):
                yield decode_session(raw)

        # From the same view as the keys: the leases and history of info.index.
        def leases() -> Iterator[Lease]:
            for _, raw in scan(LEASE):
                yield decode_lease(raw)

        def history() -> Iterator[Change]:
            for raw_key, raw in scan(CHANGE):
                yield decode_change_record(raw_key, raw)

        def release() -> None:
            with self._lock.read():
                if self._generation == generation and not self._closed:
                    view.close()

        chunks = encode_stream(
            info,
            records(),
            sessions(),
            chunk_size,
            leases=leases(),
            history=history(),
            history_floor=floor,
        )
        return SnapshotStream(info, chunks, release)

    def restore(self, chunks: Iterable[bytes]) -> SnapshotInfo:
        self._check()
        reader = SnapshotReader(chunks)
        generation = self._generation + 1
        path = self._db_path(generation)
        if path.exists():
            shutil.rmtree(path)
        db = open_db(path, create=True, error_if_exists=True, **self._db_options)
        try:
            sessions: list[SessionState] = []
            leases: list[Lease] = []
            history: list[Change] = []
            with leveldb_errors(f"LevelDB state machine {path}"):
                for kv_batch in reader.kv_batches():
                    with db.write_batch() as batch:
                        for key, value, create, mod in kv_batch:
                            batch.put(DATA + key, REC.pack(create, mod) + value)
                for session_batch in reader.session_batches():
                    with db.write_batch() as batch:
                        for session in session_batch:
                            batch.put(SESSION + session.client_id, encode_session(session))
                    sessions.extend(session_batch)
                for lease_batch in reader.lease_batches():
                    with db.write_batch() as batch:
                        for lease in lease_batch:
                            batch.put(lease_key(lease.id), encode_lease(lease))
                    leases.extend(lease_batch)
                key_of = HistoryKeys()  # one count of positions across the batches
                for history_batch in reader.history_batches():
                    with db.write_batch() as batch:
                        for change in history_batch:
                            batch.put(key_of(change), encode_change_record(change))
                    history.extend(history_batch)
                reader.finish()
                # A format-1 stream has no history: its floor is its index.
                floor = reader.history_floor
                try:
                    applier = self._new_applier(reader.info, sessions, leases, history, floor)
                except ValueError as exc:  # the reader checks most of it; a backstop
                    raise SnapshotFormatError(
                        f"the snapshot's state is inconsistent: {exc}"
                    ) from None
                with db.write_batch(sync=True) as batch:
                    batch.put(FORMAT_KEY, FORMAT)
                    batch.put(STATE, encode_info(reader.info))
                    batch.put(FLOOR, encode_floor(floor))
                    batch.put(VERIFIED, INDEX.pack(reader.info.index))
            db.close()
            fsync_tree(path)
            db = open_db(path, create=False, **self._db_options)
        except BaseException:
            db.close()
            shutil.rmtree(path, ignore_errors=True)
            raise
        info = reader.info
        with self._lock.write():
            old_db, old_path = self._db, self._db_path(self._generation)
            try:
                self._write_current(generation)  # the switch
            except BaseException:
                db.close()
                shutil.rmtree(path, ignore_errors=True)
                raise
            self._db, self._generation = db, generation
            self._new_names = NewNames(self._db_path(generation))
            self._install(applier, info, history, floor)
            self._refused = None  # the new state replaces what a refused batch left behind
            with self._marks_mu:  # the restored database is durable
                self._marks, self._clean = [], None
                self._durable = info.index
            if old_db is not None:
                old_db.close()
        shutil.rmtree(old_path, ignore_errors=True)
        return info

    def close(self) -> None:
        """Close the database, after making the last batch durable (LevelDB's own
        close fsyncs nothing). If that fails, the batch is left to the log's replay."""
        with self._lock.write():
            if self._closed:
                return
            if self._marks and self._failed is None and self._db is not None:
                try:
                    self._sync_batches()
                except Exception as exc:  # closing anyway; the node replays the batch
                    _log.warning("%s: the last batch was not made durable: %s", self._where(), exc)
            self._closed = True
            if self._db is not None:
                self._db.close()

    # -- inspection (tests) ----------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The directory the state machine owns."""
        return self._path

    @property
    def db_path(self) -> Path:
        """The LevelDB directory in use now."""
        return self._db_path(self._generation)
