"""Opening LevelDB databases and making directories durable, with clear errors.

Shared by the LevelDB storage and state machine. Every failure to open names
the directory and says whether the data is damaged (:class:`CorruptionError`,
the node must not start) or could not be reached (``OSError``: permissions,
another process holding the lock).

A full disk. LevelDB reports a write it could not make for lack of space as
an I/O error whose text is ``strerror(ENOSPC)``; :func:`leveldb_errors` makes
it an ``OSError`` with that errno, the one failure a node survives
(:mod:`raftdb.storage.nospace`). The batch was not applied (LevelDB adds a
batch to its memtable only once its log record is written), but LevelDB
keeps the error and refuses every later write: :func:`reopen` closes and
opens the database again, which replays its log (the records written whole;
a record torn by the full disk is dropped as at a crash) and clears it.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import plyvel

from raftdb.storage import CorruptionError, free_bytes, no_space_error
from raftdb_leveldb._logcheck import check_db_files

__all__ = [
    "NewNames",
    "fsync_dir",
    "fsync_logs",
    "fsync_tree",
    "leveldb_errors",
    "open_db",
    "reopen",
]

# A directory's mtime this recent may still move within its clock tick (a few ms
# on common filesystems): it is not trusted to show the next change.
_FRESH_NS = 100_000_000

# Room kept beyond LevelDB's own files before a reopen is tried: its new log,
# manifest and info log, a few pages each.
_REOPEN_MARGIN = 64 << 10


@contextmanager
def leveldb_errors(where: str | Callable[[], str]) -> Iterator[None]:
    """Turn plyvel's exceptions into raftdb's, naming ``where``.

    ``where`` may be a callable, so that a hot read path builds the name only
    when something fails.
    """
    try:
        yield
    except plyvel.CorruptionError as exc:
        raise CorruptionError(f"{_name(where)}: LevelDB reports corruption: {exc}") from exc
    except plyvel.IOError as exc:
        text = _text(exc)
        full = no_space_error(f"{_name(where)}: LevelDB", text)
        if full is not None:
            raise full from exc
        raise OSError(f"{_name(where)}: LevelDB I/O error: {text}") from exc
    except plyvel.Error as exc:
        raise CorruptionError(f"{_name(where)}: LevelDB error: {exc}") from exc


def _name(where: str | Callable[[], str]) -> str:
    return where if isinstance(where, str) else where()


def _text(exc: BaseException) -> str:
    """plyvel's message, which comes as ``bytes``."""
    arg = exc.args[0] if exc.args else ""
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)


def reopen(db: Any, path: Path, **options: Any) -> Any:
    """Close ``db`` (the database in ``path``) and open it again, after a write it
    refused for lack of space, so that it takes writes again.

    Opening replays LevelDB's log into a new table and writes a new manifest,
    which needs about the log's size on disk. While the filesystem has less
    free, this raises at once and leaves ``db`` open: it still serves reads
    (LevelDB keeps no error for reads), which a closed database would not.

    Returns:
        The reopened database (``db`` is closed then).

    Raises:
        OSError: ENOSPC: not enough room yet (``db`` is still open), or the
            open itself ran out of space (``db`` is closed: there was room,
            by the check, and someone else took it; the next call opens it).
        CorruptionError: the database is damaged.
    """
    needed = _REOPEN_MARGIN + sum(
        f.stat().st_size
        for f in path.iterdir()
        if f.suffix == ".log" or f.name.startswith("MANIFEST")
    )
    free = free_bytes(path)
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"{path}: LevelDB: {os.strerror(errno.ENOSPC)} "
            f"(reopening needs about {needed} bytes, {free} free)",
        )
    if db is not None:
        db.close()
    return open_db(path, create=False, **options)


def open_db(path: Path, *, create: bool = True, **options: Any) -> Any:
    """Open the LevelDB database in ``path`` with checks on.

    ``paranoid_checks`` makes LevelDB refuse to open on a damaged log or
    manifest instead of skipping what it cannot read, which would silently
    lose writes from the middle of the history; :mod:`raftdb_leveldb._logcheck`
    first catches the one damage LevelDB reads as a crash's torn tail.

    Raises:
        CorruptionError: the database is damaged or not a LevelDB database.
        OSError: it cannot be opened (permissions, locked by another process).
    """
    if path.is_dir():
        damage = check_db_files(path)  # what LevelDB would read as a torn tail
        if damage is not None:
            raise CorruptionError(f"LevelDB database {path}: {damage}")
    with leveldb_errors(f"LevelDB database {path}"):
        db = plyvel.DB(
            str(path),
            create_if_missing=create,
            paranoid_checks=True,
            **options,
        )
    try:
        # LevelDB renames a new CURRENT into place at every open (and, creating a
        # database, writes its first MANIFEST without an fsync) and does not sync the
        # directory after: a power cut could leave CURRENT naming that empty MANIFEST.
        fsync_dir(path)
    except BaseException:
        db.close()
        raise
    return db


class NewNames:
    """Make the names LevelDB adds to its directory durable before a write returns.

    LevelDB makes a new log file when its memtable is full, inside a write, and writes
    to it with ``sync`` at once; the file's *name* becomes durable only with its next
    MANIFEST sync, in a background compaction. A power cut in between loses the new
    log with every synced write in it (POSIX: a name is durable once its directory is
    fsynced). :meth:`after_write` fsyncs the directory when its mtime moved since it
    last did (a ``stat`` per write; an fsync only after a change).
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._seen: int | None = None

    def after_write(self, *, logs: bool = False) -> bool:
        """Call after a synced write, before it is acknowledged; whether the
        directory (may have) changed, and was synced.

        Args:
            logs: also fsync every log file when the directory changed (:func:`fsync_logs`):
                for writes made without ``sync`` before this synced one, which a log
                rotation since the last call may have left in a log LevelDB closed
                without an fsync.
        """
        mtime = os.stat(self._path).st_mtime_ns
        if mtime == self._seen:
            return False
        if logs:
            fsync_logs(self._path)
        fsync_dir(self._path)
        self._seen = mtime if time.time_ns() - mtime > _FRESH_NS else None
        return True


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that the names created in it survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_logs(path: Path) -> int:
    """fsync every LevelDB log file (``*.log``) in ``path``; returns how many.

    When its memtable is full, LevelDB starts a new log inside a write and closes
    the old one without an fsync; a synced write after that fsyncs the new log
    only. The old log's records become durable once its memtable is in a synced
    table named by a synced manifest, and only then does LevelDB delete the log
    (``CompactMemTable``, then ``RemoveObsoleteFiles``). So a log that is gone
    needs nothing, and fsyncing those still there makes every write made so far
    durable. A log deleted between the listing and its fsync was in that state.
    """
    count = 0
    with os.scandir(path) as entries:
        names = [entry.name for entry in entries if entry.name.endswith(".log")]
    for name in names:
        try:
            fd = os.open(path / name, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        count += 1
    return count


def fsync_tree(path: Path) -> None:
    """fsync every file in ``path`` and the directory itself.

    Used on a restored database before switching to it: LevelDB does not
    fsync a log file it has rotated away from, so a final ``sync=True`` write
    alone would not make the whole restore durable.
    """
    for child in sorted(path.iterdir()):
        if child.is_file():
            fd = os.open(child, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(path)
