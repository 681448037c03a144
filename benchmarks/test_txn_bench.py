"""Transaction throughput beside single PUTs (issue 12).

Three layers, each compared with the plain ``PUT`` of the same layer, since the
ratios are what survives a shared, noisy machine:

- ``test_apply[sm-shape]``: the state machine's apply (the
  :class:`~raftdb.kv.applier.Applier` over the memory backend, and over
  LevelDB with its one fsync per batch), one batch of :data:`WRITES` writes of
  new keys with 100-byte values per round, cut into entries as ``shape``
  says: ``put``: one ``PUT`` entry per write; ``txn1``/``txn2``/``txn8``: one
  ``TXN`` entry of 1, 2 or 8 puts (no compares); ``get2``: a get-only
  transaction of 2 existing keys (an audit), :data:`WRITES` / 2 entries.
  ``extra_info``: ``us_per_write`` (per put; for ``get2`` per get) and
  ``us_per_entry``, from the median round.
- ``test_http[shape]``: the HTTP layer alone, 100 requests per round over a
  stub node that answers at once: ``put`` (``PUT /v1/kv/{key}``, the raw-ASGI
  fast path), ``txn2`` (``POST /v1/txn`` with a 2-put transfer: two ``exists``
  compares, two puts) and ``get2`` (``POST /v1/txn``, 2 gets). What a
  transaction's JSON costs the node's event loop beside a ``PUT``.
- ``test_cluster[C]``: a 3-node cluster (LevelDB, fsync on, default
  settings) of in-process nodes (``raftdb.node.Node``, as
  ``tests/node/cluster.py`` runs them) on free 127.0.0.1 ports, one uvloop
  loop, ``C`` concurrent clients calling the leader's service methods (no
  HTTP: the previous benchmark gives that part). A round runs four phases
  one after the other, :data:`CLUSTER_OPS` operations each, so that their
  ratios come from the same minute: ``put`` (a single put of one of
  :data:`ACCOUNTS` preloaded keys), ``transfer`` (a transaction: both of two
  accounts exist → put both), ``audit`` (a transaction of two gets: a log
  entry, like any transaction) and ``get`` (a linearizable single-key read,
  which is not a log entry). ``extra_info``: the median rate of each
  (operations/s) and the median over rounds of ``transfer/put``,
  ``audit/put`` and ``audit/get``.

No timing assertions: the tests check the outcomes (every write applied, every
transaction succeeded).

Run: ``pytest benchmarks/test_txn_bench.py --benchmark-only``. Figures go to
``docs/benchmarks.md`` ("Watch and transactions (issue 12)").
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any, Final, cast

import pytest
import uvloop

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from raftdb.kv.commands import Command, CommandStatus, KVResult
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.kv.txn import CmpOp, Compare, Target, Txn, TxnOp, TxnOpResult
from raftdb.node import Node
from raftdb.node.handle import NodeHandle, TxnAnswer, WriteResult
from raftdb.raft.messages import Entry, EntryType
from raftdb.testing.ports import free_ports
from raftdb_leveldb import LevelDBStateMachine

VALUE: Final = b"v" * 100
#: Writes per apply round.
WRITES: Final = 1024
#: How the writes of a round are cut into entries: name -> puts per TXN entry (0: PUTs).
SHAPES: Final = {"put": 0, "txn1": 1, "txn2": 2, "txn8": 8, "get2": -2}
#: Preloaded keys of the cluster benchmark (the "accounts").
ACCOUNTS: Final = 1_000
#: Operations per phase of a cluster round, by concurrency.
CLUSTER_OPS: Final = {1: 100, 64: 1_000}
CLUSTER = ["http://127.0.0.1:12379"]


def median_round(benchmark: Any) -> float | None:
    """The median round in seconds; ``None`` under ``--benchmark-disable`` (one
    unmeasured round: the outcomes are still checked, no figures are made)."""
    stats = benchmark.stats
    return None if stats is None else float(stats.stats.median)


def _exists(key: bytes) -> Compare:
    return Compare(key, Target.EXISTS, CmpOp.EQ, True)


def transfer(a: bytes, b: bytes) -> Txn:
    """A transfer between two accounts: both exist, so both are written."""
    return Txn(compare=(_exists(a), _exists(b)), success=(TxnOp.put(a, VALUE), TxnOp.put(b, VALUE)))


def audit(a: bytes, b: bytes) -> Txn:
    """Two balances read in one transaction (one log entry, no write)."""
    return Txn(success=(TxnOp.get(a), TxnOp.get(b)))


# -- the state machine's apply -------------------------------------------------------------


def _key(i: int) -> bytes:
    return b"user/%09d" % (i * 7_919 % 1_000_000_007 % 1_000_000_000)


def _entries(shape: str, first_write: int, first_index: int) -> tuple[list[Entry], int]:
    """The entries of one round, and how many writes (or gets) they hold."""
    per = SHAPES[shape]
    keys = [_key(i) for i in range(first_write, first_write + WRITES)]
    if per == 0:
        datas = [Command.put(k, VALUE).encode() for k in keys]
    elif per > 0:
        datas = [
            Command.txn(
                Txn(success=tuple(TxnOp.put(k, VALUE) for k in keys[i : i + per])).encode()
            ).encode()
            for i in range(0, WRITES, per)
        ]
    else:  # gets of keys the earlier rounds wrote (the first 2 * WRITES of them)
        datas = [
            Command.txn(audit(_key(i % WRITES), _key(i % WRITES + 1)).encode()).encode()
            for i in range(0, WRITES, -per)
        ]
    entries = [Entry(1, first_index + n, EntryType.NORMAL, data) for n, data in enumerate(datas)]
    return entries, WRITES


def _machine(kind: str, path: Path) -> Any:
    if kind == "memory":
        return MemoryStateMachine()
    return LevelDBStateMachine(path, sync=True)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("kind", ["memory", "leveldb"])
def test_apply(benchmark: Any, tmp_path: Path, kind: str, shape: str) -> None:
    machine = _machine(kind, tmp_path / kind)
    # Keys to read for get2: written before the rounds.
    preload = [
        Entry(1, i + 1, EntryType.NORMAL, Command.put(_key(i), VALUE).encode())
        for i in range(WRITES + 1)
    ]
    machine.apply(preload)
    state = {"write": WRITES + 1, "index": len(preload) + 1, "entries": 0}
    results: list[Any] = []

    def setup() -> tuple[tuple[list[Entry]], dict[str, Any]]:
        entries, writes = _entries(shape, state["write"], state["index"])
        state["write"] += writes
        state["index"] += len(entries)
        state["entries"] = len(entries)
        return (entries,), {}

    def apply(entries: list[Entry]) -> None:
        results.extend(machine.apply(entries))

    try:
        benchmark.pedantic(apply, setup=setup, rounds=100, warmup_rounds=2)
        assert machine.applied_index == state["index"] - 1
    finally:
        machine.close()
    assert all(isinstance(r, KVResult) and r.status == CommandStatus.OK for r in results)
    if SHAPES[shape]:
        assert all(r.txn is not None and r.txn.succeeded for r in results)
    if shape == "get2":
        assert all(all(op.found for op in r.txn.results) for r in results)
    median = median_round(benchmark)
    if median is None:
        return
    benchmark.extra_info.update(
        entries=state["entries"],
        us_per_write=round(median / WRITES * 1e6, 3),
        us_per_entry=round(median / state["entries"] * 1e6, 3),
    )


# -- the HTTP layer ------------------------------------------------------------------------


class _StubNode:
    """Answers at once: the HTTP layer's own cost is what is measured."""

    id = 1

    async def put(self, key: bytes, value: bytes, **_: Any) -> WriteResult:
        return WriteResult(7, True, False)

    async def txn(self, txn: Txn, **_: Any) -> TxnAnswer:
        results = tuple(TxnOpResult(op.kind, create_index=3, mod_index=7) for op in txn.success)
        return TxnAnswer(7, True, results)


