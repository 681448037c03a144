"""Watch fan-out (issue 12): events delivered per second to 1, 100 and 1,000 watchers.

Two layers, so that the node's own cost and the HTTP stream's can be told apart:

- ``test_hub_fanout[case]``: the node's :class:`~raftdb.node.watch.WatchHub`
  alone, on one event loop (uvloop, as ``raftdb serve`` runs), over a memory
  state machine. A round opens the
  watchers (untimed), then publishes ``N`` put changes (100-byte values) in
  applied batches of :data:`BATCH` (``publish`` per entry, ``advance`` per
  batch, one loop turn between batches, as the node's ``_after_apply`` does),
  and ends when every watcher has consumed every change it matches (``async
  for`` over the :class:`~raftdb.node.watch.Watcher`, the way the HTTP layer
  reads it). Cases: ``shared-W``: ``W`` watchers all on the prefix every
  change is under, so each change goes to ``W`` watchers; ``own-1000``: 1,000
  watchers on 1,000 prefixes, each change under exactly one of them. The
  watch buffer is set to ``N`` so that a burst never ends a watcher (the
  bound is tested in ``tests/node``); ``prev`` is off, as in ``GET /v1/watch``
  without ``prev=true``.

  ``extra_info``: ``delivered_per_s`` (events handed to consumers / median
  round), ``publish_us_per_change`` (median over rounds of the time spent in
  ``publish`` + ``advance``, per change: what the apply path pays) and
  ``publish_ns_per_delivery`` (the same per matching watcher).

- ``test_sse_fanout[W]``: the real stream, ``GET /v1/watch`` over HTTP: a
  one-node cluster (LevelDB, fsync on) with its API served by uvicorn on a
  free 127.0.0.1 port, both in this process on uvloop (as ``raftdb serve``),
  and ``W`` watchers (1 or 100) in
  a second process (``benchmarks/watch_clients.py``: raw sockets, counting
  ``event: put`` lines, so that the clients cost little and not this process's
  core). A round writes ``N`` puts under the watched prefix through
  ``Node.put`` (32 at a time; no HTTP for the writes) and ends when every
  watcher has received all ``N`` events (``W`` = 0: the writes alone, the
  baseline the others are compared with); the clients report when the last
  event arrived (``time.monotonic`` is system-wide). ``extra_info``:
  ``delivered_per_s`` (``W × N`` / (last event − first write)), ``writes_per_s``
  (``N`` / time for the writes to be answered), ``publish_us_per_change`` (the
  node's ``WatchHub.publish`` + ``advance``, timed by wrapping them) and
  ``lag_s`` (last event − last write answered). The watch buffer is raised to
  ``N`` for the same reason as above; ``dropped`` counts watchers that ended
  ``watcher_too_slow`` anyway (it must stay 0 for the figure to mean anything).

No timing assertions: the tests check that every event arrived, once.

Run: ``pytest benchmarks/test_watch_bench.py --benchmark-only``. Figures go to
``docs/benchmarks.md`` ("Watch and transactions (issue 12)").
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import uvicorn
import uvloop

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from raftdb.kv.changes import Change, ChangeKind
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.node import Node
from raftdb.node.watch import Watcher, WatchHub
from raftdb.testing.ports import free_ports

VALUE: Final = b"v" * 100
#: Changes per applied batch (``publish`` each, then one ``advance``).
BATCH: Final = 50
#: Hub cases: (name, watchers, changes per round, whether each watcher has its own prefix).
HUB_CASES: Final = {
    "shared-1": (1, 20_000, False),
    "shared-100": (100, 2_000, False),
    "shared-1000": (1_000, 400, False),
    "own-1000": (1_000, 20_000, True),
}
#: SSE cases: watchers -> puts per round (0: the writes alone, the baseline).
SSE_CASES: Final = {0: 3_000, 1: 3_000, 100: 500}
CLIENTS: Final = Path(__file__).with_name("watch_clients.py")
REPO: Final = Path(__file__).resolve().parents[1]


def median_round(benchmark: Any) -> float | None:
    """The median round in seconds; ``None`` under ``--benchmark-disable`` (one
    unmeasured round: the outcomes are still checked, no figures are made)."""
    stats = benchmark.stats
    return None if stats is None else float(stats.stats.median)


@pytest.fixture
def server_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """uvloop, as ``raftdb serve`` runs (``--loop auto``)."""
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


class _Timed:
    """Wraps a hub's ``publish`` and ``advance``: the apply path's time in the hub."""

    def __init__(self, hub: WatchHub) -> None:
        self.seconds = 0.0
        self.changes = 0
        publish, advance = hub.publish, hub.advance

        def timed_publish(changes: Any) -> None:
            t = time.perf_counter()
            publish(changes)
            self.seconds += time.perf_counter() - t
            self.changes += len(changes)

        def timed_advance(applied: int) -> None:
            t = time.perf_counter()
            advance(applied)
            self.seconds += time.perf_counter() - t

        hub.publish = timed_publish  # type: ignore[method-assign]
        hub.advance = timed_advance  # type: ignore[method-assign]

    def take(self) -> tuple[float, int]:
        """Time and changes since the last call."""
        out = (self.seconds, self.changes)
        self.seconds, self.changes = 0.0, 0
        return out


async def _consume(watcher: Watcher, wanted: int) -> int:
    """Read ``wanted`` put events (``progress`` events do not count), then close."""
    got = 0
    try:
        async for event in watcher:
            if event.kind == "put":
                got += 1
                if got == wanted:
                    break
            elif event.kind == "closed":
                raise AssertionError(f"the watcher ended after {got} events: {event.data}")
    finally:
        await watcher.aclose()
    return got


@pytest.mark.parametrize("case", list(HUB_CASES))
def test_hub_fanout(benchmark: Any, server_loop: asyncio.AbstractEventLoop, case: str) -> None:
    loop = server_loop
    watchers, changes, own = HUB_CASES[case]
    sm = MemoryStateMachine()
    hub = WatchHub(lambda: sm, max_watchers=watchers, buffer=changes, progress_s=3600.0)
    hub.start(0)
    timed = _Timed(hub)
    prefixes = [b"w/%04d/" % i for i in range(watchers)] if own else [b"w/"]
    state: dict[str, Any] = {"next": 1, "publish": [], "delivered": []}

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        first = state["next"]
        state["next"] = first + changes
        # Change i goes under prefix i mod len(prefixes): one watcher each when own.
        batch = [
            Change(
                i,
                ChangeKind.PUT,
                prefixes[i % len(prefixes)] + b"k%07d" % i,
                VALUE,
                i,
                i,
                0,
            )
            for i in range(first, first + changes)
        ]
        per_watcher = changes // len(prefixes)

        async def open_all() -> list[asyncio.Task[int]]:
            tasks = []
            for w in range(watchers):
                watcher = await hub.watch(prefix=prefixes[w % len(prefixes)], since=hub.applied)
                tasks.append(asyncio.ensure_future(_consume(watcher, per_watcher)))
            await asyncio.sleep(0)  # every consumer waits for its first event
            return tasks

        state["tasks"] = loop.run_until_complete(open_all())
        state["changes"] = batch
        state["expected"] = per_watcher * watchers
        timed.take()
        return (), {}

    async def publish_and_drain() -> None:
        batch = state["changes"]
        for lo in range(0, len(batch), BATCH):
            for change in batch[lo : lo + BATCH]:
                hub.publish((change,))
            hub.advance(batch[min(lo + BATCH, len(batch)) - 1].index)
            await asyncio.sleep(0)  # the loop turns between applied batches
        got = await asyncio.gather(*state["tasks"])
        state["delivered"].append(sum(got))

    def one_round() -> None:
        loop.run_until_complete(publish_and_drain())
        seconds, published = timed.take()
        state["publish"].append(seconds / published)

    benchmark.pedantic(one_round, setup=setup, rounds=5, iterations=1, warmup_rounds=1)
    assert state["delivered"]
    assert state["delivered"] == [state["expected"]] * len(state["delivered"])
    assert hub.count == 0
    median = median_round(benchmark)
    if median is None:
        return
    per_change = statistics.median(state["publish"])
    per_delivery = per_change * changes / state["expected"]
    benchmark.extra_info.update(
        watchers=watchers,
        changes=changes,
        delivered_per_s=round(state["expected"] / median),
        publish_us_per_change=round(per_change * 1e6, 3),
        publish_ns_per_delivery=round(per_delivery * 1e9, 1),
    )


# -- through HTTP: GET /v1/watch on one node -------------------------------------------


class _SseBench:
    """A one-node cluster with its API on uvicorn, in this process."""

    def __init__(self, tmp: Path, buffer: int) -> None:
        peer, api = free_ports(2)
        self.api_port = api
        self.config = NodeConfig(
            id=1,
            cluster=[f"http://127.0.0.1:{peer}"],
            data_dir=tmp / "node1",
            storage="leveldb",
            state_machine="leveldb",
            watch_buffer=buffer,
            max_watchers=1_000,
        )
        self.node = Node(self.config)
        self.server: uvicorn.Server | None = None
        self.serving: asyncio.Future[None] | None = None

    async def start(self) -> None:
        await self.node.start()
        deadline = time.monotonic() + 10
        while not self.node.is_ready():
            if time.monotonic() > deadline:
                raise AssertionError("the node did not become ready in 10 s")
            await asyncio.sleep(0.01)
        app = create_api(self.node, self.config)
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.api_port,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
        )
        self.serving = asyncio.ensure_future(self.server.serve())
        while not self.server.started:
            if time.monotonic() > deadline or self.serving.done():
                raise AssertionError("uvicorn did not start in 10 s")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self.server is not None and self.serving is not None:
            self.server.should_exit = True
            await self.serving
        await self.node.stop()


async def _line(proc: asyncio.subprocess.Process, within: float) -> dict[str, Any]:
    """The next JSON line of the clients' process."""
    assert proc.stdout is not None
    raw = await asyncio.wait_for(proc.stdout.readline(), within)
    if not raw:
        raise AssertionError(f"the watch clients ended early (status {await proc.wait()})")
    data: dict[str, Any] = json.loads(raw)
    return data


