"""The layer contract bites: an import against it fails ``lint-imports`` naming the rule.

``make test`` runs ``lint-imports`` on the tree as it is (docs/architecture.md);
these tests add one forbidden import to a copy of the tree and check that the
contract it breaks is reported by name, so a contract cannot silently stop
covering what it was written for (a renamed package, a typo in a module list).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

LAYERS = "Layers: cli > app > http > node"
PURE_CORE = "The Raft core (raftdb.raft) imports nothing else of raftdb"
NO_TESTING = "Nothing in raftdb imports raftdb.testing"
PLUGIN_API = "The shipped plugins import only the public plugin API"
CLIENT_ALONE = "The Python client (raftdb.client) imports nothing else of raftdb"
CLIENT_UNUSED = "Nothing in raftdb's server imports raftdb.client"


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is missing: make test installs import-linter"
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'plugins'}"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the sources and the contract, to add forbidden imports to."""
    copy = tmp_path_factory.mktemp("tree")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "raftdb", copy / "raftdb", ignore=ignore)
    shutil.copytree(ROOT / "plugins", copy / "plugins", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def test_the_copied_tree_keeps_the_contract(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "statement", "contracts", "detail"),
    [
        (
            "raftdb/raft/log.py",
            "import raftdb.storage.memory",
            [LAYERS, PURE_CORE],
            "raftdb.raft.log -> raftdb.storage.memory",
        ),
        (
            "raftdb/storage/memory.py",
            "import raftdb.http.app",
            [LAYERS],
            "raftdb.storage.memory -> raftdb.http.app",
        ),
        (
            "raftdb/kv/rwlock.py",
            "import raftdb.storage.disk",
            [LAYERS],
            "raftdb.kv.rwlock -> raftdb.storage.disk",
        ),
        (
            "raftdb/transport/frames.py",
            "import raftdb.kv.snapshot",
            [LAYERS],
            "raftdb.transport.frames -> raftdb.kv.snapshot",
        ),
        (
            "raftdb/node/disk.py",
            "import raftdb.testing.conformance.checks",
            [NO_TESTING],
            "raftdb.node.disk -> raftdb.testing.conformance.checks",
        ),
        (
            "plugins/raftdb_sqlite/storage.py",
            "import raftdb.storage.disk",
            [PLUGIN_API],
            "raftdb_sqlite.storage -> raftdb.storage.disk",
        ),
        (
            "raftdb/client/_core.py",
            "import raftdb.kv.commands",
            [CLIENT_ALONE],
            "raftdb.client._core -> raftdb.kv.commands",
        ),
        (
            "raftdb/http/app.py",
            "import raftdb.client",
            [CLIENT_UNUSED],
            "raftdb.http.app -> raftdb.client",
        ),
    ],
)
def test_a_forbidden_import_is_reported_by_its_rule(
    tree: Path, module: str, statement: str, contracts: list[str], detail: str
) -> None:
    path = tree / module
    original = path.read_text(encoding="utf-8")
    path.write_text(f"{original}\n{statement}  # the import under test\n", encoding="utf-8")
    try:
        result = _lint(tree)
    finally:
        path.write_text(original, encoding="utf-8")
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    flat = " ".join(broken.split())
    for name in contracts:
        assert " ".join(name.split()) in flat, result.stdout
    assert detail in flat, result.stdout
