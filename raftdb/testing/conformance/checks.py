"""What the conformance checks share: the check registry, the context, assertions.

A *check* is a function of a :class:`CheckContext`; a plugin passes it if the
function returns. Checks are registered in a suite (``STORAGE_CHECKS``,
``STATE_MACHINE_CHECKS``) so a test runner can run each as its own test, and
``check_storage``/``check_state_machine`` can run them all in one call.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import unittest
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from raftdb.plugins import plugin_reference

__all__ = [
    "FILLER_LEAVES",
    "Check",
    "CheckContext",
    "ConformanceError",
    "expect",
    "expect_equal",
    "expect_raises",
    "run_checks",
    "small_filesystem",
]

#: Bytes :func:`fill` leaves free on a :func:`small_filesystem`.
FILLER_LEAVES = 256 << 10


class ConformanceError(AssertionError):
    """A plugin broke a promise of its interface; the message says which."""


def expect(condition: bool, message: str) -> None:
    """Fail with ``message`` unless ``condition``."""
    if not condition:
        raise ConformanceError(message)


def expect_equal(found: Any, want: Any, what: str) -> None:
    """Fail unless ``found == want``, showing both."""
    if found != want:
        raise ConformanceError(f"{what}: found {found!r}, want {want!r}")


@contextlib.contextmanager
def expect_raises(kind: type[BaseException], what: str) -> Iterator[None]:
    """Fail unless the block raises ``kind`` (``what`` names the call)."""
    try:
        yield
    except kind:
        return
    except Exception as exc:
        raise ConformanceError(
            f"{what}: raised {type(exc).__name__}({exc}), want {kind.__name__}"
        ) from exc
    raise ConformanceError(f"{what}: returned, want {kind.__name__}")


@dataclass
class CheckContext:
    """What a check gets: the plugin's factory and a directory of its own.

    Attributes:
        make: the plugin factory, called as ``make(path)`` (or with the
            keyword arguments a check passes to :meth:`open`).
        directory: an empty directory for this check.
        reference: ``"module:attr"`` or an entry-point name that a child
            process can load the factory by (crash checks), or ``None``.
        opened: everything :meth:`open` made, closed by :meth:`close_all`.
    """

    make: Callable[..., Any]
    directory: Path
    reference: str | None = None
    opened: list[Any] = field(default_factory=list)

    def path(self, name: str = "db") -> Path:
        """A path in the check's directory."""
        return self.directory / name

    def open(self, name: str = "db", **options: Any) -> Any:
        """A plugin instance over ``path(name)``; closed at the end of the check.

        ``options`` are keyword arguments of the plugin's constructor that its
        interface promises (a state machine's ``watch_history``, say).
        """
        instance = self.make(self.path(name), **options)
        self.opened.append(instance)
        return instance

    def reopen(self, instance: Any, name: str = "db", **options: Any) -> Any:
        """Close ``instance`` and open the same path again (with ``options``)."""
        self.close(instance)
        return self.open(name, **options)

    def close(self, instance: Any) -> None:
        """Close one instance (once)."""
        if instance in self.opened:
            self.opened.remove(instance)
            instance.close()

    def close_all(self) -> None:
        """Close whatever the check left open (after a failure, say)."""
        while self.opened:
            with contextlib.suppress(Exception):
                self.opened.pop().close()

    def on_small_filesystem(self, run: Callable[[CheckContext, Path], None]) -> None:
        """``run(self, mount)`` with a :func:`small_filesystem` mounted in the check's
        directory; whatever ``run`` opened is closed before the unmount."""
        with small_filesystem(self.path("small")) as small:
            try:
                run(self, small)
            finally:
                self.close_all()

    def require_reference(self) -> str:
        """The reference for a child process, or a clear failure."""
        reference = self.reference or plugin_reference(self.make)
        if reference is None:
            raise ConformanceError(
                "crash checks rebuild the plugin in a child process: pass the plugin's "
                "entry-point name or 'module:attr' as reference=, or a module-level "
                f"factory (got {self.make!r})"
            )
        return reference


@dataclass(frozen=True)
class Check:
    """One conformance check.

    Attributes:
        name: short id (the function name without ``check_``).
        run: the check.
        durable: it needs state to survive close/reopen and kill -9; it is
            skipped for plugins declared volatile (``memory``).
    """

    name: str
    run: Callable[[CheckContext], None]
    durable: bool = False

    def __call__(
        self,
        make: Callable[[Path], Any],
        directory: Path,
        reference: str | None = None,
    ) -> None:
        """Run the check in ``directory`` (which should be empty)."""
        directory.mkdir(parents=True, exist_ok=True)
        context = CheckContext(make, directory, reference)
        try:
            self.run(context)
        finally:
            context.close_all()


@contextlib.contextmanager
def small_filesystem(path: Path, size: int = 16 << 20) -> Iterator[Path]:
    """A fresh tmpfs of ``size`` bytes mounted on ``path``, for the full-disk checks:
    a real ``ENOSPC`` from the kernel, no injection. Unmounted at the end.

    Raises:
        unittest.SkipTest: not root, or mounting is not permitted here (pytest
            reports a skip; :func:`run_checks` goes on with the next check).
    """
    if os.geteuid() != 0:
        raise unittest.SkipTest("the full-disk checks mount a small tmpfs: they need root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        timeout=30,
    )
    if done.returncode != 0:
        raise unittest.SkipTest(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(path: Path) -> Path:
    """A filler file on the filesystem of ``path`` that leaves :data:`FILLER_LEAVES`
    bytes free; delete it to give the space back."""
    st = os.statvfs(path)
    left = max(0, st.f_bavail * st.f_frsize - FILLER_LEAVES)
    filler = path / "filler"
    with filler.open("wb") as f:
        while left > 0:
            left -= f.write(b"\0" * min(left, 1 << 20))
    return filler


CheckFunction = Callable[[CheckContext], None]


class Register(Protocol):
    """The decorator :func:`registry` returns: ``@register(durable=...)``."""

    def __call__(self, *, durable: bool = False) -> Callable[[CheckFunction], CheckFunction]: ...


def registry(suite: list[Check]) -> Register:
    """A decorator ``@register(durable=False)`` that adds a check to ``suite``."""

    def register(*, durable: bool = False) -> Callable[[CheckFunction], CheckFunction]:
        def add(func: CheckFunction) -> CheckFunction:
            suite.append(Check(func.__name__.removeprefix("check_"), func, durable))
            return func

        return add

    return register


def run_checks(
    suite: list[Check],
    make: Callable[[Path], Any],
    *,
    durable: bool,
    directory: Path | None,
    reference: str | None,
) -> None:
    """Run every check of ``suite`` (the durable ones only if ``durable``).

    Raises:
        ConformanceError: the first check that fails, its name in the message.
    """
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for check in suite:
            if check.durable and not durable:
                continue
            where = directory / check.name
            if where.exists():
                shutil.rmtree(where)
            try:
                check(make, where, reference)
            except unittest.SkipTest:
                continue  # e.g. the full-disk checks, where nothing may be mounted
            except ConformanceError as exc:
                raise ConformanceError(f"check {check.name!r} failed: {exc}") from exc
