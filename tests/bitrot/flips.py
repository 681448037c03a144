"""Seeded random byte flips in one file of a data directory.

A trial is replayable from ``(seed, trial)`` alone: :func:`trial_rng` gives the
trial its own generator, which picks the file (first a kind, uniformly, then a
file of that kind, so a directory's one small ``CURRENT`` is hit as often as
its tables) and the flips in it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Flip", "file_kind", "flip_bytes", "pick_file", "trial_rng"]


@dataclass(frozen=True)
class Flip:
    """One damaged byte: ``offset`` held ``old`` and now holds ``new``."""

    offset: int
    old: int
    new: int


def trial_rng(seed: int, trial: int) -> random.Random:
    """The generator of trial ``trial`` of run ``seed``."""
    return random.Random(seed * 1_000_003 + trial)


def file_kind(data: Path, path: Path) -> str:
    """The kind of a file of a data directory, e.g. ``log/ldb`` or ``state/MANIFEST``.

    ``log/`` is the storage's (LevelDB or SQLite), ``state/`` the state
    machine's (its ``CURRENT`` names the LevelDB generation in use;
    ``state/db-*/`` are LevelDB's files).
    """
    rel = path.relative_to(data)
    top = rel.parts[0]
    name = rel.name
    if top == "state" and len(rel.parts) == 2:
        return f"state/{name}"  # the generation pointer
    if name.endswith(".ldb") or name.endswith(".sst"):
        kind = "ldb"
    elif name.endswith(".log"):
        kind = "wal"
    elif name.startswith("MANIFEST-"):
        kind = "MANIFEST"
    elif name.endswith("-wal"):
        kind = "sqlite-wal"
    elif name.endswith(".sqlite3"):
        kind = "sqlite-db"
    else:
        kind = name  # CURRENT, LOG, LOG.old, cluster-id
    return f"{top}/{kind}" if top != name else kind


def pick_file(rng: random.Random, data: Path, exclude: tuple[str, ...] = ()) -> tuple[str, Path]:
    """A random non-empty file of ``data``: a kind uniformly, then a file of it."""
    kinds: dict[str, list[Path]] = {}
    for path in sorted(data.rglob("*")):
        if path.is_file() and path.stat().st_size > 0:
            kind = file_kind(data, path)
            if kind not in exclude:
                kinds.setdefault(kind, []).append(path)
    kind = rng.choice(sorted(kinds))
    return kind, rng.choice(kinds[kind])


def flip_bytes(rng: random.Random, path: Path, most: int) -> list[Flip]:
    """Change 1..``most`` bytes of ``path`` at random offsets (each XORed with a
    random non-zero byte, so it does change); returns the flips in order."""
    data = bytearray(path.read_bytes())
    flips = []
    for _ in range(rng.randint(1, most)):
        at = rng.randrange(len(data))
        old = data[at]
        data[at] ^= rng.randrange(1, 256)
        flips.append(Flip(at, old, data[at]))
    path.write_bytes(bytes(data))
    return flips
