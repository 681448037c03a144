"""The core stays sans-IO: no module in ``raftdb/raft/`` imports I/O, clocks, threads,
global randomness or the server stack (STYLE.md §2).

Every module is parsed with :mod:`ast` (nothing is imported), so a forbidden import
is caught even in a branch that never runs. The core's first-party imports are
followed transitively: every one must stay inside ``raftdb/raft/`` (the import-linter
contract of ``make test`` says the same for the whole package graph).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import raftdb

ROOT = Path(raftdb.__file__).resolve().parent
CORE = ROOT / "raft"

FORBIDDEN = frozenset(
    {
        "asyncio",
        "socket",
        "time",
        "threading",
        "os",
        "random",
        "plyvel",
        "starlette",
        "uvicorn",
        "subprocess",
        "select",
        "selectors",
        "concurrent",
    }
)
# The one allowed use of ``random``: the injected generator's type.
ALLOWED_FROM = {("random", "Random")}


def _resolve(module: str | None, level: int, package: str) -> str:
    """The absolute name of a (possibly relative) ``from`` import."""
    if level == 0:
        return module or ""
    parts = package.split(".")
    base = parts[: len(parts) - level + 1]
    return ".".join([*base, module] if module else base)


def imports_of(source: str, package: str) -> list[tuple[int, str, str | None]]:
    """``(line, module, name)`` for every import; ``name`` is None for ``import x``.

    Also catches ``__import__("x")`` and ``importlib.import_module("x")`` with a literal.
    """
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node.module, node.level, package)
            found.extend((node.lineno, module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            arg = node.args[0]
            if name in ("__import__", "import_module") and isinstance(arg, ast.Constant):
                found.append((node.lineno, str(arg.value), None))
    return found


def violations(source: str, package: str = "raftdb.raft") -> list[str]:
    bad = []
    for line, module, name in imports_of(source, package):
        top = module.split(".")[0]
        if top in FORBIDDEN and (module, name) not in ALLOWED_FROM:
            what = f"from {module} import {name}" if name else f"import {module}"
            bad.append(f"line {line}: {what}")
    return bad


def _module_path(module: str) -> Path | None:
    """The source file of first-party ``module`` (``raftdb.x.y``), if there is one."""
    if module != "raftdb" and not module.startswith("raftdb."):
        return None
    rel = Path(*module.split(".")[1:])
    for candidate in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def core_modules() -> list[Path]:
    return sorted(CORE.glob("*.py"))


def test_core_modules_are_found() -> None:
    names = {p.name for p in core_modules()}
    assert {"__init__.py", "rawnode.py", "raft.py", "log.py", "quorum.py", "storage.py"} <= names


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_core_module_imports_nothing_impure(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8")) == [], path.name


def test_first_party_modules_the_core_imports_are_pure_and_inside_it() -> None:
    """Follow the core's imports of ``raftdb.*`` transitively: all pure, all in ``raftdb/raft``."""
    seen: set[Path] = set()
    todo = list(core_modules())
    problems: list[str] = []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        rel = path.relative_to(ROOT).with_suffix("")
        parts = ["raftdb", *rel.parts]
        package = ".".join(parts if path.name == "__init__.py" else parts[:-1])
        source = path.read_text(encoding="utf-8")
        problems.extend(f"{path.relative_to(ROOT)} {v}" for v in violations(source, package))
        for _, module, name in imports_of(source, package):
            for candidate in (module, f"{module}.{name}" if name else module):
                target = _module_path(candidate)
                if target is not None:
                    todo.append(target)
    assert CORE / "storage.py" in seen  # the core reads through the StorageReader protocol
    assert [p.relative_to(ROOT) for p in sorted(seen) if CORE not in p.parents] == []
    assert problems == []


@pytest.mark.parametrize(
    "source",
    [
        "import os",
        "import os.path",
        "import time as _t",
        "from time import monotonic",
        "import asyncio, json",
        "from concurrent.futures import ThreadPoolExecutor",
        "import random",
        "from random import randrange",
        "from random import Random, random",
        "def f() -> None:\n    import socket",
        "try:\n    import plyvel\nexcept ImportError:\n    pass",
        "if TYPE_CHECKING:\n    from starlette.requests import Request",
        "import uvicorn",
        "import subprocess",
        "from select import select",
        "import selectors",
        "import threading",
        "mod = __import__('os')",
        "import importlib\nm = importlib.import_module('time')",
    ],
)
def test_checker_flags_forbidden_imports(source: str) -> None:
    assert violations(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "from random import Random",
        "import struct, logging, dataclasses",
        "from collections import deque",
        "from raftdb.raft.messages import Entry",
        "from . import messages",
        "import timeit_like_name_but_not_time",  # only the top-level package matters
        "x = 'import os'",
    ],
)
def test_checker_allows_pure_imports(source: str) -> None:
    assert violations(source) == []


# -- importability ---------------------------------------------------------------------

FIRST_IMPORTS = [
    "raftdb.raft",
    "raftdb.raft.rawnode",
    "raftdb.raft.log",
    "raftdb.raft.messages",
    "raftdb.raft.errors",
    "raftdb.raft.config",
    "raftdb.storage",
]


@pytest.mark.parametrize("module", FIRST_IMPORTS)
def test_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    """Whatever a program imports first must work (an import cycle breaks only some orders)."""
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1:]
