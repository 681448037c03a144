"""The systems under test: how each starts its nodes, finds its leader, is preloaded.

Each :class:`System` starts its processes in a :class:`ProcessSet` of its
own, under a fresh directory, on free ports of 127.0.0.1, and waits until
every node answers and (for the replicated ones) a leader is known.
:meth:`System.stop` stops every process and removes the directory.

- ``raftdb``: ``raftdb serve`` × 3, LevelDB storage and state machine, fsync on.
- ``etcd``: Debian's ``etcd`` 3.4 × 3, default settings (fsync on), the
  HTTP/JSON gateway on the client port.
- ``pysyncobj``: :mod:`benchmarks.cluster.pysyncobj_server` × 3 (no fsync:
  PySyncObj keeps its log in memory).
- ``starlette`` and ``asgi``: :mod:`benchmarks.cluster.apps` on uvicorn × 3,
  independent processes (nothing is replicated; "leader" is the first).
- ``raftdb-1`` and ``etcd-1``: the same two as clusters of **one member**
  (issue 15's one-member target), measured on writes to that member only.
"""

from __future__ import annotations

import base64
import concurrent.futures
import functools
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

from benchmarks.cluster.procs import (
    HOST,
    BenchError,
    ProcessSet,
    free_ports,
    http_json,
    http_request,
    wait_until,
)
from benchmarks.cluster.wrk import Api

__all__ = [
    "SYSTEMS",
    "AsgiApp",
    "Etcd",
    "PySyncObjServer",
    "Etcd1",
    "Raftdb",
    "Raftdb1",
    "Running",
    "StarletteApp",
    "System",
    "read_key",
]

#: The repository root: child Python processes import ``benchmarks.cluster`` from it.
REPO: Final = Path(__file__).resolve().parents[2]
NODES: Final = 3
START_TIMEOUT_S: Final = 60.0
#: The value preloaded for the read runs (as the write runs' values: 100 bytes).
VALUE: Final = b"v" * 100


def read_key(i: int) -> str:
    """The ``i``-th preloaded key (``load.lua`` reads the same names)."""
    return f"r{i:06d}"


@dataclass(frozen=True)
class Running:
    """A started system.

    Attributes:
        ports: the client (HTTP) port of each node.
        pids: each node's server process.
        leader: the index in ``ports`` of the leader (0 when nothing is replicated).
    """

    ports: list[int]
    pids: list[int]
    leader: int

    def followers(self) -> list[int]:
        """The indexes of the nodes that are not the leader."""
        return [i for i in range(len(self.ports)) if i != self.leader]


