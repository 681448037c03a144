"""``raftdb lease …`` and ``raftdb lock NAME -- COMMAND`` against a real cluster: leases
carry keys and end with them; a locked command runs with its fence, passes its exit
status through, never overlaps another holder's, and is ended when the lease is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import Cli, Result
from tests.integration.harness import ProcessCluster, wait_until


def _ok(result: Result) -> Result:
    assert result.status == 0, result.err
    return result


def test_lease_life_grant_attach_list_keepalive_revoke(cli: Cli, prefix: str) -> None:
    lease = _ok(cli("lease", "grant", "10")).text.strip()
    assert lease.isdigit()
    key = f"{prefix}k"
    _ok(cli("put", key, "v", "--lease", lease))

    info = json.loads(_ok(cli("lease", "info", lease, "-w", "json")).out)
    assert info["id"] == lease
    assert info["ttl"] == 10
    assert 0 < info["remaining"] <= 10
    assert info["keys"] == [key]
    table = _ok(cli("lease", "info", lease))
    assert key in table.text

    listed = json.loads(_ok(cli("lease", "list", "-w", "json")).out)
    assert lease in [entry["id"] for entry in listed]

    kept = _ok(cli("lease", "keepalive", lease, "--once"))
    assert kept.text == f"lease {lease} kept alive, TTL 10s\n"

    revoked = _ok(cli("lease", "revoke", lease))
    assert revoked.text == f"lease {lease} revoked\n"
    assert cli("get", key).status == 3  # its key went with it
    for argv in (("lease", "info", lease), ("lease", "revoke", lease)):
        gone = cli(*argv)
        assert gone.status == 3
        assert gone.err.startswith("raftdb: lease_not_found")
    assert cli("lease", "keepalive", lease, "--once").status == 3


def test_lease_arguments_are_checked(cli: Cli) -> None:
    assert cli("lease", "grant", "0").status == 2
    assert cli("lease", "info", "abc").status == 2
    too_short = cli("lease", "grant", "1")  # under the cluster's minimum TTL: a 400
    assert too_short.status == 2
    assert too_short.err.startswith("raftdb: bad_request")


_COMMAND = textwrap.dedent(
    """
    import os, sys, time
    log = sys.argv[1]
    fence = os.environ["RAFTDB_LOCK_FENCE"]
    with open(log, "a") as f:
        f.write(f"start {fence} {os.environ['RAFTDB_LOCK_KEY']}\\n")
    time.sleep(float(sys.argv[2]))  # the work done under the lock
    with open(log, "a") as f:
        f.write(f"end {fence}\\n")
    sys.exit(int(sys.argv[3]))
    """
)


def _lock_process(name: str, *command: str, ttl: int = 5) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "raftdb.cli", "lock", "--ttl", str(ttl), name, "--", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


@pytest.mark.deadline(60)
def test_two_lock_holders_never_overlap_and_fences_grow(
    cli: Cli, prefix: str, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    script = tmp_path / "work.py"
    script.write_text(_COMMAND)
    name = f"{prefix}lock"
    procs = [_lock_process(name, sys.executable, str(script), str(log), "0.7", "0") for _ in "ab"]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=40)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    lines = log.read_text().splitlines()
    assert len(lines) == 4, lines
    (s1, k1), (e1,), (s2, k2), (e2,) = (line.split()[1:] for line in lines)
    assert [line.split()[0] for line in lines] == ["start", "end", "start", "end"]
    assert s1 == e1
    assert s2 == e2
    assert int(s1) < int(s2)
    assert k1.startswith(name)
    assert k2.startswith(name)
    assert k1 != k2


def test_a_locked_command_s_status_is_passed_through(
    cli_process: Cli, prefix: str, tmp_path: Path
) -> None:
    script = tmp_path / "work.py"
    script.write_text(_COMMAND)
    log = tmp_path / "log"
    done = cli_process(
        "lock", f"{prefix}lock", "--", sys.executable, str(script), str(log), "0", "7"
    )
    assert done.status == 7, done.err
    assert log.read_text().startswith("start ")
    missing = cli_process("lock", f"{prefix}lock", "--", str(tmp_path / "no-such-command"))
    assert missing.status == 127
    assert "no-such-command" in missing.err


@pytest.mark.deadline(60)
def test_the_command_is_ended_when_the_lock_s_lease_is_lost(
    cli_process: Cli, shared: ProcessCluster, prefix: str
) -> None:
    holder = _lock_process(
        f"{prefix}lock",
        sys.executable,
        "-c",
        "import os, time; print(os.environ['RAFTDB_LOCK_LEASE'], os.getpid(), flush=True);"
        " time.sleep(60)",
        ttl=3,
    )
    try:
        assert holder.stdout is not None
        lease, pid = holder.stdout.readline().split()
        response = httpx.delete(shared.url(shared.wait_leader(), f"/v1/leases/{lease}"))
        assert response.status_code == 204
        _, err = holder.communicate(timeout=30)
    finally:
        holder.kill()
        holder.wait()
    assert holder.returncode == 1
    assert "lock lost" in err
    assert "the command was ended" in err

    def ended() -> bool:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        return False

    wait_until("the locked command to end", ended, 10.0)
    # The lease's end freed the lock: another holder gets it without waiting.
    again = cli_process("lock", "--wait", "5", f"{prefix}lock", "--", "true")
    assert again.status == 0, again.err
