"""``raftdb lock NAME -- COMMAND...``: run a command while holding a lock, as
``etcdctl lock NAME COMMAND`` does.

The lock is taken for a lease of ``--ttl`` seconds that a thread renews every
TTL/3 (:class:`LeaseKeeper`). The command runs with ``RAFTDB_LOCK_KEY`` (the
holder's key), ``RAFTDB_LOCK_FENCE`` (the fencing token: guard every write made
under the lock with it, docs/api.md "Locks and fencing") and ``RAFTDB_LOCK_LEASE``
in its environment. When it exits, the lock is released and the lease revoked,
and ``raftdb lock`` exits with the command's status (128 + N when a signal N
ended it, as a shell reports it).

If the lease is lost while the command runs — found gone, or not renewed for a
whole TTL, after which the cluster may have expired it and let another holder in —
the command is sent SIGTERM, then SIGKILL after ``--kill-after`` seconds, and
``raftdb lock`` exits 1 with a line saying so. A lock cannot stop a command that
already wrote after the lease ended: that is what the fence is for.

Ctrl-C ends the command the same way (SIGTERM, then SIGKILL), releases the lock
and exits 130; a SIGTERM to ``raftdb lock`` is passed on to the command, whose
status it then exits with. Without a command it holds the lock until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Final

from raftdb.cli import common
from raftdb.cli.common import CommandError, Context, Exit
from raftdb.client import (
    Client,
    Lease,
    LeaseNotFoundError,
    LockNotHeldError,
    RaftdbError,
    RequestTimeoutError,
)

__all__ = ["DEFAULT_TTL", "KILL_AFTER", "LeaseKeeper", "register"]

#: The lock's lease TTL by default: a holder that dies frees the lock after this.
DEFAULT_TTL: Final = 15
#: Seconds between SIGTERM and SIGKILL when the command must end.
KILL_AFTER: Final = 10.0
#: Longest wait between two renewals after one failed (it is tried again soon).
_RETRY: Final = 1.0


class LeaseKeeper:
    """Renews a lease every TTL/3 in a thread until :meth:`stop`.

    ``lost`` is set (and ``on_lost`` called, from the thread) when the lease is
    found gone, or when no renewal succeeded for a whole TTL counted from the
    sending of the last one that did: the cluster may then have expired it.
    """

    def __init__(self, client: Client, lease: Lease, on_lost: Callable[[], None]) -> None:
        self.id = lease.id
        self.ttl = lease.ttl
        #: Why the lease is taken as lost, or ``None`` while it is held.
        self.lost: str | None = None
        self._client = client
        self._on_lost = on_lost
        self._valid_until = time.monotonic() + lease.ttl
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = max(0.2, self.ttl / 3)
        pause = interval
        last_error = "no renewal answered"
        while not self._stop.wait(max(0.0, min(pause, self._valid_until - time.monotonic()))):
            sent = time.monotonic()
            left = self._valid_until - sent
            if left <= 0:
                self._lose(f"not renewed for its TTL of {self.ttl}s ({last_error})")
                return
            try:
                self._client.lease_keepalive(self.id, timeout=max(0.1, min(interval, left)))
            except LeaseNotFoundError:
                self._lose("it ended (expired or revoked)")
                return
            except RaftdbError as e:
                last_error = " ".join(e.message.split())
                pause = _RETRY
                continue
            self._valid_until = sent + self.ttl
            pause = interval

    def _lose(self, why: str) -> None:
        self.lost = f"lease {self.id} {why}"
        self._on_lost()

    def stop(self) -> None:
        """Stop renewing (the thread has ended when this returns)."""
        self._stop.set()
        self._thread.join()


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``lock``."""
    p = commands.add_parser(
        "lock",
        help="run a command while holding a lock",
        description="Take the lock NAME, run COMMAND with RAFTDB_LOCK_KEY, RAFTDB_LOCK_FENCE "
        "and RAFTDB_LOCK_LEASE set, release the lock when it exits and exit with its status. "
        "Put -- before the command. Without a command: hold the lock until Ctrl-C.",
    )
    common.add_client_flags(p)
    p.add_argument("name", metavar="NAME", help="the lock's name (a key prefix)")
    p.add_argument("command", nargs="*", metavar="COMMAND", help="the command and its arguments")
    p.add_argument(
        "--ttl",
        type=int,
        default=DEFAULT_TTL,
        metavar="SECONDS",
        help=f"the lock's lease TTL: how soon a dead holder frees it (default {DEFAULT_TTL})",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the lock (default 60; the server caps it at 600)",
    )
    p.add_argument(
        "--kill-after",
        type=float,
        default=KILL_AFTER,
        metavar="SECONDS",
        help=f"SIGKILL the command this long after SIGTERM (default {KILL_AFTER:g})",
    )
    p.set_defaults(run=common.client_command(_lock))


