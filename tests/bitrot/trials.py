"""The offline bit-rot trials: damage a copy of a pristine data directory, start it
offline (:func:`~tests.bitrot.dump.open_and_dump`), and judge the outcome.

Each trial ends in exactly one of:

- ``detected at start``: the storage or the state machine refused to open, or
  the node's own checks refused it, with an error naming the damaged
  directory or file (a node refuses to start with that one line);
- ``detected at read``: a read of the state machine's keys raised it (the keys
  are not all read at start; a running node answers that read ``503`` and
  stops, ``tests/chaos/test_disk.py``);
- ``harmless``: it started and everything it would serve and replicate is
  equal to the pristine copy's dump, which proves the damaged bytes were not
  used (LevelDB's text ``LOG``, padding, a SQLite free page, ...);
- a **bug**: a different dump (wrong data), an exception of another kind (a
  traceback), or an error that does not name what is damaged.
"""

from __future__ import annotations

import shutil
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.bitrot.dump import Detected, Dump, open_and_dump
from tests.bitrot.flips import Flip, flip_bytes, pick_file, trial_rng

__all__ = ["Outcome", "TrialRun", "damage", "judge", "run_trials"]

# Not data: the cluster identity is checked by the peers' handshake (a flip to
# another hex digit is a different cluster, which every peer refuses), not here.
_NOT_HERE = ("cluster-id",)


@dataclass
class TrialRun:
    """What a run of trials found."""

    trials: int = 0
    flips: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def line(self, name: str) -> str:
        """One summary line."""
        kinds = " ".join(
            f"{kind}={n}"
            for kind, n in sorted(Counter(k for k, _ in self.by_kind.elements()).items())
        )
        o = self.outcomes
        return (
            f"bitrot {name}: {self.trials} trials, {self.flips} bytes flipped; "
            f"detected at start {o['start']}, at read {o['read']}, harmless (proven) "
            f"{o['harmless']}, last SQLite transaction dropped as torn {o['torn']}, "
            f"bugs {len(self.problems)}; files: {kinds}"
        )


Outcome = str


def run_trials(
    pristine: Path,
    storage: str,
    state_machine: str,
    *,
    seed: int,
    trials: int,
    most_flips: int,
    work: Path,
    first_trial: int = 0,
) -> TrialRun:
    """Run trials ``first_trial ..`` of ``seed`` on copies of ``pristine`` in ``work``."""
    shutil.copytree(pristine, work / "pristine")  # as it was, for a failure's replay
    scratch = work / "pristine-opened"
    shutil.copytree(pristine, scratch)
    expected = open_and_dump(scratch, storage, state_machine)  # it writes: a copy
    run = TrialRun()
    for trial in range(first_trial, first_trial + trials):
        data = work / f"trial-{trial}"
        kind, path, flips = damage(pristine, data, seed=seed, trial=trial, most_flips=most_flips)
        outcome = _judge(data, path, storage, state_machine, expected)
        if outcome.startswith("bug: wrong") and kind == "log/sqlite-wal":
            outcome = _torn_tail(data, storage, state_machine, expected, outcome)
        run.trials += 1
        run.flips += len(flips)
        where = (
            f"seed={seed} trial={trial} {storage}/{state_machine} {kind} "
            f"{path.relative_to(data)} flips={[(f.offset, f.old, f.new) for f in flips]}"
        )
        if outcome.startswith("bug"):
            # Kept, with the pristine copy beside it: the pristine directory is
            # rebuilt by each run, and its bytes depend on timing a little.
            run.problems.append(f"{where} (kept in {data}): {outcome}")
        else:
            run.outcomes[outcome] += 1
            run.by_kind[(kind, outcome)] += 1
            shutil.rmtree(data)
    return run


def damage(
    pristine: Path, data: Path, *, seed: int, trial: int, most_flips: int
) -> tuple[str, Path, list[Flip]]:
    """Copy ``pristine`` to ``data`` and damage it as trial ``trial`` of ``seed`` does.

    Returns:
        The damaged file's kind, its path and the flips.
    """
    rng = trial_rng(seed, trial)
    shutil.copytree(pristine, data)
    kind, path = pick_file(rng, data, exclude=_NOT_HERE)
    return kind, path, flip_bytes(rng, path, most_flips)


def judge(data: Path, storage: str, state_machine: str, expected: Dump, damaged: Path) -> Outcome:
    """The outcome of starting the damaged ``data`` offline (the module docstring)."""
    return _judge(data, damaged, storage, state_machine, expected)


def _judge(data: Path, path: Path, storage: str, state_machine: str, expected: Dump) -> Outcome:
    try:
        got = open_and_dump(data, storage, state_machine)
    except Detected as d:
        message = str(d.error)
        named = (data / path.relative_to(data).parts[0]).as_posix()
        if named not in message:
            return f"bug: the error does not name {named}: {d}"
        return "start" if d.stage == "open" else "read"
    except Exception:
        return "bug: not a detection: " + traceback.format_exc(limit=6)
    if got == expected:
        return "harmless"
    return "bug: wrong data served: " + _difference(expected, got)


def _torn_tail(data: Path, storage: str, state_machine: str, expected: Dump, outcome: str) -> str:
    """SQLite's write-ahead log damaged in its last transaction: SQLite drops that
    transaction as a crash's torn write (``raftdb_sqlite._wal``). Counted apart,
    and only if exactly the last save is missing and nothing else differs."""
    got = open_and_dump(data, storage, state_machine)
    hs, cs, snap, first, last, term, entries = expected.log
    if (
        got.log == (hs, cs, snap, first, last - 1, term, entries[:-1])
        and got.state == expected.state
    ):
        return "torn"
    return outcome


def _difference(a: Dump, b: Dump) -> str:
    if a.log != b.log:
        for i, (x, y) in enumerate(zip(a.log, b.log, strict=True)):
            if x != y:
                return f"log part {i}: {str(x)[:300]} != {str(y)[:300]}"
    if a.state != b.state:
        for i, (x, y) in enumerate(zip(a.state, b.state, strict=True)):
            if x != y:
                return f"state part {i}: {str(x)[:300]} != {str(y)[:300]}"
    return f"snapshot streams differ ({len(a.stream)} and {len(b.stream)} bytes)"
