"""The cluster the docs' examples run against: ``make run``'s nodes, on free ports.

The pages show the fixed ports of ``make run`` (``Procfile``): client API on 12380,
22380, 32380, peers on 12379, 22379, 32379, and the ports an added node N would take
(N2380, N2379; nodes 4 and 5). :class:`DocsCluster` reserves free ports for nodes 1 to 5
with :class:`~tests.integration.harness.ProcessCluster` and rewrites every example with
:class:`PortMap` before it runs (and what it printed back, before it is compared), so the
examples run as written on a shared machine.

Commands run in a scratch directory that plays the checkout: ``.venv`` links to the
virtual environment running the tests, whose ``bin/`` is first on ``PATH`` (as after
``. .venv/bin/activate``), so ``raftdb``, ``uvicorn`` and ``.venv/bin/raftdb`` work as
written, and relative data directories (``raftdb-1``, ``data/1``) land there.

A *serve command* (``raftdb serve ...``, ``uvicorn raftdb.app:app ...``; a trailing ``&``
allowed) is never run in the foreground: it becomes node N of the cluster, N being the
node whose client port its ``--port`` names, started in the background with its log in
the cluster's directory, and the runner waits until it is ready (``/readyz``), or only
alive (``/healthz``) when no other node is running (one node alone has no quorum). Every
process is stopped when the test ends (:meth:`ProcessCluster.close`).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.docs.examples import ExampleError
from tests.integration.harness import (
    START_TIMEOUT,
    NodeProc,
    ProcessCluster,
    ServerError,
    set_pdeathsig,
    wait_until,
)

__all__ = ["DOC_NODES", "DocsCluster", "PortMap", "doc_ports"]

#: Nodes whose ports the pages may name: make run's three, then 4 and 5.
DOC_NODES = (1, 2, 3, 4, 5)

#: How long the runner waits for a leadership transfer it asks for.
LEADER_TIMEOUT = 20.0


def doc_ports(node_id: int) -> tuple[int, int]:
    """The client and peer ports the docs give node ``node_id`` (``N2380``, ``N2379``)."""
    return node_id * 10_000 + 2380, node_id * 10_000 + 2379


class PortMap:
    """The docs' fixed ports ↔ the cluster's real ones, in both directions, each in one pass.

    Towards the real ports every occurrence of a documented port (a whole number:
    ``--port 42380`` as well as ``127.0.0.1:42380``) is replaced; back towards the docs,
    only ``127.0.0.1:<port>``, so that no index or size that happens to equal a port is
    touched.
    """

    def __init__(self, doc_to_real: Mapping[int, int]) -> None:
        self._to_real = {str(d): str(r) for d, r in doc_to_real.items()}
        self._to_doc = {r: d for d, r in self._to_real.items()}
        self._doc_re = re.compile(r"(?<![0-9])(" + "|".join(self._to_real) + r")(?![0-9])")
        self._real_re = re.compile(r"(?<=127\.0\.0\.1:)(" + "|".join(self._to_doc) + r")(?![0-9])")

    def to_real(self, text: str) -> str:
        return self._doc_re.sub(lambda m: self._to_real[m[1]], text)

    def to_doc(self, text: str) -> str:
        return self._real_re.sub(lambda m: self._to_doc[m[1]], text)


_PGREP = re.compile(r"\$\(pgrep -f '([^']*)'\)")
_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


@dataclass
class DocsCluster:
    """See the module docstring. ``root`` holds the node logs, ``work`` is the scratch
    checkout where the examples run."""

    root: Path
    cluster: ProcessCluster = field(init=False)
    work: Path = field(init=False)
    ports: PortMap = field(init=False)
    env: dict[str, str] = field(init=False)
    #: node id → the serve command that started it, as the page wrote it
    commands: dict[int, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.cluster = ProcessCluster(self.root, size=0)
        pairs: dict[int, int] = {}
        for i in DOC_NODES:
            node = self.cluster.add_node(i)
            api, peer = doc_ports(i)
            pairs[api], pairs[peer] = node.api_port, node.peer_port
        self.ports = PortMap(pairs)
        self.work = self.root / "checkout"
        self.work.mkdir()
        (self.work / ".venv").symlink_to(sys.prefix, target_is_directory=True)
        curl_home = self.root / "curl-home"
        curl_home.mkdir()
        # What a terminal shows: curl prints no progress meter when stdout is a terminal.
        (curl_home / ".curlrc").write_text("no-progress-meter\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTDB_")}
        env["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        env["CURL_HOME"] = str(curl_home)
        self.env = env

    # -- serve commands --------------------------------------------------------------

    @staticmethod
    def is_serve(text: str) -> bool:
        """Whether the command ``text`` starts a raftdb server."""
        return _serve_argv(text) is not None

    def serve(self, text: str, *, wait: bool = True) -> NodeProc:
        """Start the serve command ``text`` (docs' ports) as a background node; see the
        module docstring.

        Raises:
            ExampleError: not a serve command, no ``--port`` of a documented node, or
                that node already running.
            ServerError: it exited, or was not ready in time.
        """
        parsed = _serve_argv(self.ports.to_real(text))
        if parsed is None:
            raise ExampleError(f"not a serve command: {text}")
        assignments, argv = parsed
        node = self._node_of(argv, text)
        if node.running:
            raise ExampleError(f"node {node.id} is already running; the page starts it again")
        program = argv[0]
        if "/" in program and not program.startswith("/"):
            argv[0] = str(self.work / program)
        env = {**self.env, **assignments}
        node.starts += 1
        with node.log_path.open("ab") as log:
            header = f"\n===== start #{node.starts} of node {node.id}: {text}\n"
            header += f"===== ran as: {shlex.join(argv)}\n"
            log.write(header.encode())
            log.flush()
            node.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.work,
                start_new_session=True,
                preexec_fn=set_pdeathsig,
            )
        node.paused = False
        self.commands[node.id] = text
        if wait:
            self.wait_serving(node.id)
        return node

    def _node_of(self, argv: list[str], text: str) -> NodeProc:
        port: str | None = None
        for i, word in enumerate(argv):
            if word == "--port" and i + 1 < len(argv):
                port = argv[i + 1]
            elif word.startswith("--port="):
                port = word.split("=", 1)[1]
        for node in self.cluster.nodes.values():
            if port == str(node.api_port):
                return node
        raise ExampleError(f"a serve command needs --port with a documented client port: {text}")

    def wait_serving(self, node_id: int) -> None:
        """Ready (``/readyz``) if another node runs, else alive (``/healthz``)."""
        others = [i for i in self.cluster.live_ids() if i != node_id]
        if others:
            self.cluster.wait_ready(node_id)
            return
        node = self.cluster.nodes[node_id]

        def alive() -> bool | None:
            assert node.proc is not None
            if (code := node.proc.poll()) is not None:
                raise ServerError(
                    f"node {node_id} exited with {code}\n{self.cluster.log_tail(node_id)}"
                )
            r = self.cluster.client.get(self.cluster.url(node_id, "/healthz"), timeout=2.0)
            return r.status_code == 200 or None

        wait_until(f"node {node_id} to answer /healthz", alive, START_TIMEOUT)

    def start_procfile(self, procfile: Path) -> list[int]:
        """Start every process of ``procfile`` (``name: command`` lines), as ``make run``
        (honcho) does, and wait until all are ready; their ids."""
        started: list[int] = []
        for line in procfile.read_text().splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            _, _, command = line.partition(":")
            started.append(self.serve(command.strip(), wait=False).id)
        for i in started:
            self.cluster.wait_ready(i)
        return started

    def make_leader(self, node_id: int) -> None:
        """Hand leadership to ``node_id`` and wait until every live node agrees, so that a
        page's session sees the leader its text shows."""

        def led() -> bool | None:
            lead = self.cluster.leader()
            if lead == node_id:
                return True
            if lead is not None:
                body = {"id": node_id}
                url = self.cluster.url(lead, "/v1/cluster/leader")
                self.cluster.client.post(url, json=body, timeout=10.0)
            return None

        wait_until(f"node {node_id} to lead", led, LEADER_TIMEOUT, interval=0.2)

    def stop_nodes(self) -> None:
        """Stop every node (as Ctrl-C stops ``make run``)."""
        for i in list(self.cluster.nodes):
            self.cluster.stop(i)

    # -- processes of the page -------------------------------------------------------

    def substitute_pgrep(self, text: str) -> str:
        """``$(pgrep -f 'PATTERN')`` → the process ids of the nodes started here whose
        command (as the page wrote it) matches ``PATTERN``: a real pgrep could find
        another cluster's node on a shared machine."""

        def pids(m: re.Match[str]) -> str:
            pattern = re.compile(m[1])
            found = [
                str(self.cluster.nodes[i].proc.pid)  # type: ignore[union-attr]
                for i, command in sorted(self.commands.items())
                if self.cluster.nodes[i].running and pattern.search(command)
            ]
            return " ".join(found)

        return _PGREP.sub(pids, text)

    def refresh_paused(self) -> list[int]:
        """Record which nodes are stopped (SIGSTOP, state ``T``); the ids that were
        stopped and run again now."""
        resumed: list[int] = []
        for node in self.cluster.nodes.values():
            if not node.running:
                continue
            assert node.proc is not None
            stopped = _stopped(node.proc.pid)
            if node.paused and not stopped:
                resumed.append(node.id)
            node.paused = stopped
        return resumed

    def close(self) -> None:
        self.cluster.close()

    def log_tails(self) -> str:
        return self.cluster.log_tails()


def _serve_argv(text: str) -> tuple[dict[str, str], list[str]] | None:
    """``(environment assignments, argv)`` of a serve command, else ``None``."""
    try:
        words = shlex.split(text.replace("\\\n", " "), comments=True)
    except ValueError:
        return None
    if words and words[-1] == "&":
        words.pop()
    assignments: dict[str, str] = {}
    while words and _ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        assignments[name] = value
    if not words or any(w in ("|", "&&", "||", ";") for w in words):
        return None
    name = Path(words[0]).name
    if name == "raftdb" and words[1:2] == ["serve"]:
        return assignments, words
    if name == "uvicorn" and "raftdb.app:app" in words:
        return assignments, words
    return None


def _stopped(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # pid (comm) state ...: comm may hold spaces, so read after its closing parenthesis
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")