def _python_env(*first: Path) -> dict[str, str]:
    """The environment of a child Python: ``first`` and the repository on its path."""
    env = dict(os.environ)
    paths = [*map(str, first), str(REPO), *filter(None, [env.get("PYTHONPATH", "")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


class System(ABC):
    """One system under test.

    Args:
        workdir: parent of the system's data directory.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    api: ClassVar[Api] = "rest"
    #: Has a linearizable read distinct from its local read.
    linearizable: ClassVar[bool] = True
    #: Keys must be written before reads (a real store).
    stores: ClassVar[bool] = True
    #: How many nodes it runs.
    members: ClassVar[int] = NODES
    #: The operations and modes measured on it (``None``: all that apply).
    only_ops: ClassVar[tuple[str, ...] | None] = None
    only_modes: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs = ProcessSet(self.name)
        self.dir: Path | None = None
        self.running: Running | None = None

    def start(self) -> Running:
        """Start the nodes and wait until they serve (and a leader is known)."""
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.workdir))
        ports, pids = self.launch(self.dir)
        for port in ports:
            wait_until(
                f"{self.name} on port {port}",
                functools.partial(self._ready_or_none, port),
                START_TIMEOUT_S,
                self.procs.check_running,
            )
        leader = wait_until(
            f"a {self.name} leader",
            lambda: self.find_leader(ports),
            START_TIMEOUT_S,
            self.procs.check_running,
        )
        self.running = Running(ports=ports, pids=pids, leader=leader)
        return self.running

    def _ready_or_none(self, port: int) -> bool | None:
        return True if self.node_ready(port) else None

    def _found_or_none(self, port: int, key: str) -> bool | None:
        return True if self.stale_read_found(port, key) else None

    def stop(self) -> None:
        """Stop every process and remove the data directory."""
        self.procs.stop_all()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        self.running = None

    @abstractmethod
    def launch(self, directory: Path) -> tuple[list[int], list[int]]:
        """Start the node processes; returns their client ports and pids."""

    @abstractmethod
    def node_ready(self, port: int) -> bool:
        """Whether the node on ``port`` serves."""

    def find_leader(self, ports: list[int]) -> int | None:
        """The index of the leader in ``ports``, or ``None`` while there is none."""
        return 0

    def put_request(self, key: str, value: bytes) -> tuple[str, str, bytes]:
        """``(method, path, body)`` of a write."""
        return "PUT", f"/v1/kv/{key}", value

    def stale_read_found(self, port: int, key: str) -> bool:
        """Whether the node on ``port`` has ``key`` locally."""
        status, _ = http_request(port, "GET", f"/v1/kv/{key}?consistency=stale")
        return status == 200

    def preload(self, count: int) -> None:
        """Write the keys :func:`read_key` 0..count-1 through the leader; wait for every node."""
        running = self.running
        if running is None or not self.stores:
            return
        port = running.ports[running.leader]
        local = threading.local()

        def put(i: int) -> None:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(HOST, port, timeout=30)
            method, path, body = self.put_request(read_key(i), VALUE)
            status, answer = http_request(port, method, path, body, conn=conn)
            if status not in (200, 201, 204):
                raise BenchError(f"{self.name}: preload write answered {status}: {answer[:200]!r}")

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(put, range(count)))
        last = read_key(count - 1)
        for node_port in running.ports:
            wait_until(
                f"{self.name} on port {node_port} to have the preloaded keys",
                functools.partial(self._found_or_none, node_port, last),
                START_TIMEOUT_S,
                self.procs.check_running,
            )


class _RaftdbShapedApi(System):
    """A system that answers raftdb's ``/readyz`` and ``/v1/status`` (raftdb, and
    the PySyncObj server written to the same REST shape)."""

    def node_ready(self, port: int) -> bool:
        status, _ = http_request(port, "GET", "/readyz")
        return status == 200

    def find_leader(self, ports: list[int]) -> int | None:
        for i, port in enumerate(ports):
            status = http_json(port, "GET", "/v1/status")
            if status is not None and status.get("role") == "leader":
                return i
        return None


class Raftdb(_RaftdbShapedApi):
    """``raftdb serve`` × :attr:`members` (3): LevelDB plugins, fsync on.

    Args:
        workdir: parent of the system's directory.
        source: a directory holding ``raftdb/`` and ``plugins/`` to run instead
            of the installed (editable) ones: an export of one commit. Put first
            on ``PYTHONPATH``, it wins over the editable install's finder.
        launcher: ``serve`` (``raftdb serve``, the default) or ``uvicorn``
            (``uvicorn raftdb.app:app`` with ``RAFTDB_*`` variables: the
            contract's other way to start a node; uvicorn's CLI picks its event
            loop itself, uvloop when installed).
    """

    name = "raftdb"
    label = "raftdb (LevelDB, fsync on)"

    def __init__(self, workdir: Path, source: Path | None = None, launcher: str = "serve") -> None:
        super().__init__(workdir)
        self.source = source
        self.launcher = launcher

    def launch(self, directory: Path) -> tuple[list[int], list[int]]:
        n = self.members
        ports = free_ports(2 * n)
        api_ports, peer_ports = ports[:n], ports[n:]
        cluster = ",".join(f"http://{HOST}:{p}" for p in peer_ports)
        script = Path(sys.executable).with_name("raftdb")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "raftdb.cli"]
        source = self.source
        env = _python_env(source, source / "plugins") if source else _python_env()
        pids = []
        for i, port in enumerate(api_ports, start=1):
            log = directory / f"node{i}.log"
            if self.launcher == "uvicorn":
                node_env = dict(
                    env,
                    RAFTDB_ID=str(i),
                    RAFTDB_CLUSTER=cluster,
                    RAFTDB_DATA_DIR=str(directory / f"node{i}"),
                    RAFTDB_STORAGE="leveldb",
                    RAFTDB_STATE_MACHINE="leveldb",
                    RAFTDB_SYNC="true",
                )
                argv = [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "raftdb.app:app",
                    f"--host={HOST}",
                    f"--port={port}",
                    "--log-level=warning",
                    "--no-access-log",
                ]
                proc = self.procs.start(f"raftdb-{i}", argv, log=log, env=node_env)
                pids.append(proc.pid)
                continue
            argv = [
                *command,
                "serve",
                f"--id={i}",
                f"--cluster={cluster}",
                f"--host={HOST}",
                f"--port={port}",
                f"--data-dir={directory / f'node{i}'}",
                "--storage=leveldb",
                "--state-machine=leveldb",
                "--sync",
                "--log-level=warning",
            ]
            pids.append(self.procs.start(f"raftdb-{i}", argv, log=log, env=env).pid)
        return api_ports, pids


class Etcd(System):
    """Debian's etcd 3.4 × 3 with its defaults (fsync on); the JSON gateway."""

    name = "etcd"
    label = "etcd 3.4 (gateway, fsync on)"
    api = "etcd"

    def launch(self, directory: Path) -> tuple[list[int], list[int]]:
        binary = shutil.which("etcd")
        if binary is None:
            raise BenchError("etcd is not installed (apt-get install etcd-server)")
        n = self.members
        ports = free_ports(2 * n)
        client_ports, peer_ports = ports[:n], ports[n:]
        initial = ",".join(f"n{i}=http://{HOST}:{p}" for i, p in enumerate(peer_ports, 1))
        pids = []
        for i, (client, peer) in enumerate(zip(client_ports, peer_ports, strict=True), start=1):
            argv = [
                binary,
                f"--name=n{i}",
                f"--data-dir={directory / f'n{i}'}",
                f"--listen-client-urls=http://{HOST}:{client}",
                f"--advertise-client-urls=http://{HOST}:{client}",
                f"--listen-peer-urls=http://{HOST}:{peer}",
                f"--initial-advertise-peer-urls=http://{HOST}:{peer}",
                f"--initial-cluster={initial}",
                "--initial-cluster-token=raftdb-bench",
                "--initial-cluster-state=new",
                "--logger=zap",
                "--log-level=warn",
            ]
            log = directory / f"n{i}.log"
            pids.append(self.procs.start(f"etcd-{i}", argv, log=log).pid)
        return client_ports, pids

    def node_ready(self, port: int) -> bool:
        answer = http_json(port, "GET", "/health")
        return answer is not None and answer.get("health") == "true"

    def find_leader(self, ports: list[int]) -> int | None:
        for i, port in enumerate(ports):
            status = http_json(port, "POST", "/v3/maintenance/status", {})
            if status is None:
                continue
            leader, me = status.get("leader"), status.get("header", {}).get("member_id")
            if leader and leader == me:
                return i
        return None

    def put_request(self, key: str, value: bytes) -> tuple[str, str, bytes]:
        body = {"key": _b64(key.encode()), "value": _b64(value)}
        return "POST", "/v3/kv/put", json.dumps(body).encode()

    def stale_read_found(self, port: int, key: str) -> bool:
        query = {"key": _b64(key.encode()), "serializable": True}
        answer: Any = http_json(port, "POST", "/v3/kv/range", query)
        return answer is not None and int(answer.get("count", 0)) > 0


class Raftdb1(Raftdb):
    """``raftdb serve`` as a cluster of one member (LevelDB plugins, fsync on): writes only."""

    name = "raftdb-1"
    label = "raftdb, one member (LevelDB, fsync on)"
    members = 1
    only_ops = ("put",)
    only_modes = ("leader",)


class Etcd1(Etcd):
    """Debian's etcd 3.4 as a cluster of one member (fsync on): writes only."""

    name = "etcd-1"
    label = "etcd 3.4, one member (gateway, fsync on)"
    members = 1
    only_ops = ("put",)
    only_modes = ("leader",)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class PySyncObjServer(_RaftdbShapedApi):
    """:mod:`benchmarks.cluster.pysyncobj_server` × 3 (PySyncObj: no fsync).

    Args:
        workdir: parent of the system's directory.
        server_args: extra flags (batching), default the tuned ones.
    """

    name = "pysyncobj"
    label = "PySyncObj behind Starlette (no fsync)"

    def __init__(self, workdir: Path, server_args: list[str] | None = None) -> None:
        super().__init__(workdir)
        self.server_args = server_args or []

    def launch(self, directory: Path) -> tuple[list[int], list[int]]:
        ports = free_ports(2 * NODES)
        api_ports, raft_ports = ports[:NODES], ports[NODES:]
        addresses = [f"{HOST}:{p}" for p in raft_ports]
        pids = []
        for i, port in enumerate(api_ports):
            partners = ",".join(a for j, a in enumerate(addresses) if j != i)
            argv = [
                sys.executable,
                "-m",
                "benchmarks.cluster.pysyncobj_server",
                f"--self={addresses[i]}",
                f"--partners={partners}",
                f"--port={port}",
                *self.server_args,
            ]
            log = directory / f"node{i + 1}.log"
            proc = self.procs.start(
                f"pysyncobj-{i + 1}", argv, log=log, env=_python_env(), cwd=REPO
            )
            pids.append(proc.pid)
        return api_ports, pids


class _UvicornApp(System):
    """Three independent uvicorn processes serving one of :mod:`benchmarks.cluster.apps`."""

    linearizable = False
    stores = False
    target: ClassVar[str]

    def launch(self, directory: Path) -> tuple[list[int], list[int]]:
        ports = free_ports(NODES)
        pids = []
        for i, port in enumerate(ports, start=1):
            argv = [
                sys.executable,
                "-m",
                "uvicorn",
                self.target,
                f"--host={HOST}",
                f"--port={port}",
                "--log-level=warning",
                "--no-access-log",
            ]
            log = directory / f"app{i}.log"
            proc = self.procs.start(f"{self.name}-{i}", argv, log=log, env=_python_env(), cwd=REPO)
            pids.append(proc.pid)
        return ports, pids

    def node_ready(self, port: int) -> bool:
        status, _ = http_request(port, "GET", "/v1/kv/ready")
        return status == 200


class StarletteApp(_UvicornApp):
    """The trivial Starlette app: the ceiling of any Starlette node."""

    name = "starlette"
    label = "trivial Starlette app"
    target = "benchmarks.cluster.apps:starlette_app"


class AsgiApp(_UvicornApp):
    """The bare ASGI app: the ceiling of uvicorn."""

    name = "asgi"
    label = "bare ASGI app"
    target = "benchmarks.cluster.apps:bare_app"


#: Every system, by name, in the default order of a repeat.
SYSTEMS: Final[dict[str, Callable[[Path], System]]] = {
    "raftdb": Raftdb,
    "etcd": Etcd,
    "pysyncobj": PySyncObjServer,
    "starlette": StarletteApp,
    "asgi": AsgiApp,
    "raftdb-1": Raftdb1,
    "etcd-1": Etcd1,
}
