"""Owning one power-loss filesystem from a test: start it, cut it, always unmount it.

:class:`PowerLossMount` starts ``python -m tests.powerloss.fs`` as a child process,
waits (with a deadline) until the kernel shows the mount, talks to its control socket,
and unmounts it in :meth:`close` — ``fusermount3 -u``, then a lazy unmount and SIGKILL
of the daemon if that does not work in time — whatever happened before.

:func:`fuse_available` says whether this machine can mount at all (``/dev/fuse``,
``fusermount3``, libfuse 3 and ``mfusepy``); under ``CI=true`` a test that needs it
fails instead of skipping (``.ci/run`` installs Debian's ``fuse3``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pytest

__all__ = ["PowerLossMount", "fuse_available", "require_fuse"]

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Longest the daemon may take to mount, or to go away after an unmount.
MOUNT_TIMEOUT = 15.0


def fuse_available() -> str | None:
    """``None`` if FUSE mounts can be made here, else why not."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "no fusermount3 (Debian package fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: libfuse3 missing
        return f"mfusepy cannot load libfuse 3: {exc}"
    return None


def require_fuse() -> None:
    """Skip the calling test without FUSE; fail under ``CI=true``."""
    why = fuse_available()
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"power-loss tests need FUSE: {why}")
    pytest.skip(f"power-loss tests need FUSE: {why}")


class PowerLossMount:
    """One mounted power-loss filesystem (see the module docstring)."""

    def __init__(
        self, root: Path, name: str = "fs", mode: Literal["strict", "ordered"] = "strict"
    ) -> None:
        self.root = root
        self.backing = root / f"{name}.backing"
        self.path = root / name
        self.control_path = root / f"{name}.sock"
        self.log_path = root / f"{name}.log"
        self.mode = mode
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PowerLossMount:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        self.backing.mkdir(parents=True, exist_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-W",
                    "ignore::DeprecationWarning",
                    "-m",
                    "tests.powerloss.fs",
                    str(self.backing),
                    str(self.path),
                    "--control",
                    str(self.control_path),
                    "--mode",
                    self.mode,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own session: a Ctrl-C of the test's process group must not stop
                # the daemon (unmounting under running nodes) before close() runs.
                start_new_session=True,
            )
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not (os.path.ismount(self.path) and self.control_path.exists()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the power-loss fs did not mount {self.path}: {self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-4000:]
        return ""

    def request(self, op: str) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30.0)
            s.connect(str(self.control_path))
            s.sendall(json.dumps({"op": op}).encode() + b"\n")
            with s.makefile("rb") as f:
                answer: dict[str, Any] = json.loads(f.readline())
        if not answer.get("ok"):
            raise RuntimeError(f"power-loss fs {op}: {answer.get('error')}")
        return answer

    def cut(self) -> dict[str, int]:
        """The power cut: drop everything not durable. Every process using the mount
        must be dead and reaped."""
        dropped: dict[str, int] = self.request("cut")["dropped"]
        return dropped

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = self.request("stats")["stats"]
        return stats

    def close(self) -> None:
        """Unmount and stop the daemon, by force if need be. Idempotent."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if os.path.ismount(self.path):
            subprocess.run(
                ["fusermount3", "-u", str(self.path)], capture_output=True, timeout=10, check=False
            )
        try:
            proc.wait(timeout=MOUNT_TIMEOUT)
        except subprocess.TimeoutExpired:
            subprocess.run(
                ["fusermount3", "-uz", str(self.path)], capture_output=True, timeout=10, check=False
            )
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=MOUNT_TIMEOUT)
        if os.path.ismount(self.path):
            subprocess.run(
                ["umount", "-l", str(self.path)], capture_output=True, timeout=10, check=False
            )
