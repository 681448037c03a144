"""The command line of the cluster benchmark: ``python -m benchmarks.cluster COMMAND``.

- ``run`` (what ``make bench`` runs): every system, interleaved over
  ``--repeats``; writes ``docs/benchmarks.md``'s section, the plot and the raw
  results (``docs/benchmarks/cluster.json``); prints the section.
- ``memory``: writes ``--keys`` keys to a raftdb cluster and records each
  node's RSS in the results, then re-renders the section.
- ``profile``: raftdb under one load with ``py-spy`` on a node (see
  :mod:`benchmarks.cluster.profile`).
- ``tune-pysyncobj``: the PySyncObj server's batching settings side by side.
- ``txn``: raftdb alone, single PUTs beside transactions (issue 12): ``put``,
  ``txn`` (a 2-put transfer), ``audit`` (a 2-get transaction) and ``get``
  (linearizable) at each ``--connections`` to the leader, a fresh cluster
  per repeat; prints a table (``docs/benchmarks.md``'s issue-12 section is
  written by hand from it).
- ``render``: the section and the plot again from the saved results.

``run``, ``memory`` and ``profile`` first install ``wrk`` and ``etcd-server``
with ``apt-get`` when they are missing, ``txn`` only ``wrk`` (``--no-setup``
skips that).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import io
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Final

from benchmarks.cluster import pair, profile
from benchmarks.cluster.procs import BenchError, ProcessSet, cpu_seconds, http_json
from benchmarks.cluster.report import (
    HEADING,
    Record,
    Results,
    plot,
    render_section,
    update_doc,
)
from benchmarks.cluster.systems import (
    SYSTEMS,
    PySyncObjServer,
    Raftdb,
    Raftdb1,
    Running,
    System,
)
from benchmarks.cluster.wrk import Op, Target, WrkResult, run_wrk

__all__ = ["main", "plan_targets"]

REPO: Final = Path(__file__).resolve().parents[2]
DOC: Final = REPO / "docs" / "benchmarks.md"
PLOT: Final = REPO / "docs" / "benchmarks" / "cluster.png"
JSON: Final = REPO / "docs" / "benchmarks" / "cluster.json"
APT_PACKAGES: Final = {"wrk": "wrk", "etcd": "etcd-server"}
OP_NAMES: Final[tuple[Op, ...]] = ("put", "get", "stale")
TXN_OPS: Final[tuple[Op, ...]] = ("put", "txn", "audit", "get")


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: unwind, stopping everything on the way."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _say(text: str) -> None:
    print(text, flush=True)


# -- set-up --------------------------------------------------------------------------


def setup(tools: Sequence[str] = tuple(APT_PACKAGES)) -> None:
    """``apt-get install`` wrk and etcd-server (or only ``tools``) if missing
    (``apt-get update`` first).

    Raises:
        BenchError: they are missing and cannot be installed here.
    """
    missing = [APT_PACKAGES[tool] for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise BenchError(f"missing {', '.join(missing)} and no apt-get here: install them")
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise BenchError(f"missing {', '.join(missing)}: run as root, or install them")
        prefix = ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _say(f"set-up: apt-get install {' '.join(missing)}")
    subprocess.run([*prefix, "apt-get", "update", "-q"], check=True, env=env)
    subprocess.run([*prefix, "apt-get", "install", "-y", "-q", *missing], check=True, env=env)


def _version(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "?"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return str(metadata.version(name))
    except metadata.PackageNotFoundError:
        return "not installed"


def export_source(args: argparse.Namespace) -> None:
    """With ``--raftdb-commit REV``: ``raftdb/`` and ``plugins/`` of REV into the workdir.

    Sets ``args.raftdb_source`` (``None`` without the option: the working tree runs).
    """
    args.raftdb_source = None
    rev = getattr(args, "raftdb_commit", None)
    if not rev:
        return
    target: Path = args.workdir / "raftdb-source"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "raftdb", "plugins"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {rev}: {archive.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    args.raftdb_source = target


def _raftdb_version(args: argparse.Namespace) -> str:
    rev = getattr(args, "raftdb_commit", None)
    git = ["git", "-C", str(REPO)]
    if rev:
        return _version([*git, "rev-parse", "--short", rev]) + " (exported, clean)"
    commit = _version([*git, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "raftdb", "plugins"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return commit + (" + uncommitted changes in raftdb/ or plugins/" if dirty else "")


def machine_meta(args: argparse.Namespace) -> dict[str, str]:
    """What the figures were measured on and with."""
    commit = _raftdb_version(args)
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs ({_cpu_model()}), Linux {platform.release()}",
        "Python": platform.python_version(),
        "raftdb": commit,
        "uvicorn / uvloop / httptools / starlette": " / ".join(
            _package_version(p) for p in ("uvicorn", "uvloop", "httptools", "starlette")
        ),
        "etcd": _version(["etcd", "--version"]),
        "PySyncObj": _package_version("pysyncobj"),
        "wrk": _version(["wrk", "-v"]),
        "raftdb nodes started with": (
            "raftdb serve"
            if args.raftdb_launcher == "serve"
            else "uvicorn raftdb.app:app (RAFTDB_* variables)"
        ),
        "runs": (
            f"{args.repeats} repeat(s) × {args.duration:g} s measured after {args.warmup:g} s "
            f"warm-up; {args.keys:,} preloaded keys for reads; 1 wrk thread per wrk process"
        ),
    }


# -- one measured run ----------------------------------------------------------------


def plan_targets(running: Running, connections: int, mode: str) -> list[Target]:
    """Where the connections go: all to the leader, or split over the nodes.

    Spread: one wrk per node, ``connections`` split as evenly as possible, the
    leader's share first; with fewer connections than nodes, they go to the
    followers (1 connection: the first follower), so "spread" always measures
    requests that followers must forward.
    """
    if mode == "leader":
        return [Target(running.ports[running.leader], connections)]
    order = [running.leader, *running.followers()]
    if connections < len(order):
        order = running.followers()[:connections]
    share, extra = divmod(connections, len(order))
    return [
        Target(running.ports[node], share + (1 if i < extra else 0))
        for i, node in enumerate(order)
        if share + (1 if i < extra else 0) > 0
    ]


def measure(
    system: System,
    running: Running,
    op: Op,
    connections: int,
    mode: str,
    args: argparse.Namespace,
    tag: str,
) -> tuple[WrkResult, float]:
    """A warm-up run, then the measured one, of the same shape; returns the measured
    run's result and the CPU seconds the system's server processes used during it."""
    leader = system.find_leader(running.ports)
    if leader is not None and leader != running.leader:
        _say(f"  note: {system.name} leader moved to node {leader + 1}")
        running = Running(running.ports, running.pids, leader)
        system.running = running
    targets = plan_targets(running, connections, mode)
    common = {"nkeys": args.keys, "log": system.dir / "wrk.log" if system.dir else None}
    if args.warmup > 0:
        run_wrk(targets, system.api, op, prefix=f"w{tag}", duration_s=args.warmup, **common)
    before = cpu_seconds(running.pids)
    result = run_wrk(targets, system.api, op, prefix=f"m{tag}", duration_s=args.duration, **common)
    return result, cpu_seconds(running.pids) - before


def _run_system(system: System, repeat: int, args: argparse.Namespace, results: Results) -> None:
    running = system.start()
    _say(f"[repeat {repeat + 1}] {system.name}: started, leader node {running.leader + 1}")
    preloaded = False
    for op in args.ops:
        if op == "get" and not system.linearizable:
            continue
        if system.only_ops is not None and op not in system.only_ops:
            continue
        if op != "put" and not preloaded:
            system.preload(args.keys)
            preloaded = True
        for connections in args.connections:
            for mode in args.modes:
                if system.only_modes is not None and mode not in system.only_modes:
                    continue
                tag = f"{repeat}{op}{connections}{mode[0]}"
                result, cpu = measure(system, running, op, connections, mode, args, tag)
                record = Record(repeat, system.name, op, connections, mode, result, cpu)
                results.records.append(record)
                errors = f", {result.errors} errors" if result.errors else ""
                per = record.cpu_us_per_request()
                cost = f"  CPU {per:6.0f} µs/req" if per is not None else ""
                _say(
                    f"  {system.name:10} {op:5} {connections:3} conns {mode:6}: "
                    f"{result.rps:9,.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
                    f"p99 {result.p99_ms:7.2f} ms{cost}{errors}"
                )


def _finish(results: Results, args: argparse.Namespace) -> None:
    results.save(args.json)
    section = render_section(results, _relative_plot(args))
    if results.records:
        plot(results, args.plot)
    update_doc(args.doc, section)
    _say("")
    _say(section)
    _say(f"written: {args.doc} ({HEADING}), {args.plot}, {args.json}")


def _relative_plot(args: argparse.Namespace) -> str:
    plot_path: Path = args.plot
    doc: Path = args.doc
    try:
        return os.path.relpath(plot_path, doc.parent)
    except ValueError:
        return str(args.plot)


def command_run(args: argparse.Namespace) -> None:
    """Every system, interleaved over the repeats; then the report."""
    results = Results(meta=machine_meta(args))
    previous = Results.load(args.json) if args.json.exists() else None
    if previous is not None and previous.memory:
        results.memory = previous.memory  # the memory run is made apart; keep it
    for name in args.systems:
        results.labels[name] = SYSTEMS[name](args.workdir).label
    for repeat in range(args.repeats):
        # Rotate the order, so that no system always runs first (or last) in a repeat.
        shift = repeat % len(args.systems)
        for name in args.systems[shift:] + args.systems[:shift]:
            system = _make(name, args)
            try:
                _run_system(system, repeat, args, results)
            finally:
                system.stop()
    _finish(results, args)


def _make(name: str, args: argparse.Namespace) -> System:
    if name == "raftdb":
        return Raftdb(args.workdir, args.raftdb_source, args.raftdb_launcher)
    if name == "raftdb-1":
        return Raftdb1(args.workdir, args.raftdb_source, args.raftdb_launcher)
    if name == "pysyncobj" and args.pysyncobj_args:
        return PySyncObjServer(args.workdir, args.pysyncobj_args.split())
    return SYSTEMS[name](args.workdir)


# -- memory ---------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (``ps -o rss``)."""
    out = subprocess.run(
        ["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, check=True
    ).stdout
    return int(out.strip()) / 1024


def command_memory(args: argparse.Namespace) -> None:
    """Write ``--keys`` keys through the leader in steps, RSS after each step."""
    system = Raftdb(args.workdir, args.raftdb_source, args.raftdb_launcher)
    steps: list[dict[str, object]] = []
    try:
        running = system.start()
        port = running.ports[running.leader]
        written = 0
        step = max(1, args.keys // args.steps)
        while written < args.keys:
            quota = min(step, args.keys - written)
            started = time.monotonic()
            goal = _commit_index(port) + quota
            result = run_wrk(
                [Target(port, args.connections)],
                "rest",
                "put",
                prefix=f"mem{written}-",
                duration_s=24 * 3600,
                quota=quota,
                log=system.dir / "wrk.log" if system.dir else None,
                stop_when=functools.partial(_reached, port, goal),
            )
            written += result.requests - result.errors
            _wait_applied(running)
            rss = {str(i + 1): round(rss_mib(pid), 1) for i, pid in enumerate(running.pids)}
            took = time.monotonic() - started
            steps.append({"keys": written, "rss_mib": rss, "seconds": round(took, 1)})
            _say(
                f"  {written:>9,} keys ({result.rps:,.0f} writes/s, {result.errors} errors): "
                f"RSS {rss} MiB"
            )
    finally:
        system.stop()
    results = Results.load(args.json) if args.json.exists() else Results()
    last = steps[-1]
    results.memory = {
        "keys": last["keys"],
        "rss_mib": last["rss_mib"],
        "how": f"wrk, {args.connections} connections to the leader, 100-byte values",
        "raftdb": _raftdb_version(args),
        "steps": steps,
    }
    _finish(results, args)


def _commit_index(port: int) -> int:
    status = http_json(port, "GET", "/v1/status")
    return int(status["commit_index"]) if status else 0


def _reached(port: int, goal: int) -> bool:
    return _commit_index(port) >= goal


def _wait_applied(running: Running) -> None:
    """Until every node has applied the leader's commit index (60 s at most)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        statuses = [http_json(port, "GET", "/v1/status") for port in running.ports]
        if all(s is not None for s in statuses):
            commit = max(int(s["commit_index"]) for s in statuses)
            if all(int(s["applied_index"]) >= commit for s in statuses):
                return
        time.sleep(0.2)


# -- PySyncObj tuning ------------------------------------------------------------------

#: PySyncObj server settings tried by ``tune-pysyncobj``.
PYSYNCOBJ_SETTINGS: Final = [
    "--append-period=0.001 --tick-period=0.001",
    "--append-period=0.003 --tick-period=0.003",
    "--append-period=0.003 --tick-period=0.01",
    "--append-period=0.01 --tick-period=0.005",
    "--append-period=0.05 --tick-period=0.05",
    "--no-batch --tick-period=0.003",
]


def command_tune(args: argparse.Namespace) -> None:
    """Each PySyncObj setting: writes and linearizable reads at ``--connections``."""
    rows = []
    for setting in PYSYNCOBJ_SETTINGS:
        system = PySyncObjServer(args.workdir, setting.split())
        try:
            running = system.start()
            system.preload(args.keys)
            figures = []
            for op in ("put", "get"):
                result, _ = measure(system, running, op, args.connections, "leader", args, op)
                figures.append(result)
            rows.append((setting, figures))
            _say(
                f"  {setting:45} writes {figures[0].rps:7,.0f}/s p99 {figures[0].p99_ms:6.1f} ms"
                f" | reads {figures[1].rps:7,.0f}/s p99 {figures[1].p99_ms:6.1f} ms"
            )
        finally:
            system.stop()
    best = max(rows, key=lambda row: row[1][0].rps)
    _say(f"best by writes/s: {best[0]}")


# -- transactions beside single PUTs (issue 12) -----------------------------------------


def command_txn(args: argparse.Namespace) -> None:
    """``put``, ``txn``, ``audit`` and ``get`` one after another, at each connection
    count, on a fresh raftdb cluster per repeat; the ratios within a repeat."""
    runs: dict[tuple[int, str], list[WrkResult]] = {}
    for repeat in range(args.repeats):
        system = _make("raftdb", args)
        try:
            running = system.start()
            system.preload(args.keys)
            _say(f"[repeat {repeat + 1}] raftdb: started, leader node {running.leader + 1}")
            for connections in args.connections:
                for op in TXN_OPS:
                    result, _ = measure(
                        system,
                        running,
                        op,
                        connections,
                        "leader",
                        args,
                        f"{repeat}{op}{connections}",
                    )
                    runs.setdefault((connections, op), []).append(result)
                    errors = f", {result.errors} errors" if result.errors else ""
                    _say(
                        f"  {op:5} {connections:3} conns: {result.rps:9,.0f} req/s  "
                        f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms{errors}"
                    )
        finally:
            system.stop()
    _say("")
    _say(
        "| connections | "
        + " | ".join(f"{op}/s · p50 / p99 ms" for op in TXN_OPS)
        + " | txn/put | audit/put | audit/get |"
    )
    _say("|---" * (len(TXN_OPS) + 4) + "|")
    for connections in args.connections:
        cells = []
        for op in TXN_OPS:
            results = runs[(connections, op)]
            cells.append(
                f"{statistics.median(r.rps for r in results):,.0f} · "
                f"{statistics.median(r.p50_ms for r in results):.2f} / "
                f"{statistics.median(r.p99_ms for r in results):.1f}"
            )
        for a, b in (("txn", "put"), ("audit", "put"), ("audit", "get")):
            ratios = [
                x.rps / y.rps
                for x, y in zip(runs[(connections, a)], runs[(connections, b)], strict=True)
                if y.rps
            ]
            cells.append(
                f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"
                if ratios
                else "—"
            )
        _say(f"| {connections} | " + " | ".join(cells) + " |")


# -- command line ---------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _names(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m benchmarks.cluster`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster",
        description="Cluster benchmark: raftdb beside etcd, PySyncObj and trivial apps (wrk).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="the benchmark (make bench)")
    memory = commands.add_parser("memory", help="RSS of raftdb's nodes after N keys")
    prof = commands.add_parser("profile", help="py-spy on a raftdb node under load")
    tune = commands.add_parser("tune-pysyncobj", help="PySyncObj batching settings compared")
    render = commands.add_parser("render", help="the section and plot from saved results")
    txn = commands.add_parser("txn", help="raftdb's PUTs beside transactions (issue 12)")
    pairs = commands.add_parser(
        "pair", help="two revisions of raftdb at the same time, B/A per round (make bench-pair)"
    )
    for sub in (run, memory, prof, tune, render, txn):
        sub.add_argument("--doc", type=Path, default=DOC, help="Markdown file to update")
        sub.add_argument("--plot", type=Path, default=PLOT, help="PNG to write")
        sub.add_argument("--json", type=Path, default=JSON, help="raw results (JSON)")
        sub.add_argument("--workdir", type=Path, default=None, help="for data dirs (tmp)")
        sub.add_argument("--no-setup", action="store_true", help="do not apt-get install")
        sub.add_argument("--duration", type=float, default=10.0, help="seconds per run")
        sub.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per run")
        sub.add_argument("--keys", type=int, default=1000, help="preloaded keys for reads")
        sub.add_argument(
            "--raftdb-commit",
            metavar="REV",
            help="run raftdb/ and plugins/ of this commit (git archive) instead of the tree",
        )
        sub.add_argument(
            "--raftdb-launcher",
            choices=["serve", "uvicorn"],
            default="serve",
            help="start nodes with 'raftdb serve' (default) or 'uvicorn raftdb.app:app'",
        )
    run.add_argument("--repeats", type=int, default=3)
    run.add_argument(
        "--systems", type=_names, default=list(SYSTEMS), help="comma-separated, in order"
    )
    run.add_argument("--ops", type=_names, default=list(OP_NAMES), help="put,get,stale")
    run.add_argument("--connections", type=_ints, default=[1, 16, 64])
    run.add_argument("--modes", type=_names, default=["leader", "spread"])
    run.add_argument(
        "--pysyncobj-args", default="", help="flags for pysyncobj_server (default: tuned)"
    )
    memory.set_defaults(keys=1_000_000)
    memory.add_argument("--steps", type=int, default=5, help="RSS measured after each step")
    memory.add_argument("--connections", type=int, default=64)
    tune.add_argument("--connections", type=int, default=64)
    txn.add_argument("--repeats", type=int, default=3)
    txn.add_argument("--connections", type=_ints, default=[1, 64])
    profile.add_arguments(prof)
    pair.add_arguments(pairs)
    pairs.add_argument("--workdir", type=Path, default=None, help="for the runs' scratch (tmp)")
    pairs.add_argument("--no-setup", action="store_true", help="do not apt-get install wrk")
    pairs.add_argument("--duration", type=float, default=5.0, help="seconds per load")
    pairs.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per load")
    pairs.add_argument("--keys", type=int, default=1000, help="preloaded keys for reads")
    pairs.add_argument("--raftdb-launcher", choices=["serve", "uvicorn"], default="serve")
    pairs.add_argument("--ops", type=_names, default=["put"], help="put,get,stale")
    pairs.add_argument("--connections", type=_ints, default=[1, 16, 64])
    pairs.add_argument("--modes", type=_names, default=["leader"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    for name in getattr(args, "systems", []):
        if name not in SYSTEMS:
            print(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}", file=sys.stderr)
            return 2
    for op in getattr(args, "ops", []):
        if op not in OP_NAMES:
            print(f"unknown op {op!r}; known: {', '.join(OP_NAMES)}", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    # Also when started with SIGINT ignored (a background job of a script): Ctrl-C
    # or kill -INT must still stop everything.
    signal.signal(signal.SIGINT, _on_signal)
    # Data directories go under a fresh directory, removed at the end (on disk:
    # fsync must mean what it means, so not on a tmpfs).
    args.workdir = Path(tempfile.mkdtemp(prefix="raftdb-bench-", dir=args.workdir))
    try:
        if args.command == "render":
            _finish(Results.load(args.json), args)
            return 0
        if not args.no_setup:
            setup(("wrk",) if args.command in ("txn", "pair") else tuple(APT_PACKAGES))
        export_source(args)
        commands = {
            "run": command_run,
            "memory": command_memory,
            "profile": profile.command_profile,
            "tune-pysyncobj": command_tune,
            "txn": command_txn,
            "pair": pair.command_pair,
        }
        commands[args.command](args)
        return 0
    except BenchError as exc:
        print(f"benchmark: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"benchmark: interrupted ({exc or 'SIGINT'}); stopped everything", file=sys.stderr)
        return 130
    finally:
        ProcessSet.stop_everything()
        shutil.rmtree(args.workdir, ignore_errors=True)
