"""``python -m benchmarks.multicore``: does a node gain from HTTP in worker processes?

Issue 15 asks for an evaluation of "a node that uses more than one core where
it has them (for example HTTP parsed in worker processes that feed the Raft
process in batches over a local socket)", on the one-member case. This runs it:

- **single**: a one-member raftdb node (LevelDB log and state machine, fsync
  on), wrk on its own port: today's server, everything on one event loop;
- **front-N**: the same node process, wrk on ``uvicorn benchmarks.multicore.front:app
  --workers N``: each worker runs raftdb's own KV fast path (the same HTTP code
  per request) and sends the calls over a Unix socket to the node process
  (:mod:`benchmarks.multicore.ingest`), many per write, answers batched.

Each repeat starts a fresh node and runs the cases in a rotating order. Before
measuring a front, the runner checks that it answers what the node answers
(status and body of a ``PUT`` and a ``GET``). It reports, per case, the median
rate with the range over repeats, p99 latency, and the CPU time per request of
the node process and of the workers from ``/proc`` (utime + stime; wrk's own
is left out, as it is the same load for every case).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.cluster.procs import (
    HOST,
    BenchError,
    ProcessSet,
    free_ports,
    http_request,
    wait_until,
)
from benchmarks.cluster.wrk import Op, Target, run_wrk

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    """One measured run of one case."""

    case: str
    repeat: int
    rps: float
    p99_ms: float
    errors: int
    node_us: float  # CPU µs per answered request, node process
    front_us: float  # CPU µs per answered request, all worker processes


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _children(pid: int) -> list[int]:
    """The direct children of ``pid`` (uvicorn's workers)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(c) for c in text]
    return out


def _node_env(directory: Path, peer_port: int) -> dict[str, str]:
    return dict(
        os.environ,
        RAFTDB_ID="1",
        RAFTDB_CLUSTER=f"http://{HOST}:{peer_port}",
        RAFTDB_DATA_DIR=str(directory / "node1"),
        RAFTDB_STORAGE="leveldb",
        RAFTDB_STATE_MACHINE="leveldb",
        RAFTDB_SYNC="true",
        PYTHONPATH=os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]),
    )


def _ready(port: int) -> bool | None:
    status, _ = http_request(port, "GET", "/readyz", timeout=2.0)
    return True if status == 200 else None


def _same_answers(node_port: int, front_port: int) -> None:
    """The front answers a PUT and a GET as the node does (status and body)."""
    for port in (node_port, front_port):
        status, body = http_request(port, "PUT", f"/v1/kv/check-{port}", b"value")
        if status != 204:
            raise BenchError(f"PUT through :{port} answered {status} {body!r}")
    direct = http_request(node_port, "GET", f"/v1/kv/check-{front_port}")
    front = http_request(front_port, "GET", f"/v1/kv/check-{front_port}")
    if direct != front:
        raise BenchError(f"the front answers {front!r}, the node {direct!r}")


def _preload(port: int, count: int) -> None:
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    for i in range(count):
        status, body = http_request(port, "PUT", f"/v1/kv/r{i:06d}", b"v" * 100, conn=conn)
        if status != 204:
            raise BenchError(f"preload answered {status} {body!r}")
    conn.close()


def _measure(
    case: str,
    repeat: int,
    port: int,
    node_pid: int,
    worker_pids: list[int],
    args: argparse.Namespace,
    workdir: Path,
) -> Sample:
    op: Op = args.op
    run_wrk(
        [Target(port, args.connections)],
        "rest",
        op,
        prefix=f"warm-{case}-{repeat}-",
        duration_s=args.warmup,
        nkeys=args.keys,
        log=workdir / "wrk.log",
    )
    before = [_cpu_seconds(p) for p in (node_pid, *worker_pids)]
    result = run_wrk(
        [Target(port, args.connections)],
        "rest",
        op,
        prefix=f"{case}-{repeat}-",
        duration_s=args.duration,
        nkeys=args.keys,
        log=workdir / "wrk.log",
    )
    after = [_cpu_seconds(p) for p in (node_pid, *worker_pids)]
    spent = [a - b for a, b in zip(after, before, strict=True)]
    answered = max(1, result.requests - result.errors)
    return Sample(
        case,
        repeat,
        result.rps,
        result.p99_ms,
        result.errors,
        spent[0] / answered * 1e6,
        sum(spent[1:]) / answered * 1e6,
    )


