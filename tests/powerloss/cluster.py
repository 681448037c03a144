"""A chaos cluster whose every node keeps its data directory on a power-loss filesystem.

:class:`PowerCluster` is :class:`~tests.chaos.cluster.ChaosCluster` (real ``raftdb
serve`` processes, a link proxy, the harness's kill/start/wait) with one
:class:`~tests.powerloss.mount.PowerLossMount` per node: node *i*'s data directory is
``<mount i>/data``. A **power cut** of some nodes is ``kill -9`` of each (reaped),
then a ``cut`` of each one's filesystem: what the node wrote and did not make durable
is gone, as after the power went off. The mounts are unmounted in :meth:`close`,
after the nodes stopped, whatever happened before (and at once if the cluster cannot
be set up).

:meth:`wipe` (the chaos nemesis's ``member`` fault: a voter that lost its disk) makes
the emptied filesystem durable: a new disk is blank, and a later cut must not bring
the old one's files back.

Nodes may differ in their plugins (``node_settings``): the storage and the state
machine are each node's own choice, so one cluster can cover several pairs.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.chaos.cluster import ChaosCluster
from tests.chaos.test_crash import check_disk as crash_check_disk
from tests.integration.harness import Launcher, NodeProc
from tests.powerloss.mount import PowerLossMount

__all__ = ["PowerCluster", "check_disk"]


@dataclass
class PowerCluster(ChaosCluster):
    """N nodes on power-loss filesystems; see the module docstring."""

    fs_mode: Literal["strict", "ordered"] = "strict"
    #: Per-node settings over ``settings`` (e.g. ``{2: {"storage": "sqlite"}}``).
    node_settings: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    mounts: dict[int, PowerLossMount] = field(default_factory=dict, init=False)
    #: What the cuts dropped, summed over all nodes.
    dropped: Counter[str] = field(default_factory=Counter, init=False)

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except BaseException:
            self._unmount()
            raise

    def add_node(self, node_id: int) -> NodeProc:
        if node_id in self.nodes:
            return self.nodes[node_id]
        node = super().add_node(node_id)
        mount = PowerLossMount(self.root, f"fs-{node_id}", mode=self.fs_mode)
        self.mounts[node_id] = mount
        mount.start()
        node.data_dir = mount.path / "data"
        return node

    def plugins(self, node_id: int) -> tuple[str, str]:
        """The (storage, state machine) node ``node_id`` runs with."""
        chosen = {**self.settings, **self.node_settings.get(node_id, {})}
        return str(chosen.get("storage", "leveldb")), str(chosen.get("state_machine", "leveldb"))

    def start(
        self,
        node_id: int,
        *,
        join: bool = False,
        wait: bool = True,
        cluster: list[str] | None = None,
        launcher: Launcher | None = None,
        **settings: Any,
    ) -> NodeProc:
        merged = {**self.node_settings.get(node_id, {}), **settings}
        return super().start(
            node_id, join=join, wait=wait, cluster=cluster, launcher=launcher, **merged
        )

    def power_cut(self, ids: Iterable[int]) -> None:
        """``kill -9`` every node of ``ids``, then drop what each had not made durable."""
        chosen = sorted(ids)
        for i in chosen:
            self.kill(i)
        for i in chosen:
            self.dropped.update(self.mounts[i].cut())

    def wipe(self, node_id: int) -> None:
        """Delete node ``node_id``'s data directory, durably (see the module docstring)."""
        super().wipe(node_id)
        self.mounts[node_id].request("sync")

    def close(self) -> None:
        """Stop every node and the proxy, then unmount every filesystem. Idempotent."""
        try:
            super().close()
        finally:
            self._unmount()

    def _unmount(self) -> None:
        for mount in self.mounts.values():
            with contextlib.suppress(Exception):
                mount.close()


def check_disk(c: PowerCluster) -> list[str]:
    """With the nodes stopped: ``tests/chaos``'s offline log checks, for each node's
    plugins."""
    return crash_check_disk(
        {i: n.data_dir for i, n in c.nodes.items()}, {i: c.plugins(i) for i in c.nodes}
    )
