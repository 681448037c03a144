"""Opening LevelDB databases and making directories durable, with clear errors.

Shared by the LevelDB storage and state machine. Every failure to open names
the directory and says whether the data is damaged (:class:`CorruptionError`,
the node must not start) or could not be reached (``OSError``: permissions,
another process holding the lock).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import plyvel

from raftdb.storage import CorruptionError

__all__ = ["fsync_dir", "fsync_tree", "leveldb_errors", "open_db"]


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
        raise OSError(f"{_name(where)}: LevelDB I/O error: {exc}") from exc
    except plyvel.Error as exc:
        raise CorruptionError(f"{_name(where)}: LevelDB error: {exc}") from exc


def _name(where: str | Callable[[], str]) -> str:
    return where if isinstance(where, str) else where()


def open_db(path: Path, *, create: bool = True, **options: Any) -> Any:
    """Open the LevelDB database in ``path`` with checks on.

    ``paranoid_checks`` makes LevelDB refuse to open on a damaged log or
    manifest instead of skipping what it cannot read, which would silently
    lose writes from the middle of the history.

    Raises:
        CorruptionError: the database is damaged or not a LevelDB database.
        OSError: it cannot be opened (permissions, locked by another process).
    """
    with leveldb_errors(f"LevelDB database {path}"):
        return plyvel.DB(
            str(path),
            create_if_missing=create,
            paranoid_checks=True,
            **options,
        )


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that the names created in it survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