def _run_repeat(repeat: int, args: argparse.Namespace, root: Path) -> list[Sample]:
    workdir = root / f"repeat-{repeat}"
    workdir.mkdir()
    node_port, peer_port, *front_ports = free_ports(2 + len(args.workers))
    socket = workdir / "ingest.sock"
    env = _node_env(workdir, peer_port)
    samples = []
    with ProcessSet("multicore") as procs:
        node = procs.start(
            "node",
            [
                sys.executable,
                "-m",
                "benchmarks.multicore.node_process",
                f"--port={node_port}",
                f"--socket={socket}",
            ],
            log=workdir / "node.log",
            env=env,
        )
        wait_until("the node ready", lambda: _ready(node_port), 60, procs.check_running)
        if args.op != "put":
            _preload(node_port, args.keys)
        cases: list[tuple[str, int]] = [("single", 0)] + [(f"front-{n}", n) for n in args.workers]
        shift = repeat % len(cases)
        for case, workers in cases[shift:] + cases[:shift]:
            if workers == 0:
                samples.append(_measure(case, repeat, node_port, node.pid, [], args, workdir))
                continue
            front_port = front_ports[args.workers.index(workers)]
            with ProcessSet(case) as fronts:
                master = fronts.start(
                    case,
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "benchmarks.multicore.front:app",
                        f"--host={HOST}",
                        f"--port={front_port}",
                        f"--workers={workers}",
                        "--log-level=warning",
                        "--no-access-log",
                    ],
                    log=workdir / f"{case}.log",
                    env=dict(env, RAFTDB_INGEST_SOCKET=str(socket)),
                )

                def up(
                    master_pid: int = master.pid, want: int = workers, port: int = front_port
                ) -> list[int] | None:
                    # uvicorn runs one worker in its own process, more under a supervisor.
                    pids = _children(master_pid) if want > 1 else [master_pid]
                    if len(pids) < want:
                        return None
                    status, _ = http_request(port, "PUT", "/v1/kv/up", b"x", timeout=2.0)
                    return pids if status == 204 else None

                pids = wait_until(f"{case} serving", up, 60, fronts.check_running)
                _same_answers(node_port, front_port)
                samples.append(_measure(case, repeat, front_port, node.pid, pids, args, workdir))
    return samples


def _report(samples: list[Sample]) -> str:
    lines = [
        "| case | requests/s (median, range) | p99 ms | node CPU µs/req | workers CPU µs/req |",
        "|---|---|---|---|---|",
    ]
    cases = list(dict.fromkeys(s.case for s in samples))
    for case in cases:
        mine = [s for s in samples if s.case == case]
        rps = [s.rps for s in mine]
        lines.append(
            f"| {case} | {statistics.median(rps):,.0f} ({min(rps):,.0f}–{max(rps):,.0f}) "
            f"| {statistics.median(s.p99_ms for s in mine):.1f} "
            f"| {statistics.median(s.node_us for s in mine):.0f} "
            f"| {statistics.median(s.front_us for s in mine):.0f} |"
        )
    single = {s.repeat: s.rps for s in samples if s.case == "single"}
    for case in cases[1:]:
        ratios = [
            s.rps / single[s.repeat] for s in samples if s.case == case and single.get(s.repeat)
        ]
        if ratios:
            lines.append(
                f"\n{case} / single, same repeat: median {statistics.median(ratios):.2f} "
                f"({min(ratios):.2f}–{max(ratios):.2f})"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.multicore", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--op", choices=["put", "get", "stale"], default="put")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keys", type=int, default=1000, help="preloaded keys for reads")
    parser.add_argument("--out", type=Path, default=None, help="also write the samples (JSON)")
    args = parser.parse_args()
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="raftdb-multicore-") as tmp:
        try:
            for repeat in range(args.repeats):
                samples += _run_repeat(repeat, args, Path(tmp))
                print(
                    f"repeat {repeat}: "
                    + ", ".join(f"{s.case} {s.rps:,.0f}/s" for s in samples if s.repeat == repeat),
                    flush=True,
                )
        except BenchError as exc:
            print(f"benchmarks.multicore: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        finally:
            ProcessSet.stop_everything()
    print(f"\n{args.op}, {args.connections} connections, {time.strftime('%Y-%m-%d %H:%M')}")
    print(_report(samples))
    if args.out:
        args.out.write_text(json.dumps([asdict(s) for s in samples], indent=1))


if __name__ == "__main__":
    main()
