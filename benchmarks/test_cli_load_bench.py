"""``raftdb load`` beside one put per key (issue 13), on a real 3-node cluster.

A 3-node cluster of ``raftdb serve`` processes (LevelDB, fsync on, default
settings) on free 127.0.0.1 ports, started here (the benchmarks do not import
``tests``) and always stopped.
Each round writes :data:`KEYS` new keys with 100-byte values three ways, one
after the other so that their ratios come from the same minute:

- ``put``: one :meth:`raftdb.client.Client.put` per key, one after another (the
  fastest a one-key-at-a-time script gets: no process start per key);
- ``put_c4``: the same from 4 threads sharing the client (as many in flight as
  ``load``'s default ``--jobs``);
- ``load``: ``raftdb load FILE`` run in this process (``raftdb.cli.main``):
  transactions of 128 puts, 4 in flight.

``extra_info``: the median rate of each (keys/s) and the median over rounds of
``load/put`` and ``load/put_c4``. A ``raftdb put`` process per key is slower
still by the interpreter's start (about 0.3 s a key here), so it is not run.

No timing assertions: the test checks the outcome (every key written).

Run: ``pytest benchmarks/test_cli_load_bench.py --benchmark-only``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import pytest

import raftdb.cli
from raftdb.client import Client, RaftdbError
from raftdb.testing.ports import free_ports

#: Keys written by each way, each round.
KEYS: Final = 2000
VALUE: Final = "v" * 100
ROUNDS: Final = 3


#: Longest the cluster may take to elect a leader.
START_TIMEOUT: Final = 30.0


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A started 3-node cluster's API URLs (comma-separated)."""
    root = tmp_path_factory.mktemp("load-bench")
    ports = free_ports(6)
    peers = ",".join(f"http://127.0.0.1:{p}" for p in ports[3:])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTDB_")}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, port in enumerate(ports[:3], start=1):
            argv = [sys.executable, "-m", "raftdb.cli", "serve", f"--id={i}"]
            argv += [f"--cluster={peers}", "--host=127.0.0.1", f"--port={port}"]
            argv += [f"--data-dir={root / f'data-{i}'}", "--log-level=warning"]
            with (root / f"node-{i}.log").open("wb") as log:
                procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env))
        urls = ",".join(f"http://127.0.0.1:{p}" for p in ports[:3])
        with Client(urls, timeout=2.0) as client:
            deadline = time.monotonic() + START_TIMEOUT
            while True:  # a write answers once there is a leader
                try:
                    client.put("bench/ready", "1")
                    break
                except RaftdbError:
                    if time.monotonic() > deadline:
                        raise
        yield urls
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _puts(client: Client, keys: list[str], threads: int) -> float:
    start = time.perf_counter()
    if threads == 1:
        for key in keys:
            client.put(key, VALUE)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda k: client.put(k, VALUE), keys))
    return len(keys) / (time.perf_counter() - start)


def _load(endpoints: str, keys: list[str], path: Path) -> float:
    path.write_text("".join(json.dumps({"key": k, "value": VALUE}) + "\n" for k in keys))
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = raftdb.cli.main(["load", str(path), "--endpoints", endpoints, "-w", "json"])
    seconds = time.perf_counter() - start
    assert status == 0, err.getvalue()
    assert json.loads(out.getvalue())["keys"] == len(keys)
    return len(keys) / seconds


def test_load_vs_puts(benchmark: Any, endpoints: str, tmp_path: Path) -> None:
    rates: dict[str, list[float]] = {"put": [], "put_c4": [], "load": []}
    done: list[int] = []

    def one_round() -> None:
        r = len(done)
        done.append(r)
        with Client(endpoints) as client:
            client.put("warm", "up")  # the leader found before the clock starts
            rates["put"].append(_puts(client, [f"put/{r}/{i}" for i in range(KEYS)], 1))
            rates["put_c4"].append(_puts(client, [f"c4/{r}/{i}" for i in range(KEYS)], 4))
        rates["load"].append(
            _load(endpoints, [f"load/{r}/{i}" for i in range(KEYS)], tmp_path / f"{r}.jsonl")
        )

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    with Client(endpoints) as client:
        for way in ("put", "c4", "load"):
            assert len(list(client.list(f"{way}/{done[-1]}/", page_size=1000))) == KEYS
    if len(done) > 1:  # the warm-up round is not counted
        rates = {way: v[1:] for way, v in rates.items()}
    medians = {f"{way}_keys_per_s": round(statistics.median(v), 1) for way, v in rates.items()}
    runs = list(zip(rates["load"], rates["put"], rates["put_c4"], strict=True))
    benchmark.extra_info.update(
        medians,
        load_over_put=round(statistics.median(lo / p for lo, p, _ in runs), 2),
        load_over_put_c4=round(statistics.median(lo / c for lo, _, c in runs), 2),
    )
    print("\n", json.dumps(benchmark.extra_info))
