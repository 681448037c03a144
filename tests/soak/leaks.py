"""After the run: nothing the soak started may outlive it.

Once the cluster is closed, :func:`leftovers` looks for

- processes: any node process the sampler saw that still exists, and any
  process whose command line names the run's directory (a node or helper
  started there and lost track of);
- ports: every API, peer and proxy port of the cluster must bind again on
  127.0.0.1 (a listener left behind holds it);
- mounts: no mount point under the run's directory (the power-cut fault's
  filesystem, once it is in the fault list, mounts there).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from pathlib import Path

__all__ = ["leftovers"]


def leftovers(root: Path, pids: Iterable[int], ports: Iterable[int]) -> list[str]:
    """What is left of a run under ``root``: one line per leak, empty when clean."""
    problems = []
    root_text = str(root.resolve())
    own = os.getpid()
    alive = {pid for pid in pids if _exists(pid)}
    for pid in sorted(alive):
        problems.append(f"node process {pid} is still running")
    for pid, cmdline in _processes():
        if pid != own and pid not in alive and root_text in cmdline:
            problems.append(f"process {pid} of the run is still running: {cmdline[:200]}")
    for port in sorted(set(ports)):
        if not _bindable(port):
            problems.append(f"port {port} is still taken")
    for mount in _mounts():
        if mount == root_text or mount.startswith(root_text + "/"):
            problems.append(f"{mount} is still mounted")
    return problems


def _exists(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie of ours is reaped by its Popen)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status


def _processes() -> list[tuple[int, str]]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            raw = (entry / "cmdline").read_bytes()
            if raw:
                out.append((int(entry.name), raw.replace(b"\0", b" ").decode(errors="replace")))
    return out


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _mounts() -> list[str]:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    # Field 5 is the mount point, with spaces and such escaped as octal.
    return [
        line.split()[4].encode().decode("unicode_escape") for line in lines if len(line.split()) > 4
    ]
