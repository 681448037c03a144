"""The power-loss filesystem: FUSE over a backing directory, with a page cache a cut empties.

Run as its own process, one per node under test::

    python -m tests.powerloss.fs BACKING MOUNT --control SOCKET [--mode strict|ordered]

It serves ``MOUNT`` in the foreground (libfuse 3 through ``mfusepy``) until
``fusermount3 -u MOUNT``. What is durable and what a cut drops is
:mod:`tests.powerloss.model`'s business; this module maps the kernel's calls onto it
and answers the control socket, one JSON object a line each way:

- ``{"op": "cut"}``: the power cut. Everything not made durable is dropped; answers
  what was dropped. The processes that used the mount must be dead and reaped by then:
  a process blocked in a request the daemon has read cannot die before it is answered,
  so once it is reaped none of its writes can still arrive.
- ``{"op": "stats"}``: the counters since the start (fsyncs, cuts, bytes dropped...).
- ``{"op": "sync"}``: make everything durable as it is (a clean shutdown's state).

The kernel must not cache what a cut may change: entries, attributes and negative
lookups time out at once, and no open keeps the page cache (libfuse's default), so
the first open after a cut reads the reverted bytes. Requests are served one at a
time (``-s``); the control socket's thread takes the same lock.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

import mfusepy

from tests.powerloss.model import Dir, File, Model

__all__ = ["PowerLossFS", "main"]


class _FUSE(mfusepy.FUSE):  # type: ignore[misc]
    """mfusepy drops the file handle of ``ftruncate`` under libfuse 3; pass it on, so a
    file unlinked while open can still be truncated."""

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        fh = fip.contents.fh if fip else None
        name = None if path is None else path.decode(self.encoding, self.errors)
        result: int = self.operations.truncate(name, length, fh)
        return result


class PowerLossFS(mfusepy.Operations):  # type: ignore[misc]
    """The FUSE operations; every one under ``self._mutex`` (not ``lock``: that name is
    FUSE's POSIX-lock operation, left to the kernel)."""

    use_ns = True

    def __init__(self, model: Model) -> None:
        self.model = model
        self._mutex = threading.Lock()
        #: Open file handle → (node id, fd on its object file).
        self.handles: dict[int, tuple[int, int]] = {}
        #: Open directory handle → node id.
        self.dir_handles: dict[int, int] = {}
        self._next_fh = 1
        self.started = time.time_ns()

    def init_with_config(self, conn_info: Any, config_3: Any) -> None:
        if config_3:
            cfg = getattr(config_3, "contents", config_3)
            cfg.entry_timeout = 0.0
            cfg.attr_timeout = 0.0
            cfg.negative_timeout = 0.0
            # The namespace is the model's: unlinking an open file forgets the name at
            # once, and calls on its handle come without a path.
            cfg.hard_remove = 1
            cfg.nullpath_ok = 1

    # -- helpers ---------------------------------------------------------------------

    def _fh(self) -> int:
        self._next_fh += 1
        return self._next_fh - 1

    def _handle(self, fh: int) -> tuple[File, int]:
        try:
            node_id, fd = self.handles[fh]
        except KeyError:
            raise mfusepy.FuseOSError(errno.EBADF) from None
        return self.model.file(node_id), fd

    def _node(self, path: str) -> File | Dir:
        try:
            return self.model.resolve(path)
        except OSError as exc:
            raise mfusepy.FuseOSError(exc.errno or errno.EIO) from None

    def _open_fd(self, node: File) -> int:
        fh = self._fh()
        fd = os.open(self.model.object_path(node), os.O_RDWR)
        self.handles[fh] = (node.id, fd)
        self.model.opened(node)
        return fh

    def _call(self, fn: Any, *args: Any) -> Any:
        with self._mutex:
            try:
                return fn(*args)
            except mfusepy.FuseOSError:
                raise
            except OSError as exc:
                raise mfusepy.FuseOSError(exc.errno or errno.EIO) from None

    # -- attributes ------------------------------------------------------------------

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        with self._mutex:
            if fh is not None and fh in self.handles:
                node: File | Dir = self.model.file(self.handles[fh][0])
            elif path is None:
                raise mfusepy.FuseOSError(errno.EBADF)
            else:
                node = self._node(path)
            now = self.started
            attrs: dict[str, Any] = {
                "st_mode": self.model.kind(node) | node.mode,
                "st_nlink": 2 if isinstance(node, Dir) else max(1, node.links),
                "st_uid": os.getuid(),
                "st_gid": os.getgid(),
                "st_ino": node.id,
                "st_atime": now,
                "st_mtime": now,
                "st_ctime": now,
                "st_size": 0,
            }
            if isinstance(node, Dir):
                attrs.update(st_mtime=node.mtime_ns, st_ctime=node.mtime_ns)
            else:
                st = os.stat(self.model.object_path(node))
                attrs.update(
                    st_size=st.st_size,
                    st_mtime=st.st_mtime_ns,
                    st_atime=st.st_atime_ns,
                    st_ctime=st.st_ctime_ns,
                    st_blocks=st.st_blocks,
                )
            return attrs

    def chmod(self, path: str | None, mode: int) -> int:
        if path is not None:
            with self._mutex:
                self._node(path).mode = mode & 0o7777
        return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        return 0

    def utimens(self, path: str | None, times: Any = None) -> int:
        return 0

    def access(self, path: str, amode: int) -> int:
        with self._mutex:
            self._node(path)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.model.backing)
        keys = ("bsize", "frsize", "blocks", "bfree", "bavail", "files", "ffree", "namemax")
        return {f"f_{k}": getattr(st, f"f_{k}") for k in keys}

    # -- namespace -------------------------------------------------------------------

    def opendir(self, path: str) -> int:
        with self._mutex:
            node = self._node(path)
            if not isinstance(node, Dir):
                raise mfusepy.FuseOSError(errno.ENOTDIR)
            fh = self._fh()
            self.dir_handles[fh] = node.id
            return fh

    def releasedir(self, path: str | None, fh: int) -> int:
        with self._mutex:
            self.dir_handles.pop(fh, None)
        return 0

    def readdir(self, path: str | None, fh: int) -> list[str]:
        with self._mutex:
            node = self.model.nodes.get(self.dir_handles.get(fh, -1))
            if node is None and path is not None:
                node = self._node(path)
            if not isinstance(node, Dir):
                raise mfusepy.FuseOSError(errno.EBADF)
            return [".", "..", *sorted(node.entries)]

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        with self._mutex:
            node = self.model.nodes.get(self.dir_handles.get(fh, -1))
            if node is None and path is not None:
                node = self._node(path)
            if not isinstance(node, Dir):
                raise mfusepy.FuseOSError(errno.EBADF)
            self.model.sync_dir(node)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        self._call(self.model.mkdir, path, mode)
        return 0

    def rmdir(self, path: str) -> int:
        self._call(self.model.rmdir, path)
        return 0

    def unlink(self, path: str) -> int:
        self._call(self.model.unlink, path)
        return 0

    def rename(self, old: str, new: str) -> int:
        self._call(self.model.rename, old, new)
        return 0

    def link(self, target: str, source: str) -> int:
        raise mfusepy.FuseOSError(errno.EPERM)

    def symlink(self, target: str, source: str) -> int:
        raise mfusepy.FuseOSError(errno.EPERM)

    # -- files -----------------------------------------------------------------------

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        def make() -> int:
            return self._open_fd(self.model.create(path, mode))

        fh: int = self._call(make)
        return fh

    def open(self, path: str, flags: int) -> int:
        def do() -> int:
            node = self._node(path)
            if not isinstance(node, File):
                raise mfusepy.FuseOSError(errno.EISDIR)
            fh = self._open_fd(node)
            if flags & os.O_TRUNC:
                self.model.truncate(node, self.handles[fh][1], 0)
            return fh

        fh: int = self._call(do)
        return fh

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        def do() -> bytes:
            return os.pread(self._handle(fh)[1], size, offset)

        data: bytes = self._call(do)
        return data

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        def do() -> int:
            node, fd = self._handle(fh)
            return self.model.write(node, fd, data, offset)

        written: int = self._call(do)
        return written

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        def do() -> None:
            if fh is not None and fh in self.handles:
                node, fd = self._handle(fh)
                self.model.truncate(node, fd, length)
                return
            if path is None:
                raise mfusepy.FuseOSError(errno.EBADF)
            named = self._node(path)
            if not isinstance(named, File):
                raise mfusepy.FuseOSError(errno.EISDIR)
            fd = os.open(self.model.object_path(named), os.O_RDWR)
            try:
                self.model.truncate(named, fd, length)
            finally:
                os.close(fd)

        self._call(do)
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        def do() -> None:
            node, fd = self._handle(fh)
            self.model.sync_file(node, fd)

        self._call(do)
        return 0

    def flush(self, path: str | None, fh: int) -> int:
        return 0

    def release(self, path: str | None, fh: int) -> int:
        with self._mutex:
            entry = self.handles.pop(fh, None)
            if entry is not None:
                node_id, fd = entry
                os.close(fd)
                node = self.model.nodes.get(node_id)
                if isinstance(node, File):
                    self.model.released(node)
        return 0

    # -- control ---------------------------------------------------------------------

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """One control request (see the module docstring)."""
        op = request.get("op")
        with self._mutex:
            if op == "cut":
                for _, fd in self.handles.values():
                    os.close(fd)
                self.handles.clear()
                self.dir_handles.clear()
                return {"ok": True, "dropped": self.model.cut()}
            if op == "stats":
                return {"ok": True, "stats": self.model.stats.as_dict(), "mode": self.model.mode}
            if op == "sync":
                self.model.sync_all()
                return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}


