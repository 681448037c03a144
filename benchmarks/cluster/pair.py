"""``python -m benchmarks.cluster pair`` (``make bench-pair A=rev B=rev``): two revisions at once.

On this shared 2-core machine two runs of the same revision, one after the
other, differ by more than most levers do: main against itself gave writes/s
ratios from 0.6 to 1.9 in single rounds (``docs/benchmarks.md``, sessions
10–11). Two clusters run **at the same time**, each under the same wrk load,
see the same machine instead. So each round starts ``benchmarks.cluster run``
twice together, once per revision (``--raftdb-commit``, raftdb only, one
repeat), alternating which starts first; the round gives B's figure over A's
for every load they both measured: requests/s, the cluster's CPU per answer
and p99. The summary is the median and the range over the rounds.

Each cluster has about half the machine, so the absolute rates are lower than
``make bench``'s; read the ratios. A pair of one revision with itself (``A``
= ``B``) is the calibration: how far apart two sides of a round fall with no
change at all. Every round's results are kept in ``--out``, with the summary
(``summary.md`` and ``summary.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from benchmarks.cluster.procs import BenchError
from benchmarks.cluster.report import Record, Results

__all__ = ["Ratio", "Row", "add_arguments", "command_pair", "ratios", "render", "summarise"]

REPO: Final = Path(__file__).resolve().parents[2]
#: How long a child run may take beyond its measured time (start, preload, stop).
SLACK_S: Final = 300.0
#: (op, mode, connections): one load both runs of a round measured.
Load = tuple[str, str, int]


@dataclass(frozen=True)
class Ratio:
    """One round's B/A figures for one load (``None``: not measured on a side)."""

    rps: float
    cpu: float | None
    p99: float
    a_rps: float
    b_rps: float
    a_cpu_us: float | None
    b_cpu_us: float | None


@dataclass(frozen=True)
class Row:
    """One load over all rounds: medians, ranges and how many rounds B was ahead."""

    op: str
    mode: str
    connections: int
    rounds: int
    rps: tuple[float, float, float]  # median, min, max
    cpu: tuple[float, float, float] | None
    p99: tuple[float, float, float]
    b_faster: int  # rounds with B's requests/s above A's
    b_cheaper: int  # rounds with B's CPU per answer below A's
    a_rps: float  # medians of the absolute figures
    b_rps: float
    a_cpu_us: float | None
    b_cpu_us: float | None


def _by_load(results: Results) -> dict[Load, Record]:
    """The run of each load (the first repeat of it: a pair round runs one)."""
    out: dict[Load, Record] = {}
    for record in results.records:
        out.setdefault((record.op, record.mode, record.connections), record)
    return out


def ratios(a: Results, b: Results) -> dict[Load, Ratio]:
    """B/A for every load both rounds measured with answers on both sides."""
    mine, theirs = _by_load(a), _by_load(b)
    out: dict[Load, Ratio] = {}
    for load, ra in mine.items():
        rb = theirs.get(load)
        if rb is None or ra.result.rps <= 0 or rb.result.rps <= 0:
            continue
        cpu_a, cpu_b = ra.cpu_us_per_request(), rb.cpu_us_per_request()
        out[load] = Ratio(
            rps=rb.result.rps / ra.result.rps,
            cpu=cpu_b / cpu_a if cpu_a and cpu_b else None,
            p99=rb.result.p99_ms / ra.result.p99_ms if ra.result.p99_ms > 0 else float("nan"),
            a_rps=ra.result.rps,
            b_rps=rb.result.rps,
            a_cpu_us=cpu_a,
            b_cpu_us=cpu_b,
        )
    return out


