"""Real raftdb server processes on 127.0.0.1 for the integration tests.

:class:`ProcessCluster` starts N nodes, each a separate ``python`` process
running the contract's command, on free ports (checked by binding them), with
a data directory and a log file of its own under the test's ``tmp_path``.
Every wait polls with a deadline: nothing here sleeps to synchronise.

Settings other than the ones on the command line go into a per-node TOML file
named by ``RAFTDB_CONFIG`` (the lowest-precedence source), so each launcher
(``raftdb serve`` flags, ``RAFTDB_*`` environment, a TOML file alone) takes the
same settings. The fixture in ``conftest.py`` stops every process it started.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx

from raftdb.testing.ports import free_ports

__all__ = [
    "HTTP_TIMEOUT",
    "Launcher",
    "NodeProc",
    "ProcessCluster",
    "ServerError",
    "free_ports",
    "retry_unavailable",
    "wait_until",
]

Launcher = Literal["cli", "env", "toml"]

#: Timeout of one HTTP request to a node (connect, read, write, pool).
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=2.0)
#: Longest a node may take from exec to a ready ``/readyz``.
START_TIMEOUT = 30.0
#: Longest ``stop`` waits after SIGTERM before SIGKILL.
STOP_TIMEOUT = 10.0

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


class ServerError(AssertionError):
    """A node did not do what the harness waited for (the message has its log tail)."""


def wait_until(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.05,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something other than ``None`` (or falsy ``False``).

    Raises:
        ServerError: ``timeout`` seconds passed; the message says ``what`` was awaited.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
        except (httpx.HTTPError, OSError) as e:
            last_error = e
            result = None
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_error!r})" if last_error else ""
            tail = on_timeout() if on_timeout else ""
            raise ServerError(f"timed out after {timeout:g}s waiting for {what}{extra}\n{tail}")
        time.sleep(interval)


def retry_unavailable(send: Callable[[], httpx.Response], timeout: float = 15.0) -> httpx.Response:
    """``send()`` again while it answers 503 (no leader now: nothing was done), up to
    ``timeout``; any other answer is returned as it is."""
    deadline = time.monotonic() + timeout
    while True:
        r = send()
        if r.status_code != 503 or time.monotonic() >= deadline:
            return r
        time.sleep(0.1)


def set_pdeathsig() -> None:  # pragma: no cover - runs in the child before exec
    """Have the kernel SIGKILL the server if the test process dies (Linux)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class NodeProc:
    """One node: its ports, files and (when running) process."""

    id: int
    api_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    config_path: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def live(self) -> bool:
        """Running and not paused: expected to answer."""
        return self.running and not self.paused


