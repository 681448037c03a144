"""``python -m benchmarks.cluster profile``: where a raftdb node's time goes under load.

It starts a 3-node raftdb cluster, drives one load with wrk (``--op``,
``--connections``, to the leader), and during ``--seconds`` of it, after the
warm-up:

- records the chosen node (``--node leader|follower``) with ``py-spy record
  --format raw --threads --nonblocking``, per thread; by default py-spy keeps
  the samples of threads not blocked in a system call (which, on a busy
  machine, includes time runnable but waiting for a CPU); with ``--gil``
  only the samples of the thread holding the GIL: Python's own work;
- reads every node's CPU time per thread (``/proc/<pid>/task/*/stat``), every
  process's CPU time (who else used the machine), the machine's CPU use
  (``/proc/stat``), and the nodes' ``/metrics`` counters (saves and their
  time, proposals and their time).

It prints, per request served in the window: CPU µs of each node by thread
(the firm figure), and the profiled node's main-thread samples by
component, each sample charged to a system call at its leaf (socket send,
receive, epoll, the hand-off to the I/O thread) or else to the innermost
frame of a known component (a ``msgpack`` call made by ``raftdb/transport/frames.py``
counts as the transport; a ``plyvel`` call from the LevelDB storage as the
save); the hottest functions; and the save (fsync) figures. The raw profile
and the summary are kept in ``--out``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from benchmarks.cluster.procs import BenchError, ProcessSet, http_request
from benchmarks.cluster.systems import Raftdb, Running
from benchmarks.cluster.wrk import Op, Target, WrkResult, run_wrk

__all__ = ["CATEGORIES", "add_arguments", "categorize", "command_profile", "parse_raw"]

#: Components, tried on each frame from the innermost out; the first match wins.
CATEGORIES: Final[list[tuple[str, tuple[str, ...]]]] = [
    (
        "LevelDB storage save (Raft log)",
        ("raftdb_leveldb/storage", "raftdb_sqlite/", "raftdb/storage/"),
    ),
    (
        "peer transport, wire encode/decode",
        ("raftdb/transport/", "raftdb/codec", "raftdb/kv/snapshot"),
    ),
    (
        "state machine apply and reads (LevelDB)",
        ("raftdb_leveldb/state_machine", "raftdb/kv/", "raftdb_leveldb/_db"),
    ),
    ("Raft core", ("raftdb/raft/",)),
    ("metrics", ("raftdb/node/metrics", "prometheus_client/")),
    (
        "driver (Ready loop, proposals, futures)",
        ("raftdb/node/",),
    ),
    ("REST handlers (raftdb/http/)", ("raftdb/http/", "raftdb/app.py")),
    ("Starlette (routing, Request, Response)", ("starlette/",)),
    ("uvicorn HTTP protocol (httptools parser callbacks, ASGI cycle)", ("uvicorn/",)),
    ("asyncio (tasks, futures, wait_for, call_soon)", ("asyncio/", "uvloop/")),
    (
        "thread hand-off (executor, queue, locks)",
        ("concurrent/futures", "threading.py", "queue.py"),
    ),
    ("logging", ("logging/",)),
]
#: Leaf frames that are system calls (or wait in one), tried before :data:`CATEGORIES`.
#: A thread preempted in ``send()`` by the peer it woke still counts as on-CPU
#: for py-spy without ``--gil``; with ``--gil`` these mostly vanish (the GIL is
#: released around the call).
SYSCALL_LEAVES: Final[list[tuple[str, tuple[str, ...]]]] = [
    ("socket send", ("_SelectorSocketTransport.write ", "sock_sendall", "_write_ready")),
    ("socket receive", ("_read_ready__data_received", "_read_ready__get_buffer", "sock_recv")),
    ("epoll wait", ("EpollSelector.select", "select (selectors.py")),
    ("hand-off to the I/O thread (executor submit)", ("ThreadPoolExecutor.submit",)),
]
OTHER: Final = "other"
_FRAME: Final = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``profile`` command's own options."""
    parser.add_argument("--op", choices=["put", "get", "stale"], default="put")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--node", choices=["leader", "follower"], default="leader")
    parser.add_argument("--seconds", type=float, default=20.0, help="profiled window")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "raftdb-bench-profile",
        help="where the raw profile and the summary are kept",
    )
    parser.add_argument("--no-py-spy", action="store_true", help="CPU and metrics only")
    parser.add_argument(
        "--gil", action="store_true", help="sample only the thread holding the GIL (py-spy --gil)"
    )
    parser.add_argument(
        "--idle", action="store_true", help="keep idle samples too (py-spy --idle): waits"
    )