def _lock(ctx: Context) -> Exit | int:
    args = ctx.args
    if args.ttl < 1 or args.wait < 0 or args.kill_after < 0:
        raise CommandError("--ttl must be ≥ 1, --wait and --kill-after ≥ 0", Exit.USAGE)
    name: str = args.name
    client = ctx.client
    wake = threading.Event()
    lease = client.lease_grant(args.ttl)
    keeper = LeaseKeeper(client, lease, wake.set)
    try:
        try:
            hold = client.lock_acquire(name, lease.id, wait=args.wait)
        except RequestTimeoutError:
            raise CommandError(f"lock {name!r} not acquired within {args.wait:g}s") from None
        env = {
            **os.environ,
            "RAFTDB_LOCK_KEY": hold.key.decode("utf-8", "surrogateescape"),
            "RAFTDB_LOCK_FENCE": str(hold.fence),
            "RAFTDB_LOCK_LEASE": str(lease.id),
        }
        if not args.command:
            return _hold(ctx, hold.key, hold.fence, keeper, wake)
        return _run_locked(ctx, args.command, env, keeper, wake, args.kill_after)
    finally:
        keeper.stop()
        _release(ctx, name, lease.id, args.ttl)


def _hold(ctx: Context, key: bytes, fence: int, keeper: LeaseKeeper, wake: threading.Event) -> Exit:
    """No command: hold the lock until Ctrl-C (130) or until the lease is lost (1)."""
    if ctx.out.json:
        ctx.out.data({"key": key.decode("utf-8", "backslashreplace"), "fence": fence})
    else:
        ctx.out.text(f"{key.decode('utf-8', 'backslashreplace')} fence {fence}")
    wake.wait()
    raise CommandError(f"lock lost: {keeper.lost}")


def _run_locked(
    ctx: Context,
    command: list[str],
    env: dict[str, str],
    keeper: LeaseKeeper,
    wake: threading.Event,
    kill_after: float,
) -> int:
    """Run ``command`` until it exits (its status) or the lease is lost (it is ended)."""
    try:
        proc = subprocess.Popen(command, env=env)
    except OSError as e:
        # A shell's statuses: 127 not found, 126 found but not runnable.
        ctx.out.note(f"raftdb: {command[0]}: {e.strerror or e}")
        return 127 if isinstance(e, FileNotFoundError) else 126

    def reap() -> None:
        proc.wait()
        wake.set()

    threading.Thread(target=reap, name="lock-command", daemon=True).start()
    with _passing_sigterm(proc):
        try:
            while True:
                wake.clear()  # before looking: a wake-up after the look is not lost
                if proc.poll() is not None or keeper.lost is not None:
                    break
                wake.wait()
        except BaseException:  # Ctrl-C (130), or anything else: never leave it running
            _end(proc, kill_after)
            raise
        code = proc.poll()
        if code is None:
            _end(proc, kill_after)
            raise CommandError(f"lock lost: {keeper.lost}; the command was ended")
    return code if code >= 0 else 128 - code


def _end(proc: subprocess.Popen[bytes], kill_after: float) -> None:
    """SIGTERM, then SIGKILL after ``kill_after`` seconds; reaped when this returns."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(kill_after)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


@contextlib.contextmanager
def _passing_sigterm(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """While the command runs, a SIGTERM to this process goes to it instead (then this
    process exits with its status, having released the lock)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _release(ctx: Context, name: str, lease_id: int, ttl: int) -> None:
    """Release the lock and revoke its lease; a failure is a note (the lease frees
    the lock within its TTL anyway)."""
    try:
        with contextlib.suppress(LockNotHeldError, LeaseNotFoundError):
            ctx.client.lock_release(name, lease_id)
        with contextlib.suppress(LeaseNotFoundError):
            ctx.client.lease_revoke(lease_id)
    except RaftdbError as e:
        ctx.out.note(
            f"raftdb: could not release lock {name!r} ({' '.join(e.message.split())}); "
            f"it is freed when lease {lease_id} expires, within {ttl}s"
        )
