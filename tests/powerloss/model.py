"""The durability model of the power-loss filesystem: a page cache that a power cut empties.

Theory of operation. File contents live in the backing directory, one object file per
file (``objects/<id>``), and always hold what the processes *see* (every write lands
at once, so reads need no merging). What a power cut would keep is tracked beside
them, cheaply:

- **Data.** Each file knows its durable size (its size at its last ``fsync``) and an
  undo log: before a range below the durable size is first overwritten (by a write or
  a truncation) after an ``fsync``, the durable bytes of the pages it touches are
  saved. A cut writes the saved pages back and truncates the file to its durable size;
  an ``fsync`` (or ``fdatasync``) empties the log and moves the durable size.
- **Names.** The namespace is held here, in memory: every directory has its live
  entries (what lookups see) and its durable entries. In ``strict`` mode a create,
  mkdir, rename, unlink or rmdir changes only the live entries, and an ``fsync`` of the
  directory copies its live entries to its durable ones (POSIX promises no more: a
  name is durable once its directory was synced). In ``ordered`` mode every namespace
  operation is durable at once, in order, as on a journaling filesystem that commits
  its metadata before any later data (ext4 ``data=ordered`` without its delays): only
  un-synced data is lost. A failure only the strict mode shows is one that no common
  Linux filesystem would produce, which tells the two kinds apart.

A cut rebuilds the live namespace from the durable entries, starting at the root,
reverts the data of every file still reachable, and forgets the rest. An object file
is kept while a live or a durable entry names it, or a handle is open on it.

A file's size change by ``truncate`` is data, made durable by an ``fsync`` of the file
(as POSIX has it: the size is the inode's, and a directory sync does not cover it).

No FUSE here: :mod:`tests.powerloss.fs` maps the kernel's calls onto this class, and
the unit tests drive it directly too. Not thread-safe: the caller holds one lock.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["PAGE", "Dir", "File", "Mode", "Model", "Stats"]

#: Granularity of the undo log: the durable bytes of whole pages are saved.
PAGE = 4096

Mode = Literal["strict", "ordered"]

ROOT = 1


def _error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


@dataclass
class File:
    """A regular file: its object file and what of it is durable."""

    id: int
    mode: int
    durable_size: int = 0
    #: Page number → that page's durable bytes (clipped to ``durable_size``).
    saved: dict[int, bytes] = field(default_factory=dict)
    #: Live entries naming it (0 once unlinked).
    links: int = 0
    handles: int = 0


@dataclass
class Dir:
    """A directory, held in memory only."""

    id: int
    mode: int
    entries: dict[str, int] = field(default_factory=dict)
    durable: dict[str, int] = field(default_factory=dict)
    #: Moves with every change of its entries, as on a real filesystem (LevelDB's
    #: plugin watches it to know when to sync the directory).
    mtime_ns: int = field(default_factory=time.time_ns)


@dataclass
class Stats:
    """What the filesystem did, for the tests' figures."""

    fsyncs: int = 0
    dir_fsyncs: int = 0
    cuts: int = 0
    #: Bytes of data a cut threw away (file tails and overwritten pages restored).
    bytes_dropped: int = 0
    #: Names a cut reverted: entries added, removed or pointing elsewhere since their
    #: directory's last fsync.
    names_reverted: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Model:
    """The namespace and durability state over ``backing`` (see the module docstring)."""

    def __init__(self, backing: Path, mode: Mode = "strict") -> None:
        self.backing = backing
        self.mode: Mode = mode
        self.objects = backing / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        for stale in self.objects.iterdir():
            stale.unlink()
        self.nodes: dict[int, File | Dir] = {ROOT: Dir(ROOT, 0o755)}
        self._next = ROOT + 1
        self.stats = Stats()

    # -- lookups ---------------------------------------------------------------------

    def object_path(self, node: File) -> Path:
        return self.objects / str(node.id)

    def resolve(self, path: str) -> File | Dir:
        """The node ``path`` names now; ``ENOENT``/``ENOTDIR`` as the kernel expects."""
        node: File | Dir = self.nodes[ROOT]
        for part in _parts(path):
            if not isinstance(node, Dir):
                raise _error(errno.ENOTDIR)
            child = node.entries.get(part)
            if child is None:
                raise _error(errno.ENOENT)
            node = self.nodes[child]
        return node

    def parent(self, path: str) -> tuple[Dir, str]:
        parts = _parts(path)
        if not parts:
            raise _error(errno.EBUSY)
        where = self.resolve("/" + "/".join(parts[:-1]))
        if not isinstance(where, Dir):
            raise _error(errno.ENOTDIR)
        return where, parts[-1]

    def file(self, node_id: int) -> File:
        node = self.nodes.get(node_id)
        if not isinstance(node, File):
            raise _error(errno.EBADF)
        return node

    # -- namespace -------------------------------------------------------------------

    def _new_id(self) -> int:
        self._next += 1
        return self._next - 1

    def _changed(self, *dirs: Dir) -> None:
        now = time.time_ns()
        for d in dirs:
            d.mtime_ns = now
            if self.mode == "ordered":
                d.durable = dict(d.entries)

    def create(self, path: str, mode: int) -> File:
        """A new empty file at ``path`` (its object file exists, empty)."""
        where, name = self.parent(path)
        if name in where.entries:
            raise _error(errno.EEXIST)
        node = File(self._new_id(), mode & 0o7777, links=1)
        self.object_path(node).touch()
        self.nodes[node.id] = node
        where.entries[name] = node.id
        self._changed(where)
        return node

    def mkdir(self, path: str, mode: int) -> Dir:
        where, name = self.parent(path)
        if name in where.entries:
            raise _error(errno.EEXIST)
        node = Dir(self._new_id(), mode & 0o7777)
        self.nodes[node.id] = node
        where.entries[name] = node.id
        self._changed(where)
        return node

    def unlink(self, path: str) -> None:
        where, name = self.parent(path)
        node = self.resolve(path)
        if isinstance(node, Dir):
            raise _error(errno.EISDIR)
        del where.entries[name]
        node.links -= 1
        self._changed(where)
        self._collect(node)

    def rmdir(self, path: str) -> None:
        where, name = self.parent(path)
        node = self.resolve(path)
        if not isinstance(node, Dir):
            raise _error(errno.ENOTDIR)
        if node.entries:
            raise _error(errno.ENOTEMPTY)
        del where.entries[name]
        self._changed(where)

    def rename(self, old: str, new: str) -> None:
        src_dir, src_name = self.parent(old)
        node = self.resolve(old)
        dst_dir, dst_name = self.parent(new)
        replaced_id = dst_dir.entries.get(dst_name)
        if replaced_id == node.id:
            return
        replaced = self.nodes[replaced_id] if replaced_id is not None else None
        if isinstance(node, Dir):
            if replaced is not None and not isinstance(replaced, Dir):
                raise _error(errno.ENOTDIR)
            if replaced is not None and replaced.entries:
                raise _error(errno.ENOTEMPTY)
            if self._inside(dst_dir, node):
                raise _error(errno.EINVAL)
        elif isinstance(replaced, Dir):
            raise _error(errno.EISDIR)
        del src_dir.entries[src_name]
        dst_dir.entries[dst_name] = node.id
        self._changed(src_dir, dst_dir)
        if isinstance(replaced, File):
            replaced.links -= 1
            self._collect(replaced)

    def _inside(self, where: Dir, node: Dir) -> bool:
        """Whether ``where`` is ``node`` or below it (a rename into itself)."""
        if where.id == node.id:
            return True
        children = (self.nodes[c] for c in node.entries.values())
        return any(isinstance(c, Dir) and self._inside(where, c) for c in children)

    def sync_dir(self, node: Dir) -> None:
        """fsync of a directory: its present entries become its durable ones."""
        self.stats.dir_fsyncs += 1
        node.durable = dict(node.entries)

    # -- data ------------------------------------------------------------------------

    def before_change(self, node: File, fd: int, start: int, end: int) -> None:
        """Save the durable bytes of the pages in ``[start, end)`` not saved yet; call
        before overwriting or cutting away that range of the object file."""
        end = min(end, node.durable_size)
        if start >= end:
            return
        for page in range(start // PAGE, (end - 1) // PAGE + 1):
            if page not in node.saved:
                length = min(PAGE, node.durable_size - page * PAGE)
                node.saved[page] = os.pread(fd, length, page * PAGE)

    def write(self, node: File, fd: int, data: bytes, offset: int) -> int:
        self.before_change(node, fd, offset, offset + len(data))
        return os.pwrite(fd, data, offset)

    def truncate(self, node: File, fd: int, length: int) -> None:
        size = os.fstat(fd).st_size
        if length < size:
            self.before_change(node, fd, length, size)
        os.ftruncate(fd, length)

    def sync_file(self, node: File, fd: int) -> None:
        """fsync of a file: what it holds now is what a cut keeps."""
        self.stats.fsyncs += 1
        node.durable_size = os.fstat(fd).st_size
        node.saved.clear()

    def sync_all(self) -> None:
        """Everything durable as it is now (a clean unmount would get there)."""
        for node in self.nodes.values():
            if isinstance(node, Dir):
                node.durable = dict(node.entries)
            elif self.object_path(node).exists():
                node.durable_size = self.object_path(node).stat().st_size
                node.saved.clear()

    # -- the power cut ---------------------------------------------------------------

    def cut(self) -> dict[str, int]:
        """Drop everything not durable. The processes that used the files must be gone
        (every handle is forgotten). Returns what this cut dropped."""
        before = Stats(**self.stats.as_dict())
        self.stats.cuts += 1
        reachable: set[int] = set()
        stack = [ROOT]
        while stack:
            node = self.nodes[stack.pop()]
            reachable.add(node.id)
            if isinstance(node, Dir):
                changed = set(node.entries.items()) ^ set(node.durable.items())
                self.stats.names_reverted += len({name for name, _ in changed})
                if changed:
                    node.mtime_ns = time.time_ns()
                node.entries = dict(node.durable)
                stack.extend(c for c in node.entries.values() if c not in reachable)
        for node_id, node in list(self.nodes.items()):
            if node_id not in reachable:
                del self.nodes[node_id]
                if isinstance(node, File):
                    self.object_path(node).unlink(missing_ok=True)
                continue
            if isinstance(node, File):
                node.handles = 0
                node.links = sum(
                    1
                    for d in self._dirs()
                    for c in d.entries.values()
                    if c == node_id  # hard links are not offered: at most one
                )
                self._revert(node)
        return {
            "bytes_dropped": self.stats.bytes_dropped - before.bytes_dropped,
            "names_reverted": self.stats.names_reverted - before.names_reverted,
        }

    def _revert(self, node: File) -> None:
        fd = os.open(self.object_path(node), os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            dropped = max(0, size - node.durable_size)
            for page, data in sorted(node.saved.items()):
                os.pwrite(fd, data, page * PAGE)
                dropped += len(data)
            os.ftruncate(fd, node.durable_size)
            os.fsync(fd)
        finally:
            os.close(fd)
        node.saved.clear()
        self.stats.bytes_dropped += dropped

    def _dirs(self) -> Iterator[Dir]:
        return (n for n in self.nodes.values() if isinstance(n, Dir))

    def _collect(self, node: File) -> None:
        """Forget a file no live entry, durable entry or handle names any more."""
        if node.links > 0 or node.handles > 0:
            return
        if any(node.id in d.durable.values() for d in self._dirs()):
            return
        del self.nodes[node.id]
        self.object_path(node).unlink(missing_ok=True)

    def opened(self, node: File) -> None:
        node.handles += 1

    def released(self, node: File) -> None:
        node.handles = max(0, node.handles - 1)
        if node.id in self.nodes:
            self._collect(node)

    def kind(self, node: File | Dir) -> int:
        return stat.S_IFDIR if isinstance(node, Dir) else stat.S_IFREG


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]
