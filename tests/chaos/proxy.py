"""A controllable TCP proxy in front of every node's peer port: partitions and slow links.

How a chaos cluster is wired
----------------------------
Every node listens for peers on a private port (``listen_peer_url``), and its
entry in ``cluster`` (what the other nodes dial) is a *public* port where this
proxy listens. So every byte a node sends to a peer goes through the proxy in
front of the receiver. raftdb's peer connections carry Raft messages one way
only (the caller writes MESSAGES frames, the listener only answers the HELLO
and snapshot acknowledgements, :mod:`raftdb.transport`), and every connection
opens with a HELLO frame naming the caller: reading that frame tells the proxy
which *directed link* (sender → receiver) a connection is. A rule per directed
link decides what happens to the frames on it:

``pass``    forwarded at once;
``drop``    MESSAGES frames are dropped in silence and the connection stays up
            (a black hole: the sender believes it is connected, as with a
            firewall dropping packets); a snapshot stream on the link is cut;
``refuse``  the link's connections are closed and new ones are closed right
            after their HELLO (a partition the sender notices at once);
``delay``   every frame is held ``delay`` seconds (times a random factor in
            ``[1 - jitter, 1 + jitter]``) before it is forwarded, in order.

The proxy forwards whole frames (it parses the frame headers, nothing else),
so a dropped or delayed message is always a whole Raft message batch, never a
torn frame. Frames already held by a ``delay`` rule are still delivered when a
partition starts, as packets in flight would be.

The proxy is a separate process (``python -m tests.chaos.proxy``), so the test
process's own load never slows the links. It is driven by
:class:`ProxyControl` over its stdin and stdout, one JSON object per line each
way: ``{"cmd": "listen", "node": 1, "public": P, "private": Q}``,
``{"cmd": "rules", "rules": [[src, dst, mode, delay, jitter], ...]}`` (links
not listed pass), ``{"cmd": "stats"}``. It exits when its stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Literal

from raftdb.transport.frames import (
    FRAME_HEADER,
    MAX_CHUNK_FRAME,
    FrameKind,
    WireError,
    decode_hello,
)

__all__ = ["LinkRule", "Mode", "ProxyControl", "ProxyError"]

Mode = Literal["pass", "drop", "refuse", "delay"]
Link = tuple[int, int]

#: Frames held per connection before the proxy stops reading from the sender.
_QUEUE_FRAMES: Final = 4096
#: The first bytes of a TLS handshake record (a caller using peer TLS).
_TLS_RECORD: Final = b"\x16\x03"
#: Longest a caller may take to send its HELLO.
_HELLO_TIMEOUT: Final = 5.0
#: Longest a connection to a node's private port may take.
_CONNECT_TIMEOUT: Final = 2.0
#: Longest the controller waits for the proxy's answer to a command.
_ANSWER_TIMEOUT: Final = 10.0

_REPO_ROOT: Final = Path(__file__).resolve().parents[2]
_PR_SET_PDEATHSIG: Final = 1

log = logging.getLogger("chaos.proxy")


@dataclass(frozen=True, slots=True)
class LinkRule:
    """What happens to the frames of one directed link (see the module docstring)."""

    mode: Mode = "pass"
    delay: float = 0.0
    jitter: float = 0.0


PASS: Final = LinkRule()


class ProxyError(RuntimeError):
    """The proxy process failed or did not answer."""


# -- the proxy process -----------------------------------------------------------------


class _Conn:
    """One proxied connection: the caller's streams and the node's."""

    __slots__ = ("down_writer", "link", "tasks", "up_writer")

    def __init__(
        self, link: Link, down_writer: asyncio.StreamWriter, up_writer: asyncio.StreamWriter
    ) -> None:
        self.link = link
        self.down_writer = down_writer
        self.up_writer = up_writer
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        self.down_writer.transport.abort()
        self.up_writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class _Proxy:
    def __init__(self) -> None:
        self.rules: dict[Link, LinkRule] = {}
        self.servers: dict[int, asyncio.Server] = {}
        self.conns: set[_Conn] = set()
        self.stats: Counter[str] = Counter()
        self.rng = random.Random(os.getpid())

    def rule(self, link: Link) -> LinkRule:
        return self.rules.get(link, PASS)

    async def listen(self, node: int, public: int, private: int) -> None:
        if node in self.servers:
            return

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.serve(node, private, reader, writer)

        self.servers[node] = await asyncio.start_server(accept, "127.0.0.1", public)
        log.info("node %d: proxy 127.0.0.1:%d -> 127.0.0.1:%d", node, public, private)

    def set_rules(self, rules: dict[Link, LinkRule]) -> None:
        self.rules = {link: r for link, r in rules.items() if r != PASS}
        log.info("rules: %s", {f"{a}->{b}": r.mode for (a, b), r in sorted(self.rules.items())})
        for conn in list(self.conns):
            if self.rule(conn.link).mode == "refuse":
                self.stats["cut"] += 1
                conn.abort()

    async def serve(
        self, node: int, private: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            async with asyncio.timeout(_HELLO_TIMEOUT):
                header = await reader.readexactly(FRAME_HEADER.size)
                tls = header[:2] == _TLS_RECORD
                if not tls:
                    length, kind = FRAME_HEADER.unpack(header)
                    if kind != FrameKind.HELLO or length > 4096:
                        raise WireError("not a HELLO")
                    body = await reader.readexactly(length)
                    caller = decode_hello(body).node_id
        except (OSError, EOFError, asyncio.IncompleteReadError, WireError, TimeoutError):
            self.stats["bad_hello"] += 1
            writer.transport.abort()
            return
        if tls:
            # Peer TLS: the HELLO is encrypted, so the caller is unknown (link
            # rules, keyed by caller, cannot apply) and bytes pass as they are.
            body, caller = b"", 0
            self.stats["tls"] += 1
        link = (caller, node)
        if self.rule(link).mode == "refuse":
            self.stats["refused"] += 1
            writer.transport.abort()
            return
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", private)
        except (OSError, TimeoutError):
            self.stats["node_down"] += 1
            writer.transport.abort()
            return
        up_writer.write(header + body)
        conn = _Conn(link, writer, up_writer)
        self.conns.add(conn)
        self.stats["connections"] += 1
        if tls:
            forward = asyncio.create_task(self.pipe(reader, up_writer))
        else:
            forward = asyncio.create_task(self.forward(conn, reader, up_writer))
        back = asyncio.create_task(self.pipe(up_reader, writer))
        conn.tasks = [forward, back]
        try:
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.conns.discard(conn)
            conn.abort()
            await asyncio.gather(*conn.tasks, return_exceptions=True)

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Node → caller: the HELLO answer and snapshot acknowledgements, as they are."""
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def forward(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Caller → node, frame by frame, under the link's rule."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(_QUEUE_FRAMES)
        sender = asyncio.create_task(self.send(queue, writer))
        last_release = 0.0
        try:
            while True:
                try:
                    header = await reader.readexactly(FRAME_HEADER.size)
                    length, kind = FRAME_HEADER.unpack(header)
                    if length > MAX_CHUNK_FRAME + 1024:
                        return
                    body = await reader.readexactly(length)
                except (OSError, asyncio.IncompleteReadError):
                    break  # the caller is gone: deliver what is held, then close
                rule = self.rule(conn.link)
                if rule.mode == "refuse":
                    return
                if rule.mode == "drop":
                    if kind == FrameKind.MESSAGES:
                        self.stats["dropped"] += 1
                        continue
                    self.stats["snapshot_cut"] += 1
                    return
                now = time.monotonic()
                release = now
                if rule.mode == "delay":
                    factor = 1.0 + rule.jitter * (2 * self.rng.random() - 1)
                    release = now + max(0.0, rule.delay * factor)
                    self.stats["delayed"] += 1
                release = max(release, last_release)  # a link never reorders
                last_release = release
                self.stats["frames"] += 1
                await queue.put((release, header + body))
            await queue.put(None)
            await sender
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def send(
        self, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(OSError):
            while (item := await queue.get()) is not None:
                release, data = item
                wait = release - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

    async def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd.get("cmd")
        if name == "listen":
            await self.listen(int(cmd["node"]), int(cmd["public"]), int(cmd["private"]))
            return {"ok": True}
        if name == "rules":
            rules = {
                (int(a), int(b)): LinkRule(mode, float(delay), float(jitter))
                for a, b, mode, delay, jitter in cmd["rules"]
            }
            self.set_rules(rules)
            return {"ok": True}
        if name == "stats":
            return {"ok": True, "stats": dict(self.stats)}
        return {"ok": False, "error": f"unknown command {name!r}"}


async def _main() -> None:
    proxy = _Proxy()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        try:
            answer = await proxy.command(json.loads(line))
        except Exception as exc:  # report it to the controller, keep serving
            log.exception("command %r failed", line)
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    for conn in list(proxy.conns):
        conn.abort()


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )
    asyncio.run(_main())


# -- the controller ----------------------------------------------------------------------


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ProxyControl:
    """Starts the proxy process and drives it (see the module docstring).

    Args:
        log_path: where the proxy's log lines go.
    """

    def __init__(self, log_path: Path) -> None:
        self._log: IO[bytes] = log_path.open("ab")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.proxy"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=_REPO_ROOT,
            env=env,
            start_new_session=True,
            preexec_fn=_set_pdeathsig,
        )
        self.rules: dict[Link, LinkRule] = {}

    def _call(self, **cmd: Any) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None
        assert stdout is not None
        try:
            stdin.write((json.dumps(cmd) + "\n").encode())
            stdin.flush()
        except OSError as exc:
            raise ProxyError(f"the proxy is gone ({exc})") from None
        ready, _, _ = select.select([stdout], [], [], _ANSWER_TIMEOUT)
        line = stdout.readline() if ready else b""
        if not line:
            raise ProxyError(f"no answer from the proxy to {cmd} (exit code {self.proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise ProxyError(f"the proxy refused {cmd}: {answer.get('error')}")
        return answer

    def listen(self, node: int, public: int, private: int) -> None:
        """Listen on ``public`` for node ``node``, whose peer port is ``private``."""
        self._call(cmd="listen", node=node, public=public, private=private)

    def set_rules(self, rules: dict[Link, LinkRule]) -> None:
        """Replace every link rule: links not in ``rules`` pass."""
        self.rules = {link: r for link, r in rules.items() if r != PASS}
        rows = [[a, b, r.mode, r.delay, r.jitter] for (a, b), r in sorted(self.rules.items())]
        self._call(cmd="rules", rules=rows)

    def heal(self) -> None:
        """Every link passes again."""
        self.set_rules({})

    def stats(self) -> dict[str, int]:
        """Counters: connections, frames, dropped, delayed, refused, cut..."""
        stats: dict[str, int] = self._call(cmd="stats")["stats"]
        return stats

    def close(self) -> None:
        """Stop the proxy process. Idempotent."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log.close()


if __name__ == "__main__":
    main()
