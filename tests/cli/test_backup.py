"""``raftdb snapshot save`` and ``raftdb snapshot status`` against a real 3-node cluster:
what is saved (every acknowledged write, the stream exactly), how the file comes to be
(``.part``, checked, renamed), and one line and a status for each failure."""

# The fixtures come from a module of their own (tests/cli/conftest.py is another
# helper's): imported here, their names are parameters of the tests as well.
# ruff: noqa: F811

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from raftdb.cli import main
from raftdb.client import Client
from raftdb.http.tokens import hash_token
from raftdb.kv.snapshot import SnapshotReader, check_stream
from raftdb.testing.ports import free_ports
from tests.cli.backup_fixtures import (  # noqa: F401 (fixtures)
    backup_client,
    backup_cluster,
)
from tests.cli.conftest import endpoints
from tests.integration.harness import ProcessCluster

#: A backup test may take this long (the directory's default is 30 s).
pytestmark = pytest.mark.deadline(60)


def _keys(path: Path, prefix: bytes) -> dict[bytes, bytes]:
    """The keys under ``prefix`` in the snapshot file ``path`` (which must be whole)."""
    data = path.read_bytes()
    check_stream([data])
    reader = SnapshotReader([data])
    return {k: v for batch in reader.kv_batches() for k, v, *_ in batch if k.startswith(prefix)}


