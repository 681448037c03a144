"""Run the simulation against each mutation of the core; every one must be caught.

For each mutation of :data:`~tests.mutation.catalogue.CATALOGUE`, alone: copy
``raftdb/`` and the simulation (``tests/sim``, with ``tests/conftest.py``, the two
modules it imports, and ``pyproject.toml`` for pytest's settings) into a fresh
temporary directory, apply the edit there, and run ``pytest tests/sim/test_sim.py -x`` in that
directory, in a subprocess with a time limit. The copy comes first on the
subprocess's ``sys.path`` (pytest inserts the directory that holds the
``tests`` package, and ``PYTHONPATH`` names it too), ahead of the editable
install of the real source; the runner checks which ``raftdb`` the
subprocess imports before trusting its verdict.

Only the simulation runs: the targeted schedules first (``test_targeted_schedule``,
the fixed named fault sequences of ``tests/sim/schedules.py``), then the random
seeds (``test_simulation``). ``-x`` stops a mutant at its first failing run,
so a caught mutation costs a few runs. The unmutated copy runs the same way
first (the baseline): were the simulation itself failing, every mutation
would look caught.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .catalogue import Mutation

__all__ = ["Outcome", "prepare", "run_all", "run_one"]

#: The repository root (this file is tests/mutation/runner.py).
ROOT = Path(__file__).resolve().parents[2]

#: What is copied into each mutant's directory, besides raftdb/.
_SUPPORT = (
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/deadline.py",
    "tests/cluster_fixtures.py",
    "tests/sim",
    "pyproject.toml",
)

#: The tests a mutant runs, in this order (pytest keeps the module's order).
_TESTS = "test_targeted_schedule or test_simulation"


@dataclass(frozen=True)
class Outcome:
    """What the simulation made of one mutant (or of the unmutated baseline).

    Attributes:
        name: the mutation's name, or ``"baseline"``.
        status: ``caught`` (a run failed), ``survived`` (every run passed;
            ``passed`` for the baseline),
            ``timeout`` (no verdict within the time limit) or ``error``
            (the check itself broke: the copy was not imported, pytest did
            not run).
        caught_by: the failing run: ``schedule figure8#0`` or ``seed 12``.
        reason: the first line of the failure.
        runs: simulation runs made (the failing one included).
        seconds: wall time of the subprocess.
    """

    name: str
    status: str
    caught_by: str = ""
    reason: str = ""
    runs: int = 0
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        """True for the verdict each wants: a mutant caught, the baseline passing."""
        return self.status == ("passed" if self.name == "baseline" else "caught")


def prepare(mutation: Mutation | None, into: Path) -> None:
    """Fill ``into`` with a copy of raftdb/ and the simulation, ``mutation`` applied.

    Raises:
        MutationError: the mutation's original text is not in the source exactly once.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "raftdb", into / "raftdb", ignore=ignore)
    for rel in _SUPPORT:
        src, dst = ROOT / rel, into / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=ignore)
        else:
            shutil.copy2(src, dst)
    if mutation is not None:
        mutation.apply_in(into / "raftdb")


class _Procs:
    """The subprocesses running now, so that an interrupt can stop each of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[str]] = set()
        self.stopping = False

    def start(self, args: Sequence[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
        with self._lock:
            if self.stopping:
                raise KeyboardInterrupt
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            self._procs.add(proc)
            return proc

    def done(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._procs.discard(proc)

    def stop_all(self) -> None:
        with self._lock:
            self.stopping = True
            for proc in self._procs:
                proc.kill()


_PROCS = _Procs()


def _env(directory: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(directory), env.get("PYTHONPATH"))))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _imports_copy(directory: Path, env: dict[str, str], timeout: float) -> str | None:
    """None if a Python started in ``directory`` imports its copy of raftdb; else why not."""
    proc = _PROCS.start(
        [sys.executable, "-c", "import raftdb.raft; print(raftdb.raft.__file__)"], directory, env
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        _PROCS.done(proc)
    path = out.strip().splitlines()[-1] if out.strip() else ""
    if proc.returncode != 0 or not Path(path).resolve().is_relative_to(directory.resolve()):
        return f"the subprocess imported {path or 'nothing'!s}, not the copy: {out.strip()[-300:]}"
    return None


def _run_name(testcase: ET.Element) -> str:
    """``test_simulation[12]`` -> ``seed 12``; ``test_targeted_schedule[figure8-0]`` ->
    ``schedule figure8#0``."""
    name = testcase.get("name", "")
    if "[" not in name:
        return name
    test, param = name[:-1].split("[", 1)
    if test == "test_simulation":
        return f"seed {param}"
    if test == "test_targeted_schedule":
        schedule, _, variant = param.rpartition("-")
        return f"schedule {schedule}#{variant}"
    return name


def _verdict(report: Path) -> tuple[int, str, str] | None:
    """(runs, failing run, first line of its failure) from a JUnit report; None if unreadable."""
    try:
        tree = ET.parse(report)
    except (OSError, ET.ParseError):
        return None
    runs = 0
    for case in tree.iter("testcase"):
        if case.find("skipped") is not None:
            continue
        runs += 1
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            message = (bad.get("message") or bad.text or "").strip()
            first = next((line for line in message.splitlines() if line.strip()), "")
            first = first.removeprefix("Failed: ")
            return runs, _run_name(case), first[:300]
    return runs, "", ""


def run_one(mutation: Mutation | None, seeds: int, timeout: float, keep: bool = False) -> Outcome:
    """Prepare a copy with ``mutation`` (None: the baseline) and run the simulation on it."""
    name = "baseline" if mutation is None else mutation.name
    directory = Path(tempfile.mkdtemp(prefix=f"raftdb-mutant-{name}-"))
    start = time.monotonic()
    try:
        prepare(mutation, directory)
        env = _env(directory)
        wrong = _imports_copy(directory, env, timeout=60)
        if wrong is not None:
            return Outcome(name, "error", reason=wrong)
        report = directory / "report.xml"
        args = [
            sys.executable,
            "-m",
            "pytest",
            "tests/sim/test_sim.py",
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--sim-seeds={seeds}",
            "-k",
            _TESTS,
            f"--junitxml={report}",
        ]
        proc = _PROCS.start(args, directory, env)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            verdict = _verdict(report)
            return Outcome(
                name,
                "timeout",
                reason=f"no verdict within {timeout:.0f}s",
                runs=verdict[0] if verdict else 0,
                seconds=time.monotonic() - start,
            )
        finally:
            _PROCS.done(proc)
        seconds = time.monotonic() - start
        verdict = _verdict(report)
        if verdict is None or proc.returncode not in (0, 1):
            tail = " | ".join(out.strip().splitlines()[-5:])
            return Outcome(
                name, "error", reason=f"pytest exit {proc.returncode}: {tail}", seconds=seconds
            )
        runs, caught_by, reason = verdict
        if proc.returncode == 0:
            status = "passed" if mutation is None else "survived"
            return Outcome(name, status, runs=runs, seconds=seconds)
        return Outcome(name, "caught", caught_by, reason, runs, seconds)
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


def run_all(
    mutations: Iterable[Mutation | None],
    seeds: int,
    jobs: int,
    timeout: float,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run every one of ``mutations`` (None: the baseline), ``jobs`` at a time, in order."""
    todo = list(mutations)

    def one(m: Mutation | None) -> Outcome:
        outcome = run_one(m, seeds, timeout)
        if on_done is not None:
            on_done(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        try:
            return list(pool.map(one, todo))
        except KeyboardInterrupt:
            _PROCS.stop_all()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
