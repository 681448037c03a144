"""A rolling upgrade: a cluster of the previous release and this code keeps working.

The previous release's code is extracted from git (``git archive``) into the
test's directory and run with this checkout's virtualenv (``PYTHONPATH`` puts
the extracted tree and its plugins first, ahead of the editable install).
Three members, two on the older code and one on this code:

1. writes (plain puts, a lease with keys, a transaction) and linearizable
   reads through each member;
2. leadership transferred to the new member, writes, and back to an old one;
3. an old member left behind the new leader's compacted log, then caught up
   by a snapshot it receives from the new member;
4. each old member in turn stopped and restarted on the same data directory
   with this code;

and at the end every acknowledged write reads back, from every member.

``OLD_COMMIT`` is the previous release. To bump it at a release, set it to the
commit (or tag) of the release being replaced, and check docs/formats.md's
table of the versions that can be mixed, and write the commit's tree to
``tests/formats/fixtures/<commit>/source.tar.xz`` (``git archive --format=tar
<commit> raftdb plugins pyproject.toml | xz -9e``): a clone without the commit in
its history (a shallow one) runs the test from that copy instead, which
:func:`test_the_committed_copy_is_the_release` checks against git wherever git
has the commit. Without either, the test is skipped, and under ``CI=true``
fails, saying so.
"""

from __future__ import annotations

import io
import lzma
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Launcher, NodeProc, ProcessCluster, wait_until

#: The previous release: main's head before the formats work (session 7).
OLD_COMMIT = "981ca8c"
#: What the older code needs of the tree (its package and its plugins).
OLD_PATHS = ("raftdb", "plugins", "pyproject.toml")
ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=False)


def _committed_copy() -> Path:
    """Where the copy of :data:`OLD_COMMIT`'s tree is committed."""
    return ROOT / "tests" / "formats" / "fixtures" / OLD_COMMIT / "source.tar.xz"


def _git_archive() -> bytes | None:
    """``git archive OLD_COMMIT`` of :data:`OLD_PATHS` (a tar), or ``None`` when this
    clone's history does not have the commit."""
    if _git("cat-file", "-e", f"{OLD_COMMIT}^{{commit}}").returncode != 0:
        return None
    archive = _git("archive", "--format=tar", OLD_COMMIT, *OLD_PATHS)
    assert archive.returncode == 0, archive.stderr.decode()
    return archive.stdout


def extract_old_release(into: Path) -> Path:
    """:data:`OLD_COMMIT`'s tree into ``into``: from git, else from the committed copy;
    skip (fail under ``CI=true``) when there is neither."""
    archive = _git_archive()
    if archive is None and _committed_copy().exists():
        archive = lzma.decompress(_committed_copy().read_bytes())
    if archive is None:
        why = (
            f"the rolling-upgrade test needs commit {OLD_COMMIT} (the previous release) in "
            f"this clone's git history, which {ROOT} does not have (a shallow clone? "
            f"`git fetch --unshallow`), or its copy {_committed_copy()}"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def _files(tar: tarfile.TarFile) -> dict[str, bytes]:
    out = {}
    for member in tar.getmembers():
        if member.isfile():
            f = tar.extractfile(member)
            assert f is not None
            out[member.name] = f.read()
    return out


def test_the_committed_copy_is_the_release() -> None:
    """The copy a shallow clone falls back on holds exactly the release's files."""
    archive = _git_archive()
    if archive is None:
        pytest.skip(f"this clone's history does not have {OLD_COMMIT} to compare with")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        released = _files(tar)
    with tarfile.open(_committed_copy(), "r:xz") as tar:
        committed = _files(tar)
    assert committed.keys() == released.keys()
    assert [name for name in released if committed[name] != released[name]] == []


def test_a_shallow_clone_runs_the_committed_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "_git_archive", lambda: None)
    tree = extract_old_release(tmp_path)
    assert (tree / "raftdb" / "__init__.py").exists()
    assert (tree / "plugins" / "raftdb_leveldb" / "__init__.py").exists()


def _pythonpath(tree: Path) -> str:
    return f"{tree}{os.pathsep}{tree / 'plugins'}"


def check_imports(tree: Path) -> None:
    """The older code imports with this virtualenv's dependencies, from ``tree``."""
    probe = "import raftdb, raftdb.cli, raftdb_leveldb, raftdb.app; print(raftdb.__file__)"
    env = {**os.environ, "PYTHONPATH": _pythonpath(tree)}
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{OLD_COMMIT} does not import here:\n{done.stderr}"
    assert Path(done.stdout.strip()).is_relative_to(tree), done.stdout


@dataclass
class MixedCluster(ProcessCluster):
    """A :class:`ProcessCluster` whose members run the code of :attr:`old_tree` while
    their id is in :attr:`old`; the others run this checkout."""

    old_tree: Path = Path()
    old: set[int] = field(default_factory=set)

    def command(
        self, node: NodeProc, cluster: list[str], join: bool, launcher: Launcher
    ) -> tuple[list[str], dict[str, str]]:
        argv, env = super().command(node, cluster, join, launcher)
        if node.id in self.old:
            env["PYTHONPATH"] = _pythonpath(self.old_tree)
        else:
            env.pop("PYTHONPATH", None)
        return argv, env