async def _write(node: Node, prefix: bytes, first: int, count: int, concurrency: int) -> None:
    """``count`` puts of new keys under ``prefix``, ``concurrency`` at a time."""
    keys = iter(range(first, first + count))

    async def writer() -> None:
        for i in keys:
            await node.put(prefix + b"k%07d" % i, VALUE)

    await asyncio.gather(*(writer() for _ in range(concurrency)))


@pytest.mark.parametrize("watchers", list(SSE_CASES))
def test_sse_fanout(
    benchmark: Any, server_loop: asyncio.AbstractEventLoop, tmp_path: Path, watchers: int
) -> None:
    loop = server_loop
    puts = SSE_CASES[watchers]
    bench = _SseBench(tmp_path, buffer=puts)
    prefix = b"w/"
    state: dict[str, Any] = {"next": 0, "rounds": []}
    run: Callable[[Awaitable[Any]], Any] = loop.run_until_complete
    run(bench.start())
    timed = _Timed(bench.node._hub)
    proc: asyncio.subprocess.Process | None = None
    try:

        def setup() -> tuple[tuple[()], dict[str, Any]]:
            async def open_watchers() -> asyncio.subprocess.Process:
                since = bench.node._hub.applied
                p = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(CLIENTS),
                    str(bench.api_port),
                    str(watchers),
                    prefix.decode(),
                    str(since),
                    str(puts),
                    stdout=subprocess.PIPE,
                    cwd=REPO,
                )
                ready = await _line(p, 30)
                assert ready == {"ready": watchers}, ready
                return p

            nonlocal proc
            if watchers:
                proc = run(open_watchers())
            timed.take()
            return (), {}

        async def write_and_wait() -> None:
            first = state["next"]
            state["next"] = first + puts
            t0 = time.monotonic()
            await _write(bench.node, prefix, first, puts, 32)
            written = time.monotonic()
            done: dict[str, Any] = {"events": [], "dropped": 0, "last": written}
            if proc is not None:
                done = await _line(proc, 60)
                await proc.wait()
            publish, published = timed.take()
            assert done["events"] == [puts] * watchers, done
            state["rounds"].append(
                {
                    "delivered_per_s": watchers * puts / (done["last"] - t0),
                    "writes_per_s": puts / (written - t0),
                    "lag_s": done["last"] - written,
                    "publish_us_per_change": publish / max(published, 1) * 1e6,
                    "dropped": done["dropped"],
                }
            )

        benchmark.pedantic(
            lambda: run(write_and_wait()), setup=setup, rounds=3, iterations=1, warmup_rounds=1
        )
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            run(proc.wait())
        run(bench.stop())
    rounds = state["rounds"]
    assert rounds
    assert all(r["dropped"] == 0 for r in rounds), rounds
    if median_round(benchmark) is None:
        return
    benchmark.extra_info.update(
        watchers=watchers,
        puts=puts,
        **{
            name: round(statistics.median(r[name] for r in rounds), 4)
            for name in ("delivered_per_s", "writes_per_s", "lag_s", "publish_us_per_change")
        },
    )