def _scope(method: str, path: str, length: int) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(length).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 12380),
    }


def _txn_body(shape: str) -> bytes:
    value = VALUE.decode()
    if shape == "txn2":
        body = {
            "compare": [
                {"key": "acct/0001", "target": "exists", "op": "==", "value": True},
                {"key": "acct/0002", "target": "exists", "op": "==", "value": True},
            ],
            "success": [
                {"op": "put", "key": "acct/0001", "value": value},
                {"op": "put", "key": "acct/0002", "value": value},
            ],
        }
    else:
        body = {"success": [{"op": "get", "key": "acct/0001"}, {"op": "get", "key": "acct/0002"}]}
    return json.dumps(body).encode()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.mark.parametrize("shape", ["put", "txn2", "get2"])
def test_http(benchmark: Any, loop: asyncio.AbstractEventLoop, shape: str) -> None:
    app = create_api(cast(NodeHandle, _StubNode()), NodeConfig(id=1, cluster=CLUSTER))
    if shape == "put":
        body = VALUE
        scope = _scope("PUT", "/v1/kv/acct/0001", len(body))
    else:
        body = _txn_body(shape)
        scope = _scope("POST", "/v1/txn", len(body))
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def hundred() -> None:
        for _ in range(100):
            await app(scope, receive, send)

    benchmark.pedantic(lambda: loop.run_until_complete(hundred()), rounds=50, warmup_rounds=2)
    assert set(statuses) <= {200, 204}, set(statuses)  # PUT: 204, an update
    assert statuses, "no request answered"
    median = median_round(benchmark)
    if median is not None:
        benchmark.extra_info["us_per_request"] = round(median / 100 * 1e6, 2)


