"""``raftdb status --watch``: a table redrawn in place on a terminal, one round after
another when piped or as JSON, a fixed schedule, and Ctrl-C ends it with 130."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from tests.cli.conftest import Cli
from tests.integration.harness import ProcessCluster

#: Seconds a watched process has to print what the test waits for.
WAIT_S = 30.0


def test_json_rounds_are_one_line_each_the_same_list_as_status(
    cli: Cli, shared: ProcessCluster
) -> None:
    shared.wait_leader()
    result = cli("status", "--watch", "--count", "2", "--interval", "0.2", "-w", "json")
    assert result.status == 0, result.err
    rounds = [json.loads(line) for line in result.lines]
    assert len(rounds) == 2
    once = json.loads(cli("status", "-w", "json").out)
    for rows in rounds:
        assert [row["id"] for row in rows] == [row["id"] for row in once] == [1, 2, 3]
        assert sum(row["role"] == "leader" for row in rows) == 1


def test_piped_table_prints_each_round_with_its_time(cli: Cli, shared: ProcessCluster) -> None:
    shared.wait_leader()
    result = cli("status", "--watch", "--count", "3", "--interval", "0.2")
    assert result.status == 0, result.err
    titles = [line for line in result.lines if "raftdb status · every 0.2s" in line]
    assert len(titles) == 3
    assert sum("ENDPOINT" in line for line in result.lines) == 3
    assert "\x1b[" not in result.text  # no cursor movement into a file


def test_rounds_keep_a_fixed_schedule(cli: Cli, shared: ProcessCluster) -> None:
    """Three rounds 0.5 s apart take about a second, however long each survey took
    (bounded loosely: the point is that rounds are not back to back nor drifting by a
    whole interval each)."""
    shared.wait_leader()
    started = time.monotonic()
    result = cli("status", "--watch", "--count", "3", "--interval", "0.5", "-w", "json")
    took = time.monotonic() - started
    assert result.status == 0, result.err
    assert took >= 1.0


def test_a_round_where_nothing_answers_is_shown_and_the_watch_goes_on(
    cli: Cli,
) -> None:
    from raftdb.testing.ports import free_ports

    (port,) = free_ports(1)
    result = cli(
        "status",
        "--endpoints",
        f"http://127.0.0.1:{port}",
        "--watch",
        "--count",
        "2",
        "--interval",
        "0.1",
        "--member-timeout",
        "0.5",
    )
    assert result.status == 6
    assert sum("no endpoint answered" in line for line in result.lines) == 2
    assert result.err.count("no endpoint answered within") == 1


def test_usage_errors(cli: Cli) -> None:
    for argv, message in [
        (("--count", "2"), "--count: only with --watch"),
        (("--watch", "--interval", "0"), "--interval: must be positive"),
        (("--watch", "--count", "0"), "--count: must be at least 1"),
    ]:
        result = cli("status", *argv)
        assert result.status == 2, argv
        assert message in result.err


def _read_until(fd: int, done: Callable[[bytes], bool], deadline: float, seen: bytearray) -> None:
    """Read the terminal into ``seen`` until ``done(seen)`` or the deadline."""
    while not done(bytes(seen)):
        left = deadline - time.monotonic()
        assert left > 0, f"not printed in time; got {bytes(seen)[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            seen += os.read(fd, 65536)


def test_on_a_terminal_the_table_is_redrawn_in_place_and_ctrl_c_ends_it(
    shared_env: None, shared: ProcessCluster
) -> None:
    shared.wait_leader()
    leader, follower = os.openpty()
    env = dict(os.environ, COLUMNS="160", LINES="40", TERM="xterm-256color")
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftdb.cli", "status", "--watch", "--interval", "0.2"],
        stdin=follower,
        stdout=follower,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    os.close(follower)
    seen = bytearray()
    try:
        deadline = time.monotonic() + WAIT_S
        _read_until(leader, lambda out: out.count(b"ENDPOINT") >= 1, deadline, seen)
        first = len(seen)
        # Two more rounds: each redraws over the last (the cursor goes back up).
        _read_until(leader, lambda out: out[first:].count(b"ENDPOINT") >= 2, deadline, seen)
        redraws = bytes(seen[first:])
        assert b"\x1b[1A" in redraws or b"\x1b[2K" in redraws, redraws[:500]
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    assert proc.stderr is not None
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert status == 130, err
    assert "Traceback" not in err
