"""A server with open watch streams and blocking reads still stops on SIGTERM.

uvicorn's graceful shutdown waits for open connections before it stops the
app, and a watch stream never ends by itself: before ``end_streams``, a node
with one ``curl -N`` on it ignored SIGTERM until the watcher hung up (the
chaos runs' ``stop`` fault found it). Both ways of starting a node are
checked, since ``uvicorn raftdb.app:app`` installs its signal handlers as
``raftdb serve`` does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import httpx
import pytest

from tests.integration.conftest import ClusterFactory
from tests.integration.harness import Launcher, wait_until


def _follow(url: str, lines: list[str], opened: threading.Event) -> None:
    """Read a watch stream to its end, keeping its lines."""
    try:
        with httpx.stream("GET", url, timeout=httpx.Timeout(30.0)) as response:
            opened.set()
            for line in response.iter_lines():
                lines.append(line)
    except httpx.HTTPError as e:  # the server went away mid-stream: the test says so
        lines.append(f"error: {e!r}")
    finally:
        opened.set()


def _started(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


@pytest.mark.deadline(60)
@pytest.mark.parametrize("launcher", ["cli", "env"])
def test_sigterm_ends_watch_streams_and_waits_then_the_node_stops(
    cluster_factory: ClusterFactory, launcher: Launcher
) -> None:
    c = cluster_factory(1, launcher=launcher)
    c.start_all()
    c.put_ok("app/a", "1")
    lines: list[str] = []
    opened = threading.Event()
    watch = _started(lambda: _follow(c.url(1, "/v1/watch?prefix=app/&since=0"), lines, opened))
    assert opened.wait(10), "the watch stream did not open"
    wait_until(
        "the first event", lambda: any(x.startswith("event: put") for x in lines) or None, 10
    )
    blocked: list[httpx.Response | BaseException] = []

    def blocking_read() -> None:
        try:
            url = c.url(1, "/v1/kv/app/a?wait_index=10000000&wait=5m")
            blocked.append(httpx.get(url, timeout=30.0))
        except httpx.HTTPError as e:
            blocked.append(e)

    reader = _started(blocking_read)
    wait_until("both waiting", lambda: c.metric(1, "raftdb_watchers") >= 2 or None, 10)

    code = c.stop(1, timeout=15.0)

    # uvicorn re-raises the signal once it has shut down: -15 is a graceful stop;
    # -9 would mean the harness had to kill it.
    assert code in (0, -15), f"node exited {code} on SIGTERM\n{c.log_tail(1)}"
    assert "node 1 stopped" in c.log_tail(1, lines=200), c.log_tail(1)
    watch.join(10)
    reader.join(10)
    closed = [i for i, line in enumerate(lines) if line == "event: closed"]
    assert closed, f"the stream ended without a closed event: {lines[-6:]}"
    data = json.loads(lines[closed[0] + 1].removeprefix("data: "))
    assert data["error"] == "not_ready"
    assert data["since"] >= 1  # where to resume on another member
    assert len(blocked) == 1
    answer = blocked[0]
    assert isinstance(answer, httpx.Response), answer
    assert answer.status_code == 503, answer.text