def _save(
    c: ProcessCluster, path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    status = main(["--endpoints", endpoints(c), "snapshot", "save", str(path), *extra])
    out, err = capsys.readouterr()
    return status, out, err


def test_save_writes_the_stream_checked_and_status_reads_it_back(
    backup_cluster: ProcessCluster,
    backup_client: Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    written = {f"save/{i:03d}".encode(): f"value {i}".encode() for i in range(300)}
    written[b"save/binary"] = b"\xff\x00\xfe"
    last = 0
    for key, value in written.items():
        last = backup_client.put(key, value).index
    path = tmp_path / "backup.snap"

    status, out, err = _save(backup_cluster, path, capsys, "-w", "json")

    assert status == 0, err
    saved = json.loads(out)
    assert not Path(str(path) + ".part").exists()
    data = path.read_bytes()
    assert saved["file"] == str(path)
    assert saved["bytes"] == len(data)
    assert saved["sha256"] == hashlib.sha256(data).hexdigest()
    assert saved["index"] >= last
    assert _keys(path, b"save/") == written
    assert saved["keys"] >= len(written)
    assert [m["id"] for m in saved["members"]] == [1, 2, 3]
    assert "checking backup.snap.part" in err  # the progress bars go to stderr

    assert main(["snapshot", "status", str(path), "--output", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for field in ("index", "term", "members", "keys", "leases", "sessions", "changes", "bytes"):
        assert report[field] == saved[field], field
    assert report["sha256"] == saved["sha256"]

    assert main(["snapshot", "status", str(path)]) == 0
    table = capsys.readouterr().out
    assert "history changes" in table
    assert str(saved["index"]) in table


def test_the_table_of_save(
    backup_cluster: ProcessCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _save(backup_cluster, tmp_path / "t.snap", capsys)
    assert status == 0, err
    assert f"saved {tmp_path / 't.snap'} (from http://127.0.0.1:" in err
    header = out.splitlines()[1]
    for column in ("index", "term", "keys", "bytes", "sha256"):
        assert column in header


def test_every_write_acknowledged_before_the_save_is_in_it_under_load(
    backup_cluster: ProcessCluster,
    backup_client: Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    acknowledged: list[bytes] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        with Client(endpoints(backup_cluster), timeout=10.0) as c:
            n = 0
            while not stop.is_set():
                key = f"load/{n:06d}".encode()
                try:
                    c.put(key, b"x" * 64)
                except BaseException as e:  # shown by the test
                    failures.append(e)
                    return
                acknowledged.append(key)
                n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(acknowledged) < 50 and writer.is_alive():
            stop.wait(0.01)
        before = list(acknowledged)  # acknowledged before the save starts
        status, _, err = _save(backup_cluster, tmp_path / "load.snap", capsys)
    finally:
        stop.set()
        writer.join(30)
    assert not failures, failures
    assert status == 0, err
    saved = _keys(tmp_path / "load.snap", b"load/")
    missing = [k for k in before if k not in saved]
    assert not missing
    assert len(saved) >= len(before)


def test_an_existing_file_is_kept_unless_overwrite(
    backup_cluster: ProcessCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "kept.snap"
    path.write_bytes(b"an older backup")
    status, out, err = _save(backup_cluster, path, capsys)
    assert status == 2
    assert out == ""
    assert err.strip().splitlines() == [
        f"raftdb: {path} exists already: give another name, or --overwrite to replace it"
    ]
    assert path.read_bytes() == b"an older backup"

    status, _, err = _save(backup_cluster, path, capsys, "--overwrite")
    assert status == 0, err
    check_stream([path.read_bytes()])


def test_no_member_answering_is_status_6_and_leaves_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (port,) = free_ports(1)  # nothing listens there
    path = tmp_path / "none.snap"
    status = main(
        ["snapshot", "save", str(path), "--endpoints", f"http://127.0.0.1:{port}", "--timeout", "1"]
    )
    err = capsys.readouterr().err
    assert status == 6
    lines = err.strip().splitlines()
    assert lines[-1].startswith("raftdb: endpoints_unavailable: GET /v1/snapshot: gave up")
    assert all(not line.startswith("raftdb:") for line in lines[:-1])  # only progress above
    assert sorted(os.listdir(tmp_path)) == []


@pytest.fixture
def good_file(backup_cluster: ProcessCluster, tmp_path: Path) -> Path:
    path = tmp_path / "good.snap"
    with Client(endpoints(backup_cluster)) as c, path.open("wb") as f:
        c.put("damage/k", "v" * 2000)
        c.snapshot(f)
    return path


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("flip", "fails its checksum"),
        ("truncate", "truncated"),
        ("append", "data follows the end"),
        ("text", "bad magic"),
    ],
)
def test_status_of_a_damaged_file_is_one_line_and_status_1(
    good_file: Path, capsys: pytest.CaptureFixture[str], damage: str, why: str
) -> None:
    data = bytearray(good_file.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "truncate":
        del data[len(data) - 10 :]
    elif damage == "append":
        data += b"\x00"
    else:
        data = bytearray(b"key = value\n" * 10)
    good_file.write_bytes(bytes(data))
    assert main(["snapshot", "status", str(good_file)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"raftdb: {good_file}: not a whole snapshot: ")
    assert why in lines[-1]
    assert all(not line.startswith("raftdb:") for line in lines[:-1])  # only progress above


def test_status_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snapshot", "status", str(tmp_path / "nope.snap")]) == 1
    assert capsys.readouterr().err == f"raftdb: {tmp_path / 'nope.snap'}: no such file\n"


def test_through_a_process(backup_cluster: ProcessCluster, tmp_path: Path) -> None:
    """The exit statuses as a script sees them, and stderr one line on failure."""
    path = tmp_path / "proc.snap"
    env = {**os.environ, "RAFTDB_ENDPOINTS": endpoints(backup_cluster), "RAFTDB_OUTPUT": "json"}
    cli = [sys.executable, "-m", "raftdb.cli", "snapshot"]
    saved = subprocess.run(
        [*cli, "save", str(path)], env=env, capture_output=True, text=True, timeout=30
    )
    assert saved.returncode == 0, saved.stderr
    assert json.loads(saved.stdout)["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(path.read_bytes()[:-1])
    checked = subprocess.run(
        [*cli, "status", str(path)], env=env, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 1
    assert checked.stdout == ""
    assert checked.stderr.strip().splitlines()[-1].startswith(f"raftdb: {path}: not a whole")


def test_save_needs_an_admin_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = tmp_path / "tokens.toml"
    entry = '[[token]]\nname = "{name}"\nsha256 = "{digest}"\nrole = "{role}"\n'
    tokens.write_text(
        entry.format(name="ops", digest=hash_token("admin-token"), role="admin")
        + entry.format(name="app", digest=hash_token("write-token"), role="write")
    )
    c = ProcessCluster(tmp_path / "secured", size=1)
    with c.closing():
        c.start(1, tokens_file=str(tokens))
        monkeypatch.setenv("RAFTDB_ENDPOINTS", c.nodes[1].api_url)
        denied = tmp_path / "denied.snap"
        monkeypatch.setenv("RAFTDB_TOKEN", "write-token")
        assert main(["snapshot", "save", str(denied)]) == 7
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("raftdb: forbidden: ")
        assert "admin" in err[-1]
        assert not denied.exists()
        assert not Path(str(denied) + ".part").exists()

        monkeypatch.setenv("RAFTDB_TOKEN", "admin-token")
        assert main(["snapshot", "save", str(tmp_path / "ok.snap")]) == 0
        check_stream([(tmp_path / "ok.snap").read_bytes()])
