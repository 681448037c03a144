"""``raftdb snapshot save`` and ``raftdb snapshot status``: take a backup, and check one.

``save FILE`` asks a member for a consistent snapshot (``GET /v1/snapshot``:
every write acknowledged before the command started is in it) and writes the
answer's body, byte for byte, to ``FILE.part``; it fsyncs it, reads it back
and checks every frame and the END counts (:class:`raftdb.kv.snapshot.SnapshotReader`,
as a restore will), and only then renames it to ``FILE`` (and fsyncs the
directory), so that a file named ``FILE`` is always a whole, checked
snapshot. A failed or interrupted save leaves no ``FILE`` and removes its
``.part``. An existing ``FILE`` is kept unless ``--overwrite`` is given.

``status FILE`` needs no cluster: it reads and checks the file as ``save``
does and prints what it holds. A damaged file is exit status 1 and one line
saying what is wrong.

The file is the stream exactly (nothing added), so its ``sha256`` is the
checksum of the backup as the node sent it: ``save`` prints it, ``status``
prints it again for comparison, and ``raftdb snapshot restore`` derives the
new cluster's identity from it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from raftdb.cli import common
from raftdb.cli.common import CommandError, Context, Exit, Output
from raftdb.kv.snapshot import SnapshotFormatError, SnapshotInfo, SnapshotReader

__all__ = ["SnapshotReport", "inspect_file", "register_snapshot"]

#: Bytes read from a snapshot file at a time.
_READ_SIZE: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class SnapshotReport:
    """What a whole, checked snapshot file holds."""

    info: SnapshotInfo
    format: int
    keys: int
    sessions: int
    leases: int
    changes: int
    size: int
    sha256: str

    def members(self) -> list[dict[str, Any]]:
        """The members as the API lists them (``id``, ``peer_url``, ``learner``)."""
        learners = set(self.info.conf_state.learners)
        return [
            {"id": node_id, "peer_url": url, "learner": node_id in learners}
            for node_id, url in sorted(self.info.members.items())
        ]

    def record(self) -> dict[str, Any]:
        """The report as one JSON object."""
        return {
            "index": self.info.index,
            "term": self.info.term,
            "members": self.members(),
            "keys": self.keys,
            "leases": self.leases,
            "sessions": self.sessions,
            "changes": self.changes,
            "bytes": self.size,
            "sha256": self.sha256,
            "format": self.format,
        }


def inspect_file(path: Path, advance: Callable[[float], None] | None = None) -> SnapshotReport:
    """Read the snapshot file ``path`` whole and check it (every frame's CRC, the order
    of the records, the END counts, nothing after the end).

    Args:
        advance: called with the bytes read, as they are read (a progress bar).

    Raises:
        SnapshotFormatError: the file is damaged, truncated, or not a snapshot.
        OSError: it cannot be read.
    """
    digest = hashlib.sha256()
    size = 0

    with path.open("rb") as f:

        def chunks() -> Iterator[bytes]:
            nonlocal size
            while chunk := f.read(_READ_SIZE):
                digest.update(chunk)
                size += len(chunk)
                if advance is not None:
                    advance(len(chunk))
                yield chunk

        reader = SnapshotReader(chunks())
        keys = sum(len(batch) for batch in reader.kv_batches())
        sessions = sum(len(batch) for batch in reader.session_batches())
        leases = sum(len(batch) for batch in reader.lease_batches())
        changes = sum(len(batch) for batch in reader.history_batches())
        reader.finish()
    return SnapshotReport(
        reader.info, reader.format, keys, sessions, leases, changes, size, digest.hexdigest()
    )


def _checked(path: Path, out: Output, *, shown: str) -> SnapshotReport:
    """:func:`inspect_file` with a progress bar; a damaged file is a one-line failure."""
    try:
        total = path.stat().st_size
    except FileNotFoundError:
        raise CommandError(f"{shown}: no such file") from None
    try:
        with out.progress(f"checking {path.name}", total, bytes_=True) as advance:
            return inspect_file(path, advance)
    except SnapshotFormatError as e:
        raise CommandError(f"{shown}: not a whole snapshot: {e}") from None
    except IsADirectoryError:
        raise CommandError(f"{shown}: is a directory, not a snapshot file") from None


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _save(ctx: Context) -> Exit:
    """``raftdb snapshot save FILE``."""
    target = Path(ctx.args.file)
    if target.is_dir():
        raise CommandError(f"{target}: is a directory; give the snapshot file's name", Exit.USAGE)
    if target.exists() and not ctx.args.overwrite:
        raise CommandError(
            f"{target} exists already: give another name, or --overwrite to replace it",
            Exit.USAGE,
        )
    part = target.with_name(target.name + ".part")
    out = ctx.out
    try:
        with part.open("wb") as f:
            with out.progress(f"saving {target.name}", None, bytes_=True) as advance:
                saved = ctx.client.snapshot(f, progress=lambda n: advance(n))
            f.flush()
            os.fsync(f.fileno())
        report = _checked(part, out, shown=str(part))
        if (report.info.index, report.info.term) != (saved.index, saved.term):
            raise CommandError(
                f"{part}: the stream says index {report.info.index} term {report.info.term}, "
                f"but {saved.endpoint} announced index {saved.index} term {saved.term}"
            )
        if report.sha256 != saved.sha256:
            raise CommandError(f"{part}: what was read back differs from what was received")
        part.replace(target)
        _fsync_dir(target.parent)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    record = {"file": str(target), **report.record(), "endpoint": saved.endpoint}
    if out.json:
        out.data(record)
        return Exit.OK
    out.table(
        ["index", "term", "keys", "bytes", "sha256"],
        [[report.info.index, report.info.term, report.keys, report.size, report.sha256]],
    )
    out.note(f"saved {target} (from {saved.endpoint})")
    return Exit.OK


def _status(args: argparse.Namespace) -> int:
    """``raftdb snapshot status FILE``: offline, one line and status 1 for a damaged file."""
    mode = getattr(args, "output", None) or os.environ.get("RAFTDB_OUTPUT") or "table"
    if mode not in ("table", "json"):
        print(f"raftdb: RAFTDB_OUTPUT: must be table or json, got {mode!r}", file=sys.stderr)
        return int(Exit.USAGE)
    out = Output("json" if mode == "json" else "table")
    path = Path(args.file)
    try:
        report = _checked(path, out, shown=str(path))
    except CommandError as e:
        print(f"raftdb: {e.message}", file=sys.stderr)
        return int(e.status)
    except OSError as e:
        print(f"raftdb: {path}: {e.strerror or e}", file=sys.stderr)
        return int(Exit.FAILED)
    except KeyboardInterrupt:
        return 130
    if out.json:
        out.data(report.record())
        return int(Exit.OK)
    members = ", ".join(
        f"{m['id']}={m['peer_url']}" + (" (learner)" if m["learner"] else "")
        for m in report.members()
    )
    rows = [
        ("index", report.info.index),
        ("term", report.info.term),
        ("members", members),
        ("keys", report.keys),
        ("leases", report.leases),
        ("sessions", report.sessions),
        ("history changes", report.changes),
        ("bytes", report.size),
        ("sha256", report.sha256),
    ]
    out.table(["field", "value"], rows, title=str(path))
    return int(Exit.OK)


def register_snapshot(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``save`` and ``status`` to ``raftdb snapshot``."""
    save = commands.add_parser(
        "save",
        help="save a consistent snapshot of the cluster's state to a file (admin)",
        description="Save a consistent snapshot of the whole state (every write acknowledged "
        "before the command started is in it) to FILE: written to FILE.part, fsynced, "
        "checked frame by frame, then renamed to FILE. Prints its index, term, keys, "
        "size and sha256. Needs an admin token when the cluster has tokens.",
    )
    common.add_client_flags(save)
    save.add_argument("file", metavar="FILE", help="where to write the snapshot")
    save.add_argument(
        "--overwrite", action="store_true", help="replace FILE if it exists (default: refuse)"
    )
    save.set_defaults(run=common.client_command(_save))

    status = commands.add_parser(
        "status",
        help="check a snapshot file and show what it holds (offline)",
        description="Read and check a snapshot file (every frame's checksum and the end "
        "counts) without a cluster, and print its index, term, members, keys, leases, "
        "sessions, history changes, size and sha256. Exit status 1 for a damaged file.",
    )
    status.add_argument("file", metavar="FILE", help="the snapshot file")
    status.add_argument(
        "-w",
        "--output",
        choices=["table", "json"],
        default=argparse.SUPPRESS,
        help="table (the default) or json [RAFTDB_OUTPUT]",
    )
    status.set_defaults(run=_status)
