"""Several driver Nodes in one process on real transports (127.0.0.1, free ports)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from raftdb.config import NodeConfig
from raftdb.node import Node
from tests.integration.harness import free_ports


def free_port(taken: Iterable[int] = ()) -> int:
    """A free port below the ephemeral range (``free_ports``), none of ``taken``.

    Not one bound to 0 and released: that is in the ephemeral range, where the
    connections of other nodes (this cluster's, retrying with backoff before the
    node listens, or any other process's) take their source ports, so one may
    take it, or connect to it from it (a TCP self-connection), before the node
    binds it."""
    avoid = set(taken)
    while True:
        (port,) = free_ports(1)
        if port not in avoid:
            return port


async def eventually(
    check: Callable[[], bool], what: str, within: float = 10.0, interval: float = 0.01
) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


class LocalCluster:
    """Nodes 1..n bootstrapped together; more may join."""

    def __init__(
        self,
        tmp: Path,
        n: int,
        plugin: str = "leveldb",
        *,
        state_machine: str | None = None,
        **settings: Any,
    ) -> None:
        """``plugin`` names storage and state machine, unless ``state_machine``
        names another (``"module:factory"``: a test's instrumented one)."""
        self.tmp = tmp
        self.plugin = plugin
        self.state_machine = state_machine or plugin
        self.settings = {"tick_ms": 20, "request_timeout_s": 5.0, **settings}
        self.urls = [f"http://127.0.0.1:{port}" for port in free_ports(n)]
        self.nodes: dict[int, Node] = {}

    def config(self, node_id: int, join: bool = False) -> NodeConfig:
        return NodeConfig(
            id=node_id,
            cluster=list(self.urls),
            join=join,
            data_dir=self.tmp / f"node{node_id}",
            storage=self.plugin,
            state_machine=self.state_machine,
            **self.settings,
        )

    async def start(self, node_id: int, join: bool = False) -> Node:
        node = Node(self.config(node_id, join))
        await node.start()
        self.nodes[node_id] = node
        return node

    async def start_all(self) -> None:
        for i in range(1, len(self.urls) + 1):
            await self.start(i)
        await self.wait_ready()

    async def stop(self, node_id: int) -> None:
        await self.nodes.pop(node_id).stop()

    async def stop_all(self) -> None:
        for node_id in list(self.nodes):
            await self.stop(node_id)

    def wipe(self, node_id: int) -> None:
        shutil.rmtree(self.tmp / f"node{node_id}", ignore_errors=True)

    def add_url(self) -> int:
        taken = [int(url.rsplit(":", 1)[1]) for url in self.urls]
        self.urls.append(f"http://127.0.0.1:{free_port(taken)}")
        return len(self.urls)

    def leader(self) -> Node | None:
        for node in self.nodes.values():
            if node.status().role == "leader":
                return node
        return None

    async def wait_ready(self, within: float = 10.0) -> None:
        await eventually(
            lambda: all(n.is_ready() for n in self.nodes.values()), "all nodes ready", within
        )

    def run(self, body: Callable[[LocalCluster], Awaitable[None]]) -> None:
        """Run ``body`` against a started cluster, always stopping every node."""

        async def main() -> None:
            try:
                await self.start_all()
                await asyncio.wait_for(body(self), 60)
            finally:
                await self.stop_all()

        asyncio.run(main())