def _spread(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _median(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarise(rounds: Sequence[Mapping[Load, Ratio]]) -> list[Row]:
    """Each load's ratios over the rounds that measured it, in load order."""
    loads = sorted({load for one in rounds for load in one})
    rows = []
    for op, mode, connections in loads:
        seen = [one[(op, mode, connections)] for one in rounds if (op, mode, connections) in one]
        cpus = [r.cpu for r in seen if r.cpu is not None]
        rows.append(
            Row(
                op=op,
                mode=mode,
                connections=connections,
                rounds=len(seen),
                rps=_spread([r.rps for r in seen]),
                cpu=_spread(cpus) if cpus else None,
                p99=_spread([r.p99 for r in seen]),
                b_faster=sum(r.rps > 1 for r in seen),
                b_cheaper=sum(c < 1 for c in cpus),
                a_rps=statistics.median(r.a_rps for r in seen),
                b_rps=statistics.median(r.b_rps for r in seen),
                a_cpu_us=_median(r.a_cpu_us for r in seen),
                b_cpu_us=_median(r.b_cpu_us for r in seen),
            )
        )
    return rows


def _cell(spread: tuple[float, float, float] | None) -> str:
    if spread is None:
        return "—"
    median, low, high = spread
    return f"{median:.2f} ({low:.2f}–{high:.2f})"


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} µs"


def render(rows: Sequence[Row], a: str, b: str) -> str:
    """The summary as a Markdown table: B over A, per load."""
    lines = [
        f"B = {b} over A = {a}, both clusters at the same time; median (range) over rounds.",
        "",
        "| load | rounds | requests/s | B faster | CPU per answer | B cheaper | p99 "
        "| A: requests/s, CPU | B: requests/s, CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.op} {row.mode} {row.connections} | {row.rounds} | {_cell(row.rps)} "
            f"| {row.b_faster}/{row.rounds} | {_cell(row.cpu)} "
            f"| {row.b_cheaper}/{row.rounds} | {_cell(row.p99)} "
            f"| {row.a_rps:,.0f}/s, {_us(row.a_cpu_us)} | {row.b_rps:,.0f}/s, {_us(row.b_cpu_us)} |"
        )
    return "\n".join(lines) + "\n"


# -- running ----------------------------------------------------------------------------


def _run_command(args: argparse.Namespace, rev: str, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.cluster",
        "run",
        "--no-setup",
        "--systems",
        "raftdb",
        "--ops",
        ",".join(args.ops),
        "--connections",
        ",".join(str(c) for c in args.connections),
        "--modes",
        ",".join(args.modes),
        "--repeats",
        "1",
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--keys",
        str(args.keys),
        "--raftdb-commit",
        rev,
        "--raftdb-launcher",
        args.raftdb_launcher,
        "--workdir",
        str(args.workdir),
        "--json",
        str(out),
        "--doc",
        "/dev/null",
        "--plot",
        "/dev/null",
    ]


def _stop(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """Stop runs still going: SIGTERM (a run then stops its clusters), then SIGKILL."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _round(args: argparse.Namespace, number: int, out: Path) -> dict[Load, Ratio]:
    """Run A and B together once; their ratios."""
    sides = {"a": args.a, "b": args.b}
    order = ["a", "b"] if number % 2 else ["b", "a"]
    loads = len(args.ops) * len(args.connections) * len(args.modes)
    budget = loads * (args.duration + args.warmup + 10) + SLACK_S
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {}
    try:
        for side in order:
            logs[side] = (out / f"r{number}-{side}.log").open("wb")
            procs[side] = subprocess.Popen(
                _run_command(args, sides[side], out / f"r{number}-{side}.json"),
                cwd=REPO,
                stdout=logs[side],
                stderr=subprocess.STDOUT,
            )
        for side in order:
            try:
                code = procs[side].wait(timeout=budget)
            except subprocess.TimeoutExpired:
                raise BenchError(f"round {number}: {side} ran over {budget:.0f} s") from None
            if code != 0:
                raise BenchError(
                    f"round {number}: the run of {sides[side]} failed ({code}); "
                    f"see {out / f'r{number}-{side}.log'}"
                )
    finally:
        _stop(procs.values())
        for log in logs.values():
            log.close()
    return ratios(Results.load(out / f"r{number}-a.json"), Results.load(out / f"r{number}-b.json"))


def _resolve(rev: str) -> str:
    """``rev`` as a short commit id (so that the summary names what ran)."""
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"not a commit: {rev!r}")
    return done.stdout.strip()


def command_pair(args: argparse.Namespace) -> None:
    """Run the rounds, print and keep the summary."""
    args.a, args.b = _resolve(args.a), _resolve(args.b)
    out: Path = args.out or REPO / ".benchmarks" / f"pair-{args.a}-{args.b}"
    out.mkdir(parents=True, exist_ok=True)
    rounds = []
    for number in range(1, args.rounds + 1):
        one = _round(args, number, out)
        rounds.append(one)
        for (op, mode, connections), r in sorted(one.items()):
            cpu = "—" if r.cpu is None else f"{r.cpu:.2f}"
            print(
                f"round {number}: {op} {mode} {connections:3}: requests/s ×{r.rps:.2f} "
                f"({r.a_rps:,.0f} → {r.b_rps:,.0f}), CPU per answer ×{cpu}, p99 ×{r.p99:.2f}",
                flush=True,
            )
    rows = summarise(rounds)
    table = render(rows, args.a, args.b)
    (out / "summary.md").write_text(table)
    (out / "summary.json").write_text(
        json.dumps({"a": args.a, "b": args.b, "rows": [asdict(row) for row in rows]}, indent=1)
        + "\n"
    )
    print()
    print(table, end="")
    print(f"\nkept: {out}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``pair`` command's own options (the runner adds the loads' and the common ones)."""
    parser.add_argument("--a", required=True, metavar="REV", help="the base revision")
    parser.add_argument("--b", required=True, metavar="REV", help="the revision measured")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None, help="where rounds and summary go")