# -- a 3-node cluster ----------------------------------------------------------------------


async def _until(check: Callable[[], bool], what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


class _Cluster:
    """Three in-process nodes on one loop, default settings but the data dirs."""

    def __init__(self, tmp: Path) -> None:
        urls = [f"http://127.0.0.1:{port}" for port in free_ports(3)]
        self.nodes = [
            Node(NodeConfig(id=i, cluster=urls, data_dir=tmp / f"node{i}")) for i in (1, 2, 3)
        ]

    async def start(self) -> Node:
        for node in self.nodes:
            await node.start()
        await _until(lambda: all(n.is_ready() for n in self.nodes), "all nodes ready")
        await _until(lambda: self.leader() is not None, "a leader")
        leader = self.leader()
        assert leader is not None
        return leader

    def leader(self) -> Node | None:
        for node in self.nodes:
            if node.status().role == "leader":
                return node
        return None

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()


def _account(i: int) -> bytes:
    return b"acct/%04d" % (i % ACCOUNTS)


@pytest.fixture
def server_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """uvloop, as ``raftdb serve`` runs (``--loop auto``)."""
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


@pytest.mark.parametrize("clients", list(CLUSTER_OPS))
def test_cluster(
    benchmark: Any, server_loop: asyncio.AbstractEventLoop, tmp_path: Path, clients: int
) -> None:
    loop = server_loop
    run: Callable[[Awaitable[Any]], Any] = loop.run_until_complete
    ops = CLUSTER_OPS[clients]
    cluster = _Cluster(tmp_path)
    rates: dict[str, list[float]] = {"put": [], "transfer": [], "audit": [], "get": []}
    rng = random.Random(12)
    try:
        leader = run(cluster.start())

        async def preload() -> None:
            await asyncio.gather(*(leader.put(_account(i), VALUE) for i in range(ACCOUNTS)))

        run(preload())

        def pair() -> tuple[bytes, bytes]:
            a = rng.randrange(ACCOUNTS)
            return _account(a), _account(a + 1 + rng.randrange(ACCOUNTS - 1))

        async def put() -> None:
            await leader.put(_account(rng.randrange(ACCOUNTS)), VALUE)

        async def do_transfer() -> None:
            answer = await leader.txn(transfer(*pair()))
            assert answer.succeeded

        async def do_audit() -> None:
            answer = await leader.txn(audit(*pair()))
            assert answer.results is not None
            assert all(r.found for r in answer.results)

        async def get() -> None:
            kv, _ = await leader.get(_account(rng.randrange(ACCOUNTS)))
            assert kv is not None

        phases: dict[str, Callable[[], Awaitable[None]]] = {
            "put": put,
            "transfer": do_transfer,
            "audit": do_audit,
            "get": get,
        }

        async def phase(one: Callable[[], Awaitable[None]]) -> float:
            left = iter(range(ops))

            async def client() -> None:
                for _ in left:
                    await one()

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            return ops / (time.perf_counter() - started)

        async def one_round() -> None:
            for name, one in phases.items():
                rates[name].append(await phase(one))

        benchmark.pedantic(lambda: run(one_round()), rounds=4, iterations=1, warmup_rounds=1)
    finally:
        run(cluster.stop())
    assert all(rates.values())
    if median_round(benchmark) is None:
        return
    # Every phase's ratio within a round (the warm-up's left out), then the median.
    measured = {name: values[1:] for name, values in rates.items()}

    def ratio(a: str, b: str) -> float:
        pairs = zip(measured[a], measured[b], strict=True)
        return round(statistics.median(x / y for x, y in pairs), 3)

    benchmark.extra_info.update(
        clients=clients,
        ops_per_phase=ops,
        **{f"{name}_per_s": round(statistics.median(v)) for name, v in measured.items()},
        transfer_over_put=ratio("transfer", "put"),
        audit_over_put=ratio("audit", "put"),
        audit_over_get=ratio("audit", "get"),
        spread={name: [round(min(v)), round(max(v))] for name, v in measured.items()},
    )
