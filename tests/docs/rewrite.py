"""``pytest tests/docs --rewrite``: write what the examples printed into the pages.

As for the scenario files (docs/testing.md), the expected output of every example that
printed something else is replaced in place by what it printed, and the diff is for a
person to review: a rewritten line is a claim of the docs that changed. A command that
failed (non-zero exit) or a snippet that raised is never rewritten: it still fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Edit", "apply_edits"]


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace ``count`` page lines from line ``first`` (1-based) with ``lines``."""

    first: int
    count: int
    lines: tuple[str, ...]


def apply_edits(file: Path, edits: list[Edit]) -> None:
    """Apply ``edits`` (non-overlapping) to ``file``."""
    if not edits:
        return
    lines = file.read_text(encoding="utf-8").splitlines()
    for edit in sorted(edits, key=lambda e: e.first, reverse=True):
        lines[edit.first - 1 : edit.first - 1 + edit.count] = edit.lines
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