def _code_of(c: MixedCluster, node_id: int) -> str:
    """Which code node ``node_id``'s process runs: "old" when its ``PYTHONPATH`` starts
    with the extracted tree (which :func:`check_imports` showed is what it imports),
    else "new" (this checkout, through the editable install)."""
    proc = c.nodes[node_id].proc
    assert proc is not None, f"node {node_id} is not started"
    assert proc.poll() is None, f"node {node_id} is not running"
    environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
    paths = [v.split(b"=", 1)[1] for v in environ if v.startswith(b"PYTHONPATH=")]
    return "old" if paths and paths[0] == _pythonpath(c.old_tree).encode() else "new"


def _transfer(c: ProcessCluster, to: int) -> None:
    via = c.wait_leader()
    r = c.client.post(c.url(via, "/v1/cluster/leader"), json={"id": to})
    assert r.status_code == 200, r.text
    for i in c.live_ids():
        wait_until(
            f"node {i} to follow {to}",
            lambda i=i: c.status(i)["leader"] == to,  # type: ignore[misc]
            15.0,
            on_timeout=c.log_tails,
        )


@pytest.mark.deadline(150)
def test_a_cluster_of_old_and_new_members_keeps_working(tmp_path: Path) -> None:
    old_tree = extract_old_release(tmp_path / "old")
    check_imports(old_tree)
    settings: dict[str, Any] = {"snapshot_entries": 40, "snapshot_keep_entries": 5}
    c = MixedCluster(tmp_path / "cluster", size=3, settings=settings, old_tree=old_tree, old={1, 2})
    acked: dict[str, bytes] = {}

    def write(tag: str, node_id: int, n: int = 5) -> None:
        for k in range(n):
            key, value = f"{tag}/{node_id}/{k}", f"{tag} via {node_id} #{k}".encode()
            c.put_ok(key, value, node_id=node_id)
            acked[key] = value

    def check_reads(ids: list[int]) -> None:
        for i in ids:
            for key, value in acked.items():
                assert c.get_value(i, key) == value, (i, key)

    with c.closing():
        c.start_all()
        c.wait_leader()
        assert [_code_of(c, i) for i in (1, 2, 3)] == ["old", "old", "new"]
        # 1. Writes and linearizable reads through each member, old and new.
        for i in (1, 2, 3):
            write("mixed", i)
        r = c.client.post(c.url(3, "/v1/leases"), json={"ttl": 3600})
        assert r.status_code == 201, r.text
        lease = r.json()["id"]
        for i in (1, 2, 3):
            r = c.client.put(c.url(i, f"/v1/kv/leased/{i}"), params={"lease": lease}, content=b"l")
            assert r.status_code == 204, r.text
            acked[f"leased/{i}"] = b"l"
        txn = {"success": [{"op": "put", "key": "txn/new", "value": "t"}]}
        assert c.client.post(c.url(3, "/v1/txn"), json=txn).status_code == 200
        acked["txn/new"] = b"t"
        check_reads([1, 2, 3])
        # 2. The new member leads, then an old one again.
        _transfer(c, 3)
        for i in (1, 2, 3):
            write("new-leader", i)
        check_reads([1, 2, 3])
        _transfer(c, 1)
        write("old-leader", 2)
        # 3. An old member catches up from the new leader's snapshot.
        _transfer(c, 3)
        behind = c.status(2)["applied_index"]
        c.stop(2)
        write("behind", 3, n=60)  # past snapshot_entries + snapshot_keep_entries
        assert c.status(3)["first_index"] > behind + 1  # node 2 needs a snapshot
        c.start(2)
        c.wait_applied(2, c.status(3)["applied_index"])
        # (The log line follows the restore, so it may come after the applied index.)
        wait_until(
            "node 2 to log the snapshot from the new leader",
            lambda: "installed snapshot" in c.log_tail(2, lines=200),
            15.0,
            on_timeout=c.log_tails,
        )
        check_reads([2])
        # 4. The old members are replaced by this code, one at a time, on their data.
        for i in (1, 2):
            c.stop(i)
            c.old.discard(i)
            c.start(i)
            c.wait_leader()
            write(f"upgraded-{i}", i)
            check_reads([1, 2, 3])
        assert [_code_of(c, i) for i in (1, 2, 3)] == ["new", "new", "new"]


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_clone_without_the_old_commit_fails_under_ci_and_skips_elsewhere(
    ci: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "OLD_COMMIT", "0" * 40)
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci == "true" else pytest.skip.Exception
    with pytest.raises(outcome) as info:
        extract_old_release(tmp_path)
    assert f"needs commit {'0' * 40} (the previous release)" in str(info.value)
