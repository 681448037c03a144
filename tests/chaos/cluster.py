"""A cluster of real ``raftdb serve`` processes with a proxy on every peer link.

:class:`ChaosCluster` is the integration tests' :class:`ProcessCluster` (free
ports, per-node data dirs and logs, kill/pause/wipe, log tails) plus one
:class:`~tests.chaos.proxy.ProxyControl` process: node *i* listens for peers on
a private port (``listen_peer_url``) while its entry in ``cluster``, the URL
every other node dials, is the proxy's public port for it. Partitions and slow
links are link rules set on the proxy (``partition``, ``slow``, ``heal``).

Node processes get the repository on ``PYTHONPATH``, so a test-only plugin
such as ``tests.chaos.faulty:FaultyStorage`` can be named in their settings.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import trustme

from tests.chaos.proxy import LinkRule, ProxyControl
from tests.integration.harness import (
    Launcher,
    NodeProc,
    ProcessCluster,
    ServerError,
    free_ports,
)

__all__ = ["REPO_ROOT", "ChaosCluster", "poll"]

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]


def poll(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T:
    """``probe()`` until it returns something other than ``None``; HTTP errors count as
    ``None``. Raises :class:`ServerError` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = probe()
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            last, result = exc, None
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            extra = f" (last error: {last!r})" if last else ""
            raise ServerError(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(interval)


@dataclass
class ChaosCluster(ProcessCluster):
    """N nodes behind a link proxy; see the module docstring."""

    #: Peer TLS: every node gets a certificate naming it, from a CA of the cluster's own.
    peer_tls: bool = False
    proxy: ProxyControl = field(init=False)
    private_ports: dict[int, int] = field(default_factory=dict, init=False)
    #: Node ids that are members as far as the test knows (joined, not removed).
    membership: set[int] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self._ca: trustme.CA | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        self.proxy = ProxyControl(self.root / "proxy.log")
        super().__post_init__()
        self.membership = set(self.nodes)

    def add_node(self, node_id: int) -> NodeProc:
        """Reserve ports for ``node_id`` and put the proxy in front of its peer port."""
        if node_id in self.nodes:
            return self.nodes[node_id]
        node = super().add_node(node_id)
        taken = {p for n in self.nodes.values() for p in (n.api_port, n.peer_port)}
        taken |= set(self.private_ports.values())
        (private,) = free_ports(1)
        while private in taken:
            (private,) = free_ports(1)
        self.private_ports[node_id] = private
        self.proxy.listen(node_id, node.peer_port, private)
        if self.peer_tls:
            self._issue_certificate(node_id)
        return node

    def _issue_certificate(self, node_id: int) -> None:
        """``raftdb-member-<id>`` and 127.0.0.1, signed by the cluster's CA (made once)."""
        pki = self.root / "pki"
        pki.mkdir(exist_ok=True)
        if self._ca is None:
            self._ca = trustme.CA()
            self._ca.cert_pem.write_to_path(str(pki / "ca.pem"))
        cert = self._ca.issue_cert("127.0.0.1", f"raftdb-member-{node_id}")
        cert.cert_chain_pems[0].write_to_path(str(pki / f"member-{node_id}.crt"))
        cert.private_key_pem.write_to_path(str(pki / f"member-{node_id}.key"))

    def command(
        self, node: NodeProc, cluster: list[str], join: bool, launcher: Launcher
    ) -> tuple[list[str], dict[str, str]]:
        argv, env = super().command(node, cluster, join, launcher)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        return argv, env

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
        """Start node ``node_id`` listening on its private peer port (see ``ProcessCluster``)."""
        self.add_node(node_id)
        settings.setdefault("listen_peer_url", f"http://127.0.0.1:{self.private_ports[node_id]}")
        if self.peer_tls:
            pki = self.root / "pki"
            settings.setdefault("peer_cert_file", str(pki / f"member-{node_id}.crt"))
            settings.setdefault("peer_key_file", str(pki / f"member-{node_id}.key"))
            settings.setdefault("peer_ca_file", str(pki / "ca.pem"))
        return super().start(
            node_id, join=join, wait=wait, cluster=cluster, launcher=launcher, **settings
        )

    def close(self) -> None:
        """Stop every node process and the proxy. Idempotent."""
        try:
            super().close()
        finally:
            self.proxy.close()

    # -- links -----------------------------------------------------------------------

    def partition(
        self, *groups: Iterable[int], mode: str = "drop", one_way: bool = False
    ) -> dict[tuple[int, int], LinkRule]:
        """Cut every link between different ``groups`` (only from earlier groups to
        later ones with ``one_way``); every other link passes. Returns the rules."""
        sides = [set(g) for g in groups]
        rules: dict[tuple[int, int], LinkRule] = {}
        rule = LinkRule(mode)  # type: ignore[arg-type]
        for i, a in enumerate(sides):
            for j, b in enumerate(sides):
                if i == j or (one_way and j < i):
                    continue
                for src in a:
                    for dst in b:
                        rules[(src, dst)] = rule
        self.proxy.set_rules(rules)
        return rules

    def slow(
        self, nodes: Iterable[int], delay: float, jitter: float = 0.5
    ) -> dict[tuple[int, int], LinkRule]:
        """Delay every link to and from ``nodes`` by ``delay`` seconds (± ``jitter``)."""
        chosen = set(nodes)
        rule = LinkRule("delay", delay, jitter)
        rules = {
            (a, b): rule
            for a in self.nodes
            for b in self.nodes
            if a != b and (a in chosen or b in chosen)
        }
        self.proxy.set_rules(rules)
        return rules

    def heal(self) -> None:
        """Every link passes again."""
        self.proxy.heal()

    # -- state -----------------------------------------------------------------------

    def statuses(self, ids: Iterable[int] | None = None) -> dict[int, dict[str, Any]]:
        """``/v1/status`` of the live nodes among ``ids`` that answer."""
        out: dict[int, dict[str, Any]] = {}
        for i in sorted(self.live_ids() if ids is None else ids):
            if not self.nodes[i].live:
                continue
            with contextlib.suppress(httpx.HTTPError, ValueError):
                out[i] = self.status(i, timeout=2.0)
        return out

    def listing(self, node_id: int) -> list[dict[str, Any]]:
        """Every key of node ``node_id`` with its value and indexes, from its own state
        machine (``consistency=stale``), following ``Link`` pages."""
        url: str | None = "/v1/kv?prefix=&values=true&consistency=stale&limit=10000"
        out: list[dict[str, Any]] = []
        while url is not None:
            r = self.client.get(self.url(node_id, url), timeout=10.0)
            r.raise_for_status()
            out.extend(r.json())
            link = r.links.get("next")
            url = link["url"] if link else None
        return out