@dataclass(frozen=True)
class Sample:
    """One collapsed stack of py-spy's raw output: thread, frames outermost first, count."""

    thread: str
    frames: tuple[str, ...]
    count: int


def parse_raw(text: str) -> list[Sample]:
    """py-spy's ``--format raw --threads`` output (``a;b;c count`` lines)."""
    samples = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith(("thread", "process")) else "?"
        body = tuple(f for f in frames if not f.startswith(("thread", "process")))
        samples.append(Sample(thread, body, int(count)))
    return samples


def categorize(frames: tuple[str, ...]) -> str:
    """The component of the innermost frame that belongs to one (see :data:`CATEGORIES`).

    A system call at the leaf (:data:`SYSCALL_LEAVES`) is its own component,
    qualified for sends by who sent: the peer transport or an HTTP answer.
    """
    if frames:
        leaf = frames[-1]
        for name, needles in SYSCALL_LEAVES:
            if any(needle in leaf for needle in needles):
                if name == "socket send":
                    peers = any("raftdb/transport" in f for f in frames)
                    return f"{name}: {'peer transport' if peers else 'HTTP answers'}"
                return name
    for frame in reversed(frames):
        match = _FRAME.match(frame)
        where = match.group("file") if match else frame
        for name, needles in CATEGORIES:
            if any(needle in where for needle in needles):
                return name
    return OTHER


