"""Crash tests: kill -9 a child process in the middle of its writes, then check.

The child runs a deterministic workload (:mod:`raftdb.testing.conformance.workloads`) on
a real plugin and prints one line per operation that returned. The parent
kills it with SIGKILL at a point it picks (after the k-th acknowledgement,
or when the child says it is inside a restore), reopens the plugin itself,
and compares what it finds with the workload's model:

- storage: the state is the model's after the last acknowledged save, or
  after the one in flight: every save that returned is there, and the one
  the kill interrupted is there whole or not at all;
- state machine, apply: the recovered state is exactly the reference state
  at the recovered ``applied_index``, which is at least the last
  acknowledged batch's; replaying the rest gives the reference state;
- state machine, restore: killed inside ``restore`` the old state is whole;
  killed after it returned, the new state is there;
- state machine, power cut (:func:`run_state_machine_power_cut`, for a harness
  with a filesystem that can drop what was not made durable): the recovered
  state is exactly the reference state at its ``applied_index``, which is at
  least what the plugin's durability promise covers (see
  :mod:`raftdb.kv.state_machine`).

No sleeps: the parent acts on the child's output, and a watchdog timer kills
a child that stops producing it, so every run ends in bounded time.

Child entry point (``python -m raftdb.testing.conformance.crash``):
``<mode> <plugin> <path> <seed> <start>``.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Final

from raftdb.testing.conformance.checks import ConformanceError

__all__ = [
    "run_restore_crash",
    "run_state_machine_crash",
    "run_state_machine_power_cut",
    "run_storage_crash",
]

_WATCHDOG_SECONDS = 60.0
_APPLY_TOTAL = 1_000_000  # entries the apply workload can produce before a child stops


class _Child:
    """A child process running one crash workload, its output read line by line."""

    def __init__(self, *args: str) -> None:
        # Owned by this object and closed in close(); a file, not a pipe, so a
        # chatty child can never block on a full stderr pipe.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "raftdb.testing.conformance.crash", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        # A child that hangs would hang the test: kill it after a generous bound.
        self._watchdog = threading.Timer(_WATCHDOG_SECONDS, self.proc.kill)
        self._watchdog.daemon = True
        self._watchdog.start()

    def lines(self) -> Iterator[str]:
        stdout = self.proc.stdout
        assert stdout is not None
        for raw in stdout:
            yield raw.decode().strip()

    def kill(self) -> list[str]:
        """SIGKILL the child; the lines it printed but we had not read yet."""
        self.proc.kill()
        rest = [line.strip() for line in self.read_rest()]
        self.proc.wait()
        return [line for line in rest if line]

    def kill_complete(self) -> list[str]:
        """SIGKILL the child; the whole lines it printed that we had not read yet
        (a line the kill cut short is dropped)."""
        self.proc.kill()
        rest = [line.strip() for line in self.read_rest() if line.endswith("\n")]
        self.proc.wait()
        return [line for line in rest if line]

    def read_rest(self) -> list[str]:
        stdout = self.proc.stdout
        assert stdout is not None
        return [raw.decode() for raw in stdout.readlines()]

    def fail(self, message: str) -> ConformanceError:
        self.proc.kill()
        self.proc.wait()
        self._stderr.seek(0)
        err = self._stderr.read().decode(errors="replace")[-3000:]
        return ConformanceError(f"{message}; child stderr:\n{err}")

    def close(self) -> None:
        self._watchdog.cancel()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()


# -- storage --------------------------------------------------------------------------


def run_storage_crash(reference: str, path: Path, *, seed: int, rounds: int) -> None:
    """Kill -9 a child saving to the storage plugin ``reference`` in ``path``, ``rounds`` times.

    Each round aims the kill at the start of a large save (the child says
    ``b N`` just before operation N), so that it lands while the save is
    being encoded or written, not between saves.
    """
    from raftdb.plugins import open_storage
    from raftdb.testing.conformance.workloads import StorageWorkload, dump_storage, mismatch

    rng = random.Random(seed)
    done = 0  # operations the recovered state reflects
    for round_no in range(rounds):
        # Find the target: a save of many entries a few operations ahead.
        ahead = StorageWorkload(seed, big=True)
        while ahead.steps < done:
            ahead.step()
        target = done + rng.randint(1, 6)
        while True:
            op = ahead.step()
            if ahead.steps >= target and len(op.entries) >= 64:
                target = ahead.steps
                break
        child = _Child("storage", reference, str(path), str(seed), str(done + 1))
        try:
            acked = done
            for line in child.lines():
                if line == f"b {target}":
                    break
                if line.isdigit():
                    acked = int(line)
            else:
                raise child.fail(f"round {round_no}: the child stopped after step {acked}")
            late = [int(line) for line in child.kill() if line.isdigit()]
            acked = max([acked, *late])
        finally:
            child.close()
        workload = StorageWorkload(seed, big=True)
        while workload.steps < acked:
            workload.step()
        storage = open_storage(reference, path)
        try:
            found = dump_storage(storage)
        finally:
            storage.close()
        at_ack = mismatch(found, workload.model, workload.compacted)
        if not at_ack:
            done = acked
            continue
        op = workload.step()  # the save that was in flight
        after = mismatch(found, workload.model, workload.compacted)
        if after:
            raise ConformanceError(
                f"round {round_no}: after kill -9 with {acked} operations acknowledged, "
                f"the storage is neither the state after operation {acked} ({at_ack}) "
                f"nor after operation {acked + 1}, {op.describe()} ({after})"
            )
        done = acked + 1


def _storage_child(reference: str, path: Path, seed: int, start: int, out: IO[str]) -> None:
    from raftdb.plugins import open_storage
    from raftdb.testing.conformance.workloads import StorageWorkload

    workload = StorageWorkload(seed, big=True)
    while workload.steps < start - 1:
        workload.step()
    storage = open_storage(reference, path)
    print("ready", file=out, flush=True)
    while True:
        op = workload.step()
        print("b", workload.steps, file=out, flush=True)
        op.run(storage)
        print(workload.steps, file=out, flush=True)


# -- state machine: apply -------------------------------------------------------------------


def _reference_at(seed: int, index: int) -> Any:
    """A MemoryStateMachine with the apply workload applied up to ``index``."""
    from raftdb.kv.state_machine import MemoryStateMachine
    from raftdb.testing.conformance.workloads import EntryWorkload

    reference = MemoryStateMachine()
    workload = EntryWorkload(seed)
    while reference.applied_index < index:
        batch = workload.batch()
        reference.apply([e for e in batch if e.index <= index])
    return reference


def run_state_machine_crash(reference: str, path: Path, *, seed: int, rounds: int) -> None:
    """Kill -9 a child applying batches to the state machine plugin ``reference``."""
    from raftdb.plugins import open_state_machine
    from raftdb.testing.conformance.state_machine import digest

    rng = random.Random(seed)
    for round_no in range(rounds):
        child = _Child("apply", reference, str(path), str(seed), "0")
        try:
            kill_after = rng.randint(3, 30)
            acked, count = -1, 0
            for line in child.lines():
                if line.startswith("ready"):
                    continue
                acked, count = int(line), count + 1
                if count >= kill_after:
                    break
            else:
                raise child.fail(f"round {round_no}: the child stopped after index {acked}")
            late = [int(line) for line in child.kill() if line.isdigit()]
            acked = max([acked, *late])
        finally:
            child.close()
        machine = open_state_machine(reference, path)
        try:
            applied = machine.applied_index
            if applied < acked:
                raise ConformanceError(
                    f"round {round_no}: applied_index is {applied} after kill -9, but a batch "
                    f"up to {acked} had been applied (apply returned)"
                )
            found = digest(machine)
        finally:
            machine.close()
        want = digest(_reference_at(seed, applied))
        if found != want:
            raise ConformanceError(
                f"round {round_no}: after kill -9 the state machine at applied index "
                f"{applied} differs from the reference state at that index"
            )


def _apply_child(reference: str, path: Path, seed: int, out: IO[str]) -> None:
    from raftdb.plugins import open_state_machine
    from raftdb.testing.conformance.workloads import EntryWorkload

    machine = open_state_machine(reference, path)
    workload = EntryWorkload(seed)
    print("ready", machine.applied_index, file=out, flush=True)
    while workload.index < _APPLY_TOTAL:
        batch = [e for e in workload.batch() if e.index > machine.applied_index]
        if batch:
            machine.apply(batch)
            print(machine.applied_index, file=out, flush=True)


# -- state machine: power cut -------------------------------------------------------------


def run_state_machine_power_cut(
    reference: str,
    path: Path,
    cut: Callable[[], object],
    *,
    seed: int,
    rounds: int,
    kill_when: Callable[[], bool] | None = None,
) -> dict[str, int]:
    """Kill -9 a child applying batches to ``reference`` in ``path``, then ``cut()``
    (the caller's power cut: drop everything not made durable), reopen and check.

    The child calls ``make_durable`` after a random half of the batches (a fifth,
    for a plugin durable at make_durable only) if the plugin has it
    (:class:`~raftdb.kv.state_machine.DefersDurability`), and
    reports each ``apply`` and ``make_durable`` that returned. After the cut:

    - a plugin *durable at apply* holds at least the last batch ``apply``
      returned; one *durable before the next batch* at least the batch before
      that, and the last one ``make_durable`` covered; one *durable at
      make_durable* at least the last one ``make_durable`` covered;
    - either way the state is exactly the reference state at its applied index:
      a prefix of the batches, never a state with a hole.

    Args:
        cut: called once the child is dead and reaped.
        kill_when: checked after each line the child reports once it has run a
            few batches (e.g. "LevelDB just rotated its log"); the child is
            killed when it says so (default: after a random number of batches).

    Returns:
        Counts: ``rounds``, ``lost`` (rounds whose last returned batch was lost,
        as the promise allows), ``killed_when`` (rounds ``kill_when`` chose).
    """
    from raftdb.plugins import open_state_machine
    from raftdb.testing.conformance.state_machine import digest

    rng = random.Random(seed)
    counts = {"rounds": 0, "lost": 0, "killed_when": 0}
    for round_no in range(rounds):
        child = _Child("apply-durable", reference, str(path), str(seed + round_no), "0")
        promise = "at-apply"
        applied: list[int] = []  # apply returned, in order
        durable = -1  # make_durable returned
        try:
            kill_after = rng.randint(3, 40)
            stopped = True
            for line in child.lines():
                word, _, rest = line.partition(" ")
                if word == "ready":
                    promise = rest.split()[1]
                    continue
                if word == "a":
                    applied.append(int(rest))
                elif word == "d":
                    durable = int(rest)
                if len(applied) >= 3 and kill_when is not None and kill_when():
                    counts["killed_when"] += 1
                    stopped = False
                    break
                if kill_when is None and len(applied) >= kill_after:
                    stopped = False
                    break
            if stopped:
                raise child.fail(f"round {round_no}: the child stopped after {applied[-1:]}")
            for line in child.kill_complete():  # what it reported before it died
                word, _, rest = line.partition(" ")
                if word == "a":
                    applied.append(int(rest))
                elif word == "d":
                    durable = int(rest)
        finally:
            child.close()
        cut()
        # Durable before the next batch: the one before the last returned apply.
        before_last = applied[-2] if len(applied) >= 2 else -1
        promised = {
            "at-apply": applied[-1],
            "defers": max(durable, before_last),
            "batches": durable,
        }[promise]
        machine = open_state_machine(reference, path)
        try:
            found_index = machine.applied_index
            if found_index < promised:
                raise ConformanceError(
                    f"round {round_no}: applied_index is {found_index} after a power cut, but "
                    f"the batch up to {promised} was promised durable ("
                    f"{_PROMISES[promise]}; last apply returned "
                    f"at {applied[-1]}, last make_durable at {durable})"
                )
            found = digest(machine)
        finally:
            machine.close()
        want = digest(_reference_at(seed + round_no, found_index))
        if found != want:
            raise ConformanceError(
                f"round {round_no}: after a power cut the state machine at applied index "
                f"{found_index} differs from the reference state at that index: not a prefix "
                "of the applied batches"
            )
        counts["rounds"] += 1
        counts["lost"] += found_index < applied[-1]
        # Each round has a workload of its own seed, from an empty state.
        shutil.rmtree(path)
    return counts


_PROMISES: Final = {
    "at-apply": "at apply",
    "defers": "before the next batch",
    "batches": "at make_durable",
}


def _durable_child(reference: str, path: Path, seed: int, out: IO[str]) -> None:
    from raftdb.kv.state_machine import BatchesDurability, DefersDurability
    from raftdb.plugins import open_state_machine
    from raftdb.testing.conformance.workloads import EntryWorkload

    machine = open_state_machine(reference, path)
    make_durable = machine.make_durable if isinstance(machine, DefersDurability) else None
    if isinstance(machine, BatchesDurability):
        promise = "batches"
    else:
        promise = "at-apply" if make_durable is None else "defers"
    rng = random.Random(seed)
    workload = EntryWorkload(seed)
    print("ready", machine.applied_index, promise, file=out, flush=True)
    while workload.index < _APPLY_TOTAL:
        batch = [e for e in workload.batch() if e.index > machine.applied_index]
        if batch:
            machine.apply(batch)
            print("a", machine.applied_index, file=out, flush=True)
            # Batches durable at make_durable only: longer runs of them between calls.
            if make_durable is not None and rng.random() < (0.2 if promise == "batches" else 0.5):
                make_durable()
                print("d", machine.applied_index, file=out, flush=True)


# -- state machine: restore ---------------------------------------------------------------


def _snapshot_chunks(seed: int, keys: int) -> list[bytes]:
    """The stream of a state (different from the apply workload's) to restore."""
    from raftdb.kv.commands import Command
    from raftdb.kv.state_machine import MemoryStateMachine
    from raftdb.raft.messages import Entry

    source = MemoryStateMachine()
    rng = random.Random(seed)
    entries = [
        Entry(7, i, data=Command.put(b"r%07d" % i, rng.randbytes(100)).encode())
        for i in range(1, keys + 1)
    ]
    source.apply(entries)
    return list(source.snapshot(chunk_size=64 << 10))


def run_restore_crash(reference: str, path: Path, *, seed: int, keys: int = 20_000) -> None:
    """Kill -9 a child inside ``restore`` (old state must be whole), then after it (new state)."""
    from raftdb.kv.state_machine import MemoryStateMachine
    from raftdb.plugins import open_state_machine
    from raftdb.testing.conformance.state_machine import digest

    prepare_restore_target(reference, path, seed)
    old = digest(_reference_at(seed, 300))
    new_machine = MemoryStateMachine()
    new_machine.restore(_snapshot_chunks(seed, keys))
    new = digest(new_machine)
    for when, want in (("midway", old), ("restored", new)):
        machine = open_state_machine(reference, path)
        try:
            expect_before = digest(machine)
        finally:
            machine.close()
        if expect_before != old:
            raise ConformanceError(f"the state before the {when} restore is not the prepared one")
        child = _Child("restore", reference, str(path), str(seed), str(keys), when)
        try:
            for line in child.lines():
                if line == when:
                    break
            else:
                raise child.fail(f"the child ended before reporting {when!r}")
            child.kill()
        finally:
            child.close()
        machine = open_state_machine(reference, path)
        try:
            found = digest(machine)
        finally:
            machine.close()
        if found != want:
            which = "the old state, whole" if when == "midway" else "the restored state"
            raise ConformanceError(f"after kill -9 {when} through restore, want {which}")
        if when == "restored":
            return
    raise AssertionError("unreachable")  # pragma: no cover


def _restore_child(
    reference: str, path: Path, seed: int, keys: int, when: str, out: IO[str], wait: IO[str]
) -> None:
    from raftdb.plugins import open_state_machine

    machine = open_state_machine(reference, path)
    chunks = _snapshot_chunks(seed, keys)

    def feed() -> Iterator[bytes]:
        for i, chunk in enumerate(chunks):
            if when == "midway" and i == len(chunks) // 2:
                print("midway", file=out, flush=True)
                wait.readline()  # the parent kills us here; nothing is ever written
            yield chunk

    machine.restore(feed())
    print("restored", file=out, flush=True)
    wait.readline()


def prepare_restore_target(reference: str, path: Path, seed: int) -> None:
    """Give the state machine at ``path`` the 'old' state the restore crash expects."""
    from raftdb.plugins import open_state_machine
    from raftdb.testing.conformance.workloads import EntryWorkload

    machine = open_state_machine(reference, path)
    try:
        workload = EntryWorkload(seed)
        for batch in workload.batches(300):
            machine.apply(batch)
    finally:
        machine.close()


def main(argv: list[str]) -> None:
    """The child's entry point (see the module docstring)."""
    mode, reference, path = argv[0], argv[1], Path(argv[2])
    seed = int(argv[3])
    if mode == "storage":
        _storage_child(reference, path, seed, int(argv[4]), sys.stdout)
    elif mode == "apply":
        _apply_child(reference, path, seed, sys.stdout)
    elif mode == "apply-durable":
        _durable_child(reference, path, seed, sys.stdout)
    elif mode == "restore":
        _restore_child(reference, path, seed, int(argv[4]), argv[5], sys.stdout, sys.stdin)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