def serve_control(fs: PowerLossFS, path: Path) -> threading.Thread:
    """Answer the control socket at ``path`` on a daemon thread."""
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)

    def loop() -> None:
        while True:
            conn, _ = server.accept()
            with conn, conn.makefile("rwb") as stream:
                for line in stream:
                    try:
                        answer = fs.control(json.loads(line))
                    except Exception as exc:  # the test sees it; the fs stays up
                        answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                    stream.write(json.dumps(answer).encode() + b"\n")
                    stream.flush()

    thread = threading.Thread(target=loop, name="powerloss-control", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.powerloss.fs", description=__doc__)
    parser.add_argument("backing", type=Path, help="directory holding the object files")
    parser.add_argument("mount", type=Path, help="empty directory to mount on")
    parser.add_argument("--control", type=Path, required=True, help="control socket path")
    parser.add_argument("--mode", choices=("strict", "ordered"), default="strict")
    args = parser.parse_args(argv)
    fs = PowerLossFS(Model(args.backing, args.mode))
    serve_control(fs, args.control)
    if not stat.S_ISDIR(os.stat(args.mount).st_mode):
        print(f"powerloss fs: {args.mount} is not a directory", file=sys.stderr)
        return 2
    _FUSE(fs, str(args.mount), foreground=True, nothreads=True, fsname="powerloss")
    return 0


if __name__ == "__main__":
    sys.exit(main())
