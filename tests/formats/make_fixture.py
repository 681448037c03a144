"""Write the format fixtures: ``python -m tests.formats.make_fixture OUT``.

For each plugin pair of :data:`FIXTURES`, a one-member cluster (a real server
process) takes :func:`tests.formats.workload.write_workload`'s history, a backup
is saved (``GET /v1/snapshot``), the node is stopped cleanly, and its data
directory is copied to ``OUT/<name>/data-1`` with ``manifest.json`` beside it:
what the node served just before it stopped.

The committed fixture (``tests/formats/fixtures/``) was written by this
generator at the commit its manifests name; tests never run it, since the
point of a fixture is that it stays as an older version wrote it. Run it again
only to add a fixture for a new format (into a new directory: the old ones stay,
and every later version must still open them). See docs/formats.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from tests.formats.workload import (
    SNAPSHOT_ENTRIES,
    SNAPSHOT_KEEP_ENTRIES,
    read_state,
    write_workload,
)
from tests.integration.harness import ProcessCluster

__all__ = ["FIXTURES", "IGNORED_FILES", "main", "make_fixture"]

#: Fixture name -> (storage plugin, state machine plugin).
FIXTURES: Final = {
    "leveldb": ("leveldb", "leveldb"),
    "sqlite": ("sqlite", "leveldb"),
}
#: Files of a data directory that opening it does not need: LevelDB's text
#: logs (``LOG``, ``LOG.old``) and its lock file (made again at open).
IGNORED_FILES: Final = ("LOG", "LOG.old", "LOCK")


def _commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    commit = out.stdout.strip() or "unknown"
    return commit + ("+changes" if dirty.stdout.strip() else "")


def make_fixture(out: Path, name: str, storage: str, state_machine: str, work: Path) -> None:
    """Write fixture ``name`` into ``out / name`` (which must not exist)."""
    settings: dict[str, Any] = {
        "storage": storage,
        "state_machine": state_machine,
        "snapshot_entries": SNAPSHOT_ENTRIES,
        "snapshot_keep_entries": SNAPSHOT_KEEP_ENTRIES,
    }
    cluster = ProcessCluster(work / name, size=1, settings=settings)
    with cluster.closing():
        cluster.start_all()
        cluster.wait_leader()
        api = cluster.nodes[1].api_url
        write_workload(cluster.client, api)
        state = read_state(cluster.client, api)
        status = cluster.status(1)
        target = out / name
        target.mkdir(parents=True)
        with cluster.client.stream("GET", f"{api}/v1/snapshot") as r:
            r.raise_for_status()
            with (target / "backup.snap").open("wb") as f:
                for chunk in r.iter_bytes():
                    f.write(chunk)
        code = cluster.stop(1)
        if code not in (0, -15):  # uvicorn re-raises SIGTERM once it has shut down
            raise SystemExit(f"node of fixture {name} exited with {code}")
        if status["first_index"] <= 1 or status["first_index"] > status["applied_index"]:
            raise SystemExit(f"fixture {name}: the log was not compacted ({status})")
        shutil.copytree(
            cluster.nodes[1].data_dir,
            target / "data-1",
            ignore=shutil.ignore_patterns(*IGNORED_FILES),
        )
    manifest = {
        "written_by": _commit(),
        "settings": settings,
        "first_index": status["first_index"],
        "last_index": status["last_index"],
        **state,
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.formats.make_fixture")
    parser.add_argument("out", type=Path, help="directory to write the fixtures into (new)")
    args = parser.parse_args(argv)
    out: Path = args.out
    existing = [n for n in FIXTURES if (out / n).exists()]
    if existing:
        parser.error(f"{out} already holds {', '.join(existing)}: write into a new directory")
    with tempfile.TemporaryDirectory(prefix="raftdb-fixture-") as work:
        for name, (storage, state_machine) in FIXTURES.items():
            make_fixture(out, name, storage, state_machine, Path(work))
            print(f"{out / name}: written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
