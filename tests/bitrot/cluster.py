"""Helpers of the bit-rot tests on real clusters: damage in place, listings, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.harness import ProcessCluster

__all__ = ["cli", "flip_in_place", "listing"]


def flip_in_place(directory: Path, pattern: str, value: bytes) -> Path:
    """Flip one bit in the middle of ``value`` (random bytes) in the first file under
    ``directory`` matching ``pattern`` that holds it; returns the file.

    The byte is written in place (``pwrite``), never by rewriting the file: a
    running LevelDB maps its tables, and a file truncated under it would fault
    the process instead of showing it a damaged block. Only the middle half of
    the value is looked for (see ``tests.chaos.test_disk._damage``: a table's
    compression may take in its first or last bytes).
    """
    quarter = len(value) // 4
    needle = value[quarter:-quarter]
    for path in sorted(directory.rglob(pattern)):
        at = path.read_bytes().find(needle)
        if at >= 0:
            fd = os.open(path, os.O_RDWR)
            try:
                offset = at + len(needle) // 2
                (old,) = os.pread(fd, 1, offset)
                os.pwrite(fd, bytes([old ^ 0x10]), offset)
                os.fsync(fd)
            finally:
                os.close(fd)
            return path
    raise AssertionError(f"no {pattern} file under {directory} holds {needle!r}")


def listing(c: ProcessCluster, node_id: int) -> list[dict[str, Any]]:
    """Every key of node ``node_id`` with its value and indexes, from its own state machine."""
    url: str | None = "/v1/kv?prefix=&values=true&consistency=stale&limit=10000"
    out: list[dict[str, Any]] = []
    while url is not None:
        r = c.client.get(c.url(node_id, url), timeout=10.0)
        r.raise_for_status()
        out.extend(r.json())
        link = r.links.get("next")
        url = link["url"] if link else None
    return out


def cli(*args: str) -> str:
    """Run ``raftdb ARGS`` (the real command line) and return its output; it must succeed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTDB_")}
    done = subprocess.run(
        [sys.executable, "-m", "raftdb.cli", *args], capture_output=True, timeout=60, env=env
    )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, f"raftdb {' '.join(args)}: exit {done.returncode}: {output}"
    return output
