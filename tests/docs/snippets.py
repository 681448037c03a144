"""Runs a page's ``python`` blocks in order, in one namespace, checking their ``# →`` values.

Each snippet is compiled with the page as its file name and the page's line numbers, so a
traceback points at the line of the doc. Before it runs, the docs' ports in its source
become the cluster's (:class:`~tests.docs.cluster.PortMap`); the current directory is the
scratch checkout (a snippet's relative file names land there). Every expression statement
followed by a ``# →`` comment is wrapped so that its value's ``repr``, mapped back to the
docs' ports, is compared with the comment (whitespace runs count as one space; ``...``
and the volatile values as in :mod:`tests.docs.matching`). The first difference stops the
page; a ``# →`` whose expression never ran is a failure too.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.docs.cluster import PortMap
from tests.docs.examples import ARROW, Block, ExampleError, Expectation, expectations
from tests.docs.matching import text_matches
from tests.docs.rewrite import Edit

__all__ = ["SnippetRunner"]

_SHOW = "__example_show__"

#: ``--rewrite`` wraps a ``# →`` value longer than this many columns.
REWRITE_WIDTH = 92


def _flat(text: str) -> str:
    return " ".join(text.split())


@dataclass
class SnippetRunner:
    """One page's interpreter: the namespace its snippets share."""

    ports: PortMap
    cwd: Path
    #: ``--rewrite``: replacements of the ``# →`` comments that differ go here
    rewrite: list[Edit] | None = None
    namespace: dict[str, Any] = field(default_factory=lambda: {"__name__": "__docs__"})
    checked: int = 0

    def run(self, block: Block) -> int:
        """Run ``block``; how many ``# →`` values it checked.

        Raises:
            ExampleError: the snippet raised, or showed another value than its comment.
        """
        wanted = {e.line: e for e in expectations(block)}
        source = self.ports.to_real(block.source)
        try:
            tree = ast.parse(source, filename=str(block.path))
        except SyntaxError as e:
            raise ExampleError(f"{block.where}: the snippet does not parse: {e}") from e
        ast.increment_lineno(tree, block.line)
        wrapper = _Wrap(set(wanted))
        tree = ast.fix_missing_locations(wrapper.visit(tree))
        if stray := sorted(set(wanted) - wrapper.wrapped):
            raise ExampleError(
                f"{block.path}:{stray[0]}: in the {block.where}: a `# →` must end an "
                "expression statement (its value is what is shown)"
            )
        seen: dict[int, int] = {}
        mismatches: list[ExampleError] = []

        def show(line: int, value: object) -> object:
            seen[line] = seen.get(line, 0) + 1
            actual = self.ports.to_doc(repr(value))
            expected = wanted[line]
            if not text_matches(_flat(expected.text), _flat(actual)):
                if self.rewrite is not None:
                    self.rewrite.append(_edit(block, expected, actual))
                    return value
                error = ExampleError(_mismatch(block, expected, actual))
                mismatches.append(error)
                raise error
            return value

        self.namespace[_SHOW] = show
        code = compile(tree, str(block.path), "exec")
        try:
            with _cwd(self.cwd):
                exec(code, self.namespace)
        except ExampleError:
            raise
        except Exception as e:
            if mismatches:
                raise mismatches[0] from e
            trace = "".join(traceback.format_exception(e))
            raise ExampleError(f"{block.where}: the snippet raised\n{trace}") from e
        if mismatches:
            raise mismatches[0]
        if missed := sorted(set(wanted) - set(seen)):
            raise ExampleError(
                f"{block.path}:{missed[0]}: in the {block.where}: this `# →` line never "
                "ran (a branch not taken?)"
            )
        self.checked += len(wanted)
        return len(wanted)

    def close(self) -> None:
        """Close the clients the snippets left open."""
        for value in list(self.namespace.values()):
            close = getattr(value, "close", None)
            if type(value).__name__ == "Client" and callable(close):
                with contextlib.suppress(Exception):
                    close()


class _Wrap(ast.NodeTransformer):
    """``expr`` ending on a wanted line → ``__example_show__(line, expr)``."""

    def __init__(self, lines: set[int]) -> None:
        self.lines = lines
        self.wrapped: set[int] = set()

    def visit_Expr(self, node: ast.Expr) -> ast.Expr:
        end = node.end_lineno
        if end is not None and end in self.lines:
            self.wrapped.add(end)
            call = ast.Call(
                func=ast.Name(id=_SHOW, ctx=ast.Load()),
                args=[ast.Constant(end), node.value],
                keywords=[],
            )
            return ast.copy_location(ast.Expr(value=ast.copy_location(call, node)), node)
        return node


def _edit(block: Block, expected: Expectation, actual: str) -> Edit:
    """The ``# →`` comment rewritten to ``actual``, wrapped after commas on continuation
    comments at the statement's indentation (where ``ruff format`` keeps them)."""
    line = block.source.splitlines()[expected.line - block.line - 1]
    head = f"{block.indent}{line[: expected.column]}{ARROW} "
    indent = block.indent + line[: len(line) - len(line.lstrip())]
    more = f"{indent}#   "
    chunks = _wrap(actual, REWRITE_WIDTH - len(head), REWRITE_WIDTH - len(more))
    out = [head + chunks[0]] + [more + c for c in chunks[1:]]
    return Edit(expected.line, expected.lines, tuple(out))


def _wrap(text: str, first: int, rest: int) -> list[str]:
    """``text`` cut after ``", "`` into pieces of at most ``first``, then ``rest``,
    characters where it can be."""
    lines = [""]
    for piece in re.split(r"(?<=, )", text):
        width = first if len(lines) == 1 else rest
        if lines[-1] and len(lines[-1]) + len(piece.rstrip()) > width:
            lines.append("")
        lines[-1] += piece
    return [line.rstrip() for line in lines]


def _mismatch(block: Block, expected: Expectation, actual: str) -> str:
    line = block.source.splitlines()[expected.line - block.line - 1].strip()
    return (
        f"{block.path}:{expected.line}: in the {block.where}: another value\n"
        f"    {line}\n"
        f"expected: {expected.text}\n"
        f"actual:   {actual}"
    )


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)