def _leaf(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    parts = match.group("file").split("/")
    return f"{match.group('func')} ({'/'.join(parts[-2:])}:{match.group('line') or '?'})"


def _cpu_by_thread(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of ``pid``."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def _processes_cpu() -> dict[int, tuple[str, float]]:
    """Every process: ``pid -> (command, CPU seconds)``."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        words = [a.decode(errors="replace") for a in argv if a][:4]
        command = " ".join(Path(words[0]).name if i == 0 else w for i, w in enumerate(words))
        out[int(entry.name)] = (command[:90], (int(fields[11]) + int(fields[12])) / ticks)
    return out


def _machine_cpu() -> tuple[float, float]:
    """``(busy, total)`` jiffies of the machine since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return float(sum(fields) - idle), float(sum(fields))


def _metrics(port: int) -> dict[str, float]:
    status, body = http_request(port, "GET", "/metrics")
    if status != 200:
        return {}
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("raftdb_") and " " in line and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _snapshot(running: Running) -> dict[str, Any]:
    return {
        "time": time.monotonic(),
        "cpu": {pid: _cpu_by_thread(pid) for pid in running.pids},
        "machine": _machine_cpu(),
        "processes": _processes_cpu(),
        "metrics": [_metrics(port) for port in running.ports],
    }


def _delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def summarize(
    running: Running,
    node: int,
    before: dict[str, Any],
    after: dict[str, Any],
    samples: list[Sample],
    rps: float,
    rate: int,
    gil: bool = False,
) -> dict[str, Any]:
    """Per-request costs of the window between ``before`` and ``after``."""
    seconds = after["time"] - before["time"]
    requests = max(rps * seconds, 1.0)
    nodes = []
    for i, pid in enumerate(running.pids):
        cpu_before, cpu_after = before["cpu"][pid], after["cpu"][pid]
        threads = {
            ("main" if tid == pid else f"thread {tid}"): cpu_after[tid] - cpu_before.get(tid, 0.0)
            for tid in cpu_after
        }
        busy = {k: v for k, v in threads.items() if v > 0.01 * seconds}
        m0, m1 = before["metrics"][i], after["metrics"][i]
        saves = _delta(m0, m1, "raftdb_save_seconds_count")
        proposals = _delta(m0, m1, "raftdb_proposals_total")
        nodes.append(
            {
                "node": i + 1,
                "role": "leader" if i == running.leader else "follower",
                "cpu_percent_of_one_core": {
                    k: round(100 * v / seconds, 1) for k, v in busy.items()
                },
                "cpu_us_per_request": {k: round(1e6 * v / requests, 1) for k, v in busy.items()},
                "saves_per_s": round(saves / seconds, 1),
                "mean_save_ms": round(1e3 * _delta(m0, m1, "raftdb_save_seconds_sum") / saves, 3)
                if saves
                else None,
                "entries_per_save": round(requests / saves, 1) if saves else None,
                "proposals_per_s_here": round(proposals / seconds, 1),
                "mean_proposal_to_apply_ms": round(
                    1e3 * _delta(m0, m1, "raftdb_proposal_seconds_sum") / proposals, 2
                )
                if proposals
                else None,
            }
        )
    busy_machine = after["machine"][0] - before["machine"][0]
    total_machine = after["machine"][1] - before["machine"][1]
    names = {pid: f"raftdb node {i + 1}" for i, pid in enumerate(running.pids)}
    users = []
    for pid, (command, cpu) in after["processes"].items():
        used = cpu - before["processes"].get(pid, (command, 0.0))[1]
        if used > 0.01 * seconds:
            users.append((used, names.get(pid, command)))
    summary: dict[str, Any] = {
        "window_s": round(seconds, 1),
        "requests_per_s": round(rps, 1),
        "machine_cpu_busy_percent": round(100 * busy_machine / max(total_machine, 1.0), 1),
        "cpu_percent_of_one_core_by_process": {
            name: round(100 * used / seconds, 1) for used, name in sorted(users, reverse=True)
        },
        "nodes": nodes,
    }
    if samples:
        summary["profile"] = _profile_summary(samples, node, requests, rate, running, gil)
    return summary


def _profile_summary(
    samples: list[Sample], node: int, requests: float, rate: int, running: Running, gil: bool
) -> dict[str, Any]:
    by_thread: collections.Counter[str] = collections.Counter()
    for s in samples:
        by_thread[s.thread] += s.count
    main = max(by_thread, key=lambda t: by_thread[t]) if by_thread else "?"
    categories: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    io_categories: collections.Counter[str] = collections.Counter()
    for s in samples:
        if s.thread != main:
            io_categories[categorize(s.frames)] += s.count
            continue
        categories[categorize(s.frames)] += s.count
        if s.frames:
            leaves[_leaf(s.frames[-1])] += s.count
        for frame in set(s.frames):
            inclusive[_leaf(frame)] += s.count

    def us(count: int) -> float:
        return round(1e6 * count / rate / requests, 1)

    main_total = by_thread[main]
    return {
        "node": node + 1,
        "role": "leader" if node == running.leader else "follower",
        "samples_by_thread": dict(by_thread),
        "main_thread": main,
        "mode": "GIL held (py-spy --gil)" if gil else "py-spy samples (default or --idle)",
        "main_thread_us_per_request": us(main_total),
        "main_thread_by_component": [
            {"component": k, "percent": round(100 * v / main_total, 1), "us_per_request": us(v)}
            for k, v in categories.most_common()
        ],
        "other_threads_by_component": [
            {"component": k, "us_per_request": us(v)} for k, v in io_categories.most_common()
        ],
        "main_thread_top_self": [
            {"function": k, "percent": round(100 * v / main_total, 1)}
            for k, v in leaves.most_common(25)
        ],
        "main_thread_top_inclusive": [
            {"function": k, "percent": round(100 * v / main_total, 1)}
            for k, v in inclusive.most_common(40)
        ],
    }


def _print(summary: dict[str, Any]) -> None:
    print(json.dumps({k: v for k, v in summary.items() if k != "profile"}, indent=1))
    prof = summary.get("profile")
    if not prof:
        return
    print(
        f"\nnode {prof['node']} ({prof['role']}), main thread, {prof['mode']}: "
        f"{prof['main_thread_us_per_request']} µs sampled per request"
    )
    for row in prof["main_thread_by_component"]:
        print(f"  {row['percent']:5.1f} %  {row['us_per_request']:7.1f} µs  {row['component']}")
    print("other threads (µs per request):")
    for row in prof["other_threads_by_component"]:
        print(f"  {row['us_per_request']:7.1f} µs  {row['component']}")
    print("hottest functions (self, % of the main thread's samples):")
    for row in prof["main_thread_top_self"][:20]:
        print(f"  {row['percent']:5.1f} %  {row['function']}")


def command_profile(args: argparse.Namespace) -> None:
    """See the module docstring."""
    beside = Path(sys.executable).with_name("py-spy")  # the venv's, when not on PATH
    py_spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if py_spy is None and not args.no_py_spy:
        raise BenchError("py-spy is not installed (pip install py-spy, in the bench extra)")
    op: Op = args.op
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    system = Raftdb(args.workdir, args.raftdb_source, args.raftdb_launcher)
    try:
        running = system.start()
        if op != "put":
            system.preload(args.keys)
        node = running.leader if args.node == "leader" else running.followers()[0]
        outcome: dict[str, WrkResult | BaseException] = {}
        total = args.warmup + args.seconds + 4

        def load() -> None:
            try:
                outcome["wrk"] = run_wrk(
                    [Target(running.ports[running.leader], args.connections)],
                    "rest",
                    op,
                    prefix="prof",
                    duration_s=total,
                    nkeys=args.keys,
                )
            except BaseException as exc:  # reported below, on the main thread
                outcome["wrk"] = exc

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        time.sleep(args.warmup + 1)
        before = _snapshot(running)
        mode = ("-gil" if args.gil else "") + ("-idle" if args.idle else "")
        stem = f"{op}-{args.connections}-{args.node}{mode}"
        raw = out / f"{stem}.raw"
        if args.no_py_spy:
            time.sleep(args.seconds)
        else:
            assert py_spy is not None
            with ProcessSet("py-spy") as spy:
                argv = [
                    py_spy,
                    "record",
                    "--pid",
                    str(running.pids[node]),
                    "--duration",
                    str(int(args.seconds)),
                    "--rate",
                    str(args.rate),
                    "--format",
                    "raw",
                    "--threads",
                    "--nonblocking",
                    *(["--gil"] if args.gil else []),
                    *(["--idle"] if args.idle else []),
                    "-o",
                    str(raw),
                ]
                proc = spy.start("py-spy", argv, log=out / "py-spy.log")
                proc.wait(timeout=args.seconds + 60)
        after = _snapshot(running)
        loader.join(timeout=total + 120)
        result = outcome.get("wrk")
        if not isinstance(result, WrkResult):
            raise BenchError(f"the load failed: {result!r}")
        samples = parse_raw(raw.read_text()) if raw.exists() else []
        summary = summarize(running, node, before, after, samples, result.rps, args.rate, args.gil)
        summary["load"] = {
            "op": op,
            "connections": args.connections,
            "to": "leader",
            "wrk_rps": round(result.rps, 1),
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            "errors": result.errors,
        }
        (out / f"{stem}.json").write_text(json.dumps(summary, indent=1) + "\n")
        _print(summary)
        print(f"\nkept: {raw} and its .json summary in {out}")
    finally:
        system.stop()