@dataclass
class ProcessCluster:
    """N raftdb server processes on 127.0.0.1; see the module docstring.

    Node ids start at 1. ``settings`` are extra config keys for every node
    (written to its TOML file), e.g. ``{"snapshot_entries": 50}``.
    """

    root: Path
    size: int = 3
    tick_ms: int = 50
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    launcher: Launcher = "cli"
    settings: Mapping[str, Any] = field(default_factory=dict)
    nodes: dict[int, NodeProc] = field(default_factory=dict, init=False)
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.client = httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=True)
        for i in range(1, self.size + 1):
            self.add_node(i)

    # -- layout ----------------------------------------------------------------------

    def add_node(self, node_id: int) -> NodeProc:
        """Reserve ports and paths for node ``node_id`` (not started)."""
        if node_id in self.nodes:
            return self.nodes[node_id]
        api, peer = free_ports(2)
        taken = {p for n in self.nodes.values() for p in (n.api_port, n.peer_port)}
        while api in taken or peer in taken:
            api, peer = free_ports(2)
        node = NodeProc(
            id=node_id,
            api_port=api,
            peer_port=peer,
            data_dir=self.root / f"data-{node_id}",
            log_path=self.root / f"node-{node_id}.log",
            config_path=self.root / f"node-{node_id}.toml",
        )
        self.nodes[node_id] = node
        return node

    def peer_urls(self, ids: Iterable[int] | None = None) -> list[str]:
        """Peer URLs of nodes ``ids`` (default: all reserved nodes) in id order."""
        chosen = sorted(self.nodes if ids is None else ids)
        return [self.nodes[i].peer_url for i in chosen]

    def url(self, node_id: int, path: str) -> str:
        """``http://127.0.0.1:<api port of node_id><path>``."""
        return self.nodes[node_id].api_url + path

    # -- processes -------------------------------------------------------------------

    def _write_config(self, node: NodeProc, extra: Mapping[str, Any]) -> None:
        values: dict[str, Any] = {
            "tick_ms": self.tick_ms,
            "election_ticks": self.election_ticks,
            "heartbeat_ticks": self.heartbeat_ticks,
            **self.settings,
            **extra,
        }
        lines = [f"{key} = {_toml(value)}" for key, value in values.items()]
        node.config_path.write_text("\n".join(lines) + "\n")

    def command(
        self, node: NodeProc, cluster: list[str], join: bool, launcher: Launcher
    ) -> tuple[list[str], dict[str, str]]:
        """The argv and environment that start ``node`` with ``launcher``.

        ``cli``: ``python -m raftdb.cli serve --id .. --cluster .. --port .. --data-dir ..``;
        ``env``: ``RAFTDB_ID``, ``RAFTDB_CLUSTER``, ``RAFTDB_DATA_DIR`` and
        ``uvicorn raftdb.app:app``; ``toml``: every setting in ``RAFTDB_CONFIG``'s
        file and ``uvicorn raftdb.app:app``.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTDB_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["RAFTDB_CONFIG"] = str(node.config_path)
        urls = ",".join(cluster)
        uvicorn = [sys.executable, "-m", "uvicorn", "raftdb.app:app"]
        uvicorn += ["--host", "127.0.0.1", "--port", str(node.api_port)]
        if launcher == "cli":
            argv = [sys.executable, "-m", "raftdb.cli", "serve", "--id", str(node.id)]
            argv += ["--cluster", urls, "--port", str(node.api_port)]
            argv += ["--data-dir", str(node.data_dir), "--host", "127.0.0.1"]
            if join:
                argv.append("--join")
        elif launcher == "env":
            argv = uvicorn
            env["RAFTDB_ID"] = str(node.id)
            env["RAFTDB_CLUSTER"] = urls
            env["RAFTDB_DATA_DIR"] = str(node.data_dir)
            if join:
                env["RAFTDB_JOIN"] = "true"
        else:  # "toml": everything in the file
            argv = uvicorn
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
        """Start node ``node_id`` (reserving it if new) and, with ``wait``, wait for ``/readyz``.

        ``cluster`` defaults to the peer URLs of every reserved node; ``launcher``
        to the cluster's; ``settings`` are config keys for this start only.
        """
        how = launcher or self.launcher
        node = self.add_node(node_id)
        if node.running:
            raise ServerError(f"node {node_id} is already running")
        urls = cluster if cluster is not None else self.peer_urls()
        extra = dict(settings)
        if how == "toml":
            extra.update(id=node.id, cluster=urls, data_dir=str(node.data_dir), join=join)
        self._write_config(node, extra)
        argv, env = self.command(node, urls, join, how)
        node.starts += 1
        with node.log_path.open("ab") as log:
            header = f"\n===== start #{node.starts} of node {node_id}: {' '.join(argv)}\n"
            log.write(header.encode())
            log.flush()
            node.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                start_new_session=True,
                preexec_fn=set_pdeathsig,
            )
        node.paused = False
        if wait:
            self.wait_ready(node_id)
        return node

    def start_all(self, ids: Iterable[int] | None = None, **settings: Any) -> None:
        """Start nodes ``ids`` (default: all reserved) together, then wait until all are ready."""
        chosen = sorted(self.nodes if ids is None else ids)
        for i in chosen:
            self.start(i, wait=False, **settings)
        for i in chosen:
            self.wait_ready(i)

    def _signal(self, node: NodeProc, sig: signal.Signals) -> None:
        if node.proc is None or node.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(node.proc.pid, sig)

    def _reap(self, node: NodeProc, timeout: float) -> bool:
        assert node.proc is not None
        try:
            node.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self, node_id: int) -> None:
        """SIGKILL node ``node_id`` (kill -9) and reap it."""
        node = self.nodes[node_id]
        if node.proc is None:
            return
        self._signal(node, signal.SIGKILL)
        if not self._reap(node, STOP_TIMEOUT):
            raise ServerError(f"node {node_id} survived SIGKILL")
        node.proc = None
        node.paused = False

    def stop(self, node_id: int, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM node ``node_id``; SIGKILL it after ``timeout``. Returns its exit code."""
        node = self.nodes[node_id]
        if node.proc is None:
            return None
        if node.paused:
            self._signal(node, signal.SIGCONT)
        self._signal(node, signal.SIGTERM)
        if not self._reap(node, timeout):
            self._signal(node, signal.SIGKILL)
            self._reap(node, STOP_TIMEOUT)
        code = node.proc.returncode
        node.proc = None
        node.paused = False
        return code

    def pause(self, node_id: int) -> None:
        """SIGSTOP node ``node_id``: alive but silent, as if partitioned."""
        node = self.nodes[node_id]
        self._signal(node, signal.SIGSTOP)
        node.paused = True

    def resume(self, node_id: int) -> None:
        """SIGCONT a paused node."""
        node = self.nodes[node_id]
        self._signal(node, signal.SIGCONT)
        node.paused = False

    def wipe(self, node_id: int) -> None:
        """Delete node ``node_id``'s data directory (it must not be running)."""
        node = self.nodes[node_id]
        if node.running:
            raise ServerError(f"wipe: node {node_id} is running")
        shutil.rmtree(node.data_dir, ignore_errors=True)

    def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL) and close the HTTP client. Idempotent."""
        for node in self.nodes.values():
            if node.proc is not None and node.paused:
                self._signal(node, signal.SIGCONT)
                node.paused = False
        for node in self.nodes.values():
            self._signal(node, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for node in self.nodes.values():
            if node.proc is None:
                continue
            if not self._reap(node, max(0.1, deadline - time.monotonic())):
                self._signal(node, signal.SIGKILL)
                self._reap(node, STOP_TIMEOUT)
            node.proc = None
        self.client.close()

    # -- diagnostics -----------------------------------------------------------------

    def log_tail(self, node_id: int, lines: int = 40) -> str:
        """The last ``lines`` lines of node ``node_id``'s log file."""
        path = self.nodes[node_id].log_path
        if not path.exists():
            return f"(node {node_id}: no log file)"
        text = path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def log_tails(self, lines: int = 40) -> str:
        """Every node's log tail, each under a header."""
        parts = []
        for i, node in sorted(self.nodes.items()):
            state = "paused" if node.paused else "running" if node.running else "not running"
            parts.append(f"----- node {i} ({state}) {node.log_path}")
            parts.append(self.log_tail(i, lines))
        return "\n".join(parts)

    # -- readiness and roles ---------------------------------------------------------

    def is_ready(self, node_id: int) -> bool:
        """``GET /readyz`` answers 200."""
        node = self.nodes[node_id]
        if not node.live:
            return False
        try:
            r = self.client.get(self.url(node_id, "/readyz"), timeout=2.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def wait_ready(self, node_id: int, timeout: float = START_TIMEOUT) -> None:
        """Poll ``/readyz`` until 200; fail early (with the log tail) if the process exits."""
        node = self.nodes[node_id]

        def probe() -> bool | None:
            if node.proc is None:
                raise ServerError(f"node {node_id} is not started\n{self.log_tail(node_id)}")
            code = node.proc.poll()
            if code is not None:
                raise ServerError(
                    f"node {node_id} exited with {code} before it was ready\n"
                    f"{self.log_tail(node_id)}"
                )
            return self.is_ready(node_id) or None

        wait_until(
            f"node {node_id} to be ready",
            probe,
            timeout,
            on_timeout=lambda: self.log_tails(),
        )

    def status(self, node_id: int, timeout: float = 2.0) -> dict[str, Any]:
        """``GET /v1/status`` of node ``node_id`` as JSON (raises on HTTP errors)."""
        r = self.client.get(self.url(node_id, "/v1/status"), timeout=timeout)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def live_ids(self) -> list[int]:
        """Ids of the nodes running and not paused."""
        return [i for i, n in sorted(self.nodes.items()) if n.live]

    def leader(self, among: Iterable[int] | None = None) -> int | None:
        """The leader as the live nodes see it: a node reporting role ``leader``
        whose term no other answering node exceeds; ``None`` if there is none now."""
        ids = sorted(among) if among is not None else self.live_ids()
        statuses: dict[int, dict[str, Any]] = {}
        for i in ids:
            if not self.nodes[i].live:
                continue
            with contextlib.suppress(httpx.HTTPError, ValueError):
                statuses[i] = self.status(i, timeout=1.0)
        if not statuses:
            return None
        top = max(s["term"] for s in statuses.values())
        leaders = [i for i, s in statuses.items() if s["role"] == "leader" and s["term"] == top]
        return leaders[0] if len(leaders) == 1 else None

    def wait_leader(
        self, among: Iterable[int] | None = None, timeout: float = 15.0, exclude: int = 0
    ) -> int:
        """Wait for a leader (other than ``exclude``) among the live nodes ``among``."""
        chosen = list(among) if among is not None else None

        def probe() -> int | None:
            lead = self.leader(chosen)
            return lead if lead is not None and lead != exclude else None

        return wait_until("a leader", probe, timeout, on_timeout=lambda: self.log_tails())

    def followers(self, leader: int) -> list[int]:
        """The live nodes other than ``leader``."""
        return [i for i in self.live_ids() if i != leader]

    def wait_applied(self, node_id: int, index: int, timeout: float = 15.0) -> None:
        """Wait until node ``node_id`` reports ``applied_index >= index``."""
        wait_until(
            f"node {node_id} to apply index {index}",
            lambda: self.status(node_id)["applied_index"] >= index,
            timeout,
            on_timeout=lambda: self.log_tails(),
        )

    # -- client helpers --------------------------------------------------------------

    def put(self, node_id: int, key: str, value: bytes | str, **headers: str) -> httpx.Response:
        """``PUT /v1/kv/<key>`` on node ``node_id``."""
        body = value.encode() if isinstance(value, str) else value
        return self.client.put(self.url(node_id, f"/v1/kv/{key}"), content=body, headers=headers)

    def get(self, node_id: int, key: str, *, stale: bool = False) -> httpx.Response:
        """``GET /v1/kv/<key>`` on node ``node_id`` (linearizable unless ``stale``)."""
        params = {"consistency": "stale"} if stale else None
        return self.client.get(self.url(node_id, f"/v1/kv/{key}"), params=params)

    def delete(self, node_id: int, key: str) -> httpx.Response:
        """``DELETE /v1/kv/<key>`` on node ``node_id``."""
        return self.client.delete(self.url(node_id, f"/v1/kv/{key}"))

    def put_ok(
        self, key: str, value: bytes | str, *, node_id: int | None = None, timeout: float = 20.0
    ) -> int:
        """Write until acknowledged (204), retrying 503s and connection errors on live
        nodes; returns the write's index (``ETag``). A 504 is retried too: the
        value is the same, so a duplicate apply is harmless here."""
        ids = [node_id] if node_id is not None else None

        def attempt() -> int | None:
            for i in ids or self.live_ids():
                try:
                    r = self.put(i, key, value)
                except httpx.HTTPError:
                    continue
                if r.status_code == 204:
                    return int(r.headers["etag"].strip('"'))
                if r.status_code not in (503, 504):
                    raise ServerError(f"PUT {key} on node {i}: {r.status_code} {r.text}")
            return None

        return wait_until(
            f"PUT {key} to be acknowledged",
            attempt,
            timeout,
            interval=0.1,
            on_timeout=lambda: self.log_tails(),
        )

    def get_value(self, node_id: int, key: str, *, stale: bool = False) -> bytes | None:
        """The value of ``key`` on node ``node_id`` (``None``: 404); other statuses raise."""
        r = self.get(node_id, key, stale=stale)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise ServerError(f"GET {key} on node {node_id}: {r.status_code} {r.text}")
        return r.content

    def wait_value(
        self, node_id: int, key: str, value: bytes, *, stale: bool = False, timeout: float = 15.0
    ) -> None:
        """Wait until ``key`` reads ``value`` on node ``node_id`` (retrying 503s)."""

        def probe() -> bool:
            r = self.get(node_id, key, stale=stale)
            return r.status_code == 200 and r.content == value

        wait_until(
            f"{key}={value!r} on node {node_id}",
            probe,
            timeout,
            interval=0.1,
            on_timeout=lambda: self.log_tails(),
        )

    def members(self, node_id: int) -> list[dict[str, Any]]:
        """``GET /v1/cluster/members`` of node ``node_id``."""
        r = self.client.get(self.url(node_id, "/v1/cluster/members"))
        r.raise_for_status()
        data = r.json()
        # The contract says "JSON list"; accept {"members": [...]} too.
        members: list[dict[str, Any]] = data["members"] if isinstance(data, dict) else data
        return members

    def member_ids(self, node_id: int) -> list[int]:
        """Sorted member ids as node ``node_id`` has applied them."""
        return sorted(int(m["id"]) for m in self.members(node_id))

    def metric(self, node_id: int, name: str) -> float:
        """The value of an unlabelled sample ``name`` in node ``node_id``'s ``/metrics``."""
        r = self.client.get(self.url(node_id, "/metrics"))
        r.raise_for_status()
        for line in r.text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == name:
                return float(parts[1])
        raise ServerError(f"no metric {name} on node {node_id}")

    @contextlib.contextmanager
    def closing(self) -> Iterator[ProcessCluster]:
        """``with cluster.closing():`` stops every process on the way out."""
        try:
            yield self
        finally:
            self.close()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
