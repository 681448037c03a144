"""The committed data directories (``tests/formats/fixtures/``) still open and serve.

Each fixture is the data directory of a one-member cluster written by an older
commit (its ``manifest.json`` names it), with what that node served just
before it stopped. The test copies it (the committed files stay as written),
starts a real server process on the copy, and checks that it elects itself and
serves exactly the manifest through linearizable reads: every key with its
value, create and mod index; the lease and its keys; the watch history; the
membership; the compacted log's first index. Then it takes writes. The backup
saved beside each data directory restores into a new member that serves the
same keys. See docs/formats.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.formats.conftest import ClusterFactory
from tests.formats.workload import read_state
from tests.integration.harness import ProcessCluster

FIXTURES = Path(__file__).parent / "fixtures"
DATA_DIRS = sorted(p.parent for p in FIXTURES.glob("*/*/manifest.json"))


def _load(fixture: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((fixture / "manifest.json").read_text())
    return manifest


def _check_serves(cluster: ProcessCluster, manifest: dict[str, Any]) -> None:
    """Node 1 serves exactly what the manifest recorded."""
    cluster.wait_leader()
    api = cluster.nodes[1].api_url
    until = manifest["watch"][-1]["id"]
    served = read_state(cluster.client, api, watch=(manifest["watch_since"], until))
    # (A new term's empty entry moves the applied index past the manifest's, once applied.)
    assert served.pop("applied_index") >= manifest["applied_index"]
    for field in ("keys", "leases", "members", "watch_since", "watch"):
        assert served[field] == manifest[field], field


@pytest.mark.deadline(90)
@pytest.mark.parametrize("fixture", DATA_DIRS, ids=lambda p: f"{p.parent.name}-{p.name}")
def test_an_older_data_directory_opens_and_serves_its_data(
    fixture: Path, cluster_factory: ClusterFactory
) -> None:
    manifest = _load(fixture)
    cluster = cluster_factory(1, settings=manifest["settings"])
    shutil.copytree(fixture / "data-1", cluster.nodes[1].data_dir)
    cluster.start(1)
    _check_serves(cluster, manifest)
    status = cluster.status(1)
    assert status["first_index"] == manifest["first_index"]  # the compacted log, as it was
    # It takes writes, and overwrites and deletes what the fixture holds.
    index = cluster.put_ok("new/after-upgrade", "yes")
    assert index > manifest["last_index"]
    cluster.put_ok("k/003", "rewritten")
    assert cluster.delete(1, "k/004").status_code == 204
    assert cluster.get_value(1, "new/after-upgrade") == b"yes"
    assert cluster.get_value(1, "k/003") == b"rewritten"
    assert cluster.get_value(1, "k/004") is None
    # And it reopens what it wrote on top of the older files.
    assert cluster.stop(1) in (0, -15)
    cluster.start(1)
    cluster.wait_leader()
    assert cluster.get_value(1, "new/after-upgrade") == b"yes"
    assert cluster.get_value(1, "k/000") == b"value 0, second"


@pytest.mark.deadline(90)
@pytest.mark.parametrize("fixture", DATA_DIRS[:1], ids=lambda p: f"{p.parent.name}-{p.name}")
def test_an_older_backup_restores(fixture: Path, cluster_factory: ClusterFactory) -> None:
    manifest = _load(fixture)
    cluster = cluster_factory(1, settings=manifest["settings"])
    done = subprocess.run(
        [sys.executable, "-m", "raftdb.cli", "snapshot", "restore", str(fixture / "backup.snap")]
        + ["--id", "1", "--cluster", cluster.nodes[1].peer_url]
        + ["--data-dir", str(cluster.nodes[1].data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    cluster.start(1)
    _check_serves(cluster, manifest)
