"""Concurrent clients against real processes while nodes are killed and paused; the
recorded history must be linearizable (``raftdb.testing.linearizability``).

Clients write unique values, read (linearizable, the default) and delete, on a
few keys, through random nodes. How each answer enters the history:

- ``204`` / ``200`` / ``404``: a completed operation with that output;
- a write's ``503``: dropped, as the contract says nothing was done;
- a write's ``504``, a timeout or a connection lost mid-request: unknown outcome
  (it may take effect, at any later time, or never);
- a refused connection (the node is down): dropped, the request never left;
- a read that failed in any way: dropped (reads have no effect).

The nemesis keeps a majority up: it kills (-9) a random node and restarts it, or
pauses the leader (SIGSTOP, as a partition) and resumes it.
"""

from __future__ import annotations

import random
import threading
import time

import httpx
import pytest

from raftdb.testing.linearizability import (
    Delete,
    Get,
    HistoryRecorder,
    KVInput,
    KVModel,
    KVOutput,
    Put,
    check_linearizability,
)
from tests.integration.conftest import ClusterFactory
from tests.integration.harness import ProcessCluster

KEYS = [f"chaos-{i}" for i in range(6)]
CLIENTS = 4
RUN_SECONDS = 12.0


class Clients:
    """``CLIENTS`` threads issuing operations and recording them."""

    def __init__(self, c: ProcessCluster, seed: int) -> None:
        self.c = c
        self.seed = seed
        self.lock = threading.Lock()
        self.rec: HistoryRecorder[KVInput, KVOutput] = HistoryRecorder(time.monotonic)
        self.halt = threading.Event()
        self.counts = {"ok": 0, "unknown": 0, "failed": 0}
        self.threads = [
            threading.Thread(target=self.run, args=(n,), name=f"client-{n}", daemon=True)
            for n in range(CLIENTS)
        ]

    def _invoke(self, client: int, op: KVInput) -> int:
        with self.lock:
            return self.rec.invoke(client, op)

    def _complete(self, handle: int, output: KVOutput) -> None:
        with self.lock:
            self.rec.complete(handle, output)
            self.counts["ok"] += 1

    def _unknown(self, handle: int) -> None:
        with self.lock:
            self.rec.unknown(handle)
            self.counts["unknown"] += 1

    def _fail(self, handle: int) -> None:
        with self.lock:
            self.rec.fail(handle)
            self.counts["failed"] += 1

    def run(self, client: int) -> None:
        rng = random.Random(self.seed * 100 + client)
        urls = {i: n.api_url for i, n in self.c.nodes.items()}
        n = 0
        with httpx.Client(timeout=httpx.Timeout(3.0, connect=1.0)) as http:
            while not self.halt.is_set():
                n += 1
                node = rng.choice(sorted(urls))
                key = rng.choice(KEYS)
                url = f"{urls[node]}/v1/kv/{key}"
                roll = rng.random()
                op: KVInput
                if roll < 0.5:
                    op = Get(key)
                elif roll < 0.9:
                    op = Put(key, f"c{client}-{n}")
                else:
                    op = Delete(key)
                handle = self._invoke(client, op)
                try:
                    if isinstance(op, Get):
                        r = http.get(url)
                    elif isinstance(op, Put):
                        r = http.put(url, content=str(op.value).encode())
                    else:
                        r = http.delete(url)
                except httpx.ConnectError:
                    self._fail(handle)  # never reached a server
                    self.halt.wait(0.02)
                    continue
                except httpx.HTTPError:
                    if isinstance(op, Get):
                        self._fail(handle)
                    else:
                        self._unknown(handle)
                    continue
                self._record(handle, op, r)

    def _record(self, handle: int, op: KVInput, r: httpx.Response) -> None:
        status = r.status_code
        if isinstance(op, Get):
            if status == 200:
                self._complete(handle, r.content.decode())
            elif status == 404:
                self._complete(handle, None)
            else:
                self._fail(handle)
            return
        if status == 204:
            if isinstance(op, Delete):
                existed = r.headers.get("x-raftdb-existed")
                self._complete(handle, None if existed is None else existed == "true")
            else:
                self._complete(handle, None)
        elif status == 503:
            self._fail(handle)
            self.halt.wait(0.05)
        elif status == 504:
            self._unknown(handle)
        else:
            raise AssertionError(f"unexpected answer {status} {r.text} to {op}")

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.halt.set()
        for t in self.threads:
            t.join(15)
        assert not any(t.is_alive() for t in self.threads), "a client thread hung"


@pytest.mark.deadline(120)
def test_history_under_kills_and_pauses_is_linearizable(cluster_factory: ClusterFactory) -> None:
    c = cluster_factory(3, tick_ms=25, election_ticks=10, settings={"request_timeout_s": 2.0})
    c.start_all()
    c.wait_leader()
    rng = random.Random(7)
    clients = Clients(c, seed=7)
    clients.start()
    try:
        deadline = time.monotonic() + RUN_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.5)  # let the clients work between faults
            leader = c.leader()
            if rng.random() < 0.5 or leader is None:
                victim = rng.choice([1, 2, 3])
                c.kill(victim)
                time.sleep(rng.uniform(0.3, 1.5))
                c.start(victim)
            else:
                c.pause(leader)
                time.sleep(rng.uniform(0.3, 1.5))
                c.resume(leader)
            c.wait_leader(timeout=20.0)
    finally:
        clients.stop()

    history = clients.rec.history()
    counts = clients.counts
    assert counts["ok"] > 200, counts  # the cluster did serve through the faults
    result = check_linearizability(KVModel(), history, timeout=60.0)
    assert result.ok, result.describe()
