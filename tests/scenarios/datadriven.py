"""A small data-driven test runner: directives, expected output, and ``--rewrite``.

A test file is a sequence of cases. Lines starting with ``#`` and blank lines
between cases are comments. A case is::

    cmd arg1 key=val key=(a,b) "quoted arg"
    optional input lines
    ----
    expected output, ending at the first blank line (or the end of the file)

When the output itself contains blank lines, the separator is doubled and the
output ends at a doubled separator::

    cmd
    ----
    ----
    output

    with a blank line
    ----
    ----

The runner hands each case to a callback and compares what it returns with
the expected output; in rewrite mode it writes the actual output back into
the file instead (choosing the doubled form only where needed), keeping every
other line as it was.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

__all__ = ["Arg", "DataDrivenError", "TestCase", "parse_directive", "parse_file", "run_file"]

SEPARATOR = "----"


class DataDrivenError(Exception):
    """A malformed test file, or a directive whose arguments the handler cannot use."""


@dataclass(frozen=True, slots=True)
class Arg:
    """One directive argument: ``key``, ``key=val`` or ``key=(v1,v2)``.

    A bare word (``3`` in ``campaign 3``) is an ``Arg`` with that key and no values.
    """

    key: str
    vals: tuple[str, ...] = ()

    def __str__(self) -> str:
        if not self.vals:
            return self.key
        if len(self.vals) == 1:
            return f"{self.key}={self.vals[0]}"
        return f"{self.key}=({','.join(self.vals)})"


@dataclass(slots=True)
class TestCase:
    """One directive with its input and expected output, and where it sits in its file."""

    __test__: ClassVar[bool] = False  # not a pytest test class, despite its name

    path: str
    line: int  # 1-based line of the directive
    cmd: str
    args: list[Arg]
    input: str
    expected: str
    # Lines [out_start, out_end) of the file hold the expected output block,
    # separators included: what a rewrite replaces.
    out_start: int = 0
    out_end: int = 0
    directive: str = ""

    @property
    def pos(self) -> str:
        """``file:line`` of the directive, for error messages."""
        return f"{self.path}:{self.line}"

    # -- argument helpers for handlers -----------------------------------------

    def positional(self) -> list[str]:
        """The bare words, in order."""
        return [a.key for a in self.args if not a.vals]

    def positional_ints(self) -> list[int]:
        """The bare words as integers (node ids, usually)."""
        out: list[int] = []
        for word in self.positional():
            try:
                out.append(int(word))
            except ValueError:
                raise DataDrivenError(f"{self.pos}: expected a number, got {word!r}") from None
        return out

    def has(self, key: str) -> bool:
        """True if ``key=...`` was given."""
        return any(a.key == key and a.vals for a in self.args)

    def vals(self, key: str) -> tuple[str, ...]:
        """The values of ``key=...`` (empty if absent)."""
        for a in self.args:
            if a.key == key and a.vals:
                return a.vals
        return ()

    def str_arg(self, key: str, default: str) -> str:
        """The single value of ``key``, or ``default``."""
        vals = self.vals(key)
        if not vals:
            return default
        if len(vals) != 1:
            raise DataDrivenError(f"{self.pos}: {key} takes one value, got {len(vals)}")
        return vals[0]

    def int_arg(self, key: str, default: int) -> int:
        """The single value of ``key`` as an integer, or ``default``."""
        raw = self.str_arg(key, str(default))
        try:
            return int(raw)
        except ValueError:
            raise DataDrivenError(f"{self.pos}: {key} must be a number, got {raw!r}") from None

    def int_list(self, key: str) -> list[int] | None:
        """The values of ``key`` as integers; None if absent. ``key=()`` is an empty list."""
        for a in self.args:
            if a.key == key and a.vals:
                if a.vals == ("",):
                    return []
                try:
                    return [int(v) for v in a.vals]
                except ValueError:
                    raise DataDrivenError(f"{self.pos}: {key} must list numbers") from None
        return None

    def bool_arg(self, key: str, default: bool) -> bool:
        """The single value of ``key`` as ``true``/``false``, or ``default``."""
        raw = self.str_arg(key, "true" if default else "false")
        if raw not in ("true", "false"):
            raise DataDrivenError(f"{self.pos}: {key} must be true or false, got {raw!r}")
        return raw == "true"


def _split_words(line: str, where: str) -> list[str]:
    """Split on spaces, keeping ``"quoted strings"`` and ``(a, b)`` groups whole."""
    words: list[str] = []
    cur: list[str] = []
    depth = 0
    quoted = False
    for ch in line:
        if quoted:
            cur.append(ch)
            if ch == '"':
                quoted = False
        elif ch == '"':
            cur.append(ch)
            quoted = True
        elif ch == "(":
            depth += 1
            cur.append(ch)
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise DataDrivenError(f"{where}: unbalanced ')'")
            cur.append(ch)
        elif ch.isspace() and depth == 0:
            if cur:
                words.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
    if quoted or depth:
        raise DataDrivenError(f"{where}: unterminated quote or parenthesis")
    if cur:
        words.append("".join(cur))
    return words


def _unquote(word: str) -> str:
    if len(word) >= 2 and word[0] == '"' and word[-1] == '"':
        return word[1:-1]
    return word


def parse_directive(line: str, where: str = "<directive>") -> tuple[str, list[Arg]]:
    """Parse ``cmd arg1 key=val key=(a,b)`` into the command and its arguments."""
    words = _split_words(line, where)
    if not words:
        raise DataDrivenError(f"{where}: empty directive")
    cmd, rest = words[0], words[1:]
    args: list[Arg] = []
    for word in rest:
        key, eq, val = word.partition("=")
        if word.startswith('"') or not eq:
            args.append(Arg(_unquote(word)))
            continue
        if not key:
            raise DataDrivenError(f"{where}: argument {word!r} has no key")
        if val.startswith("(") and val.endswith(")"):
            inner = val[1:-1]
            vals = tuple(_unquote(v.strip()) for v in inner.split(",")) if inner else ("",)
        else:
            vals = (_unquote(val),)
        args.append(Arg(key, vals))
    return cmd, args


def parse_file(path: Path) -> tuple[list[str], list[TestCase]]:
    """Read ``path``: its lines (without newlines) and its cases."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    cases: list[TestCase] = []
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        where = f"{path.name}:{i + 1}"
        cmd, args = parse_directive(line, where)
        directive_line = i + 1
        i += 1
        inputs: list[str] = []
        while i < n and lines[i] != SEPARATOR:
            if not lines[i].strip():
                raise DataDrivenError(f"{where}: blank line before '{SEPARATOR}'")
            inputs.append(lines[i])
            i += 1
        if i >= n:
            raise DataDrivenError(f"{where}: directive without '{SEPARATOR}'")
        out_start = i
        i += 1
        expected: list[str] = []
        if i < n and lines[i] == SEPARATOR:
            # Doubled separator: the output runs to the next doubled separator.
            i += 1
            while True:
                if i + 1 >= n:
                    raise DataDrivenError(f"{where}: output not closed by a doubled separator")
                if lines[i] == SEPARATOR and lines[i + 1] == SEPARATOR:
                    i += 2
                    break
                expected.append(lines[i])
                i += 1
        else:
            while i < n and lines[i].strip():
                expected.append(lines[i])
                i += 1
        cases.append(
            TestCase(
                path=path.name,
                line=directive_line,
                cmd=cmd,
                args=args,
                input="\n".join(inputs),
                expected="\n".join(expected),
                out_start=out_start,
                out_end=i,
                directive=line,
            )
        )
    return lines, cases


def _normalize(output: str) -> str:
    return "\n".join(line.rstrip() for line in output.rstrip("\n").split("\n")).strip("\n")


def _render_output(output: str) -> list[str]:
    body = output.split("\n") if output else []
    if any(not line.strip() for line in body):
        return [SEPARATOR, SEPARATOR, *body, SEPARATOR, SEPARATOR]
    return [SEPARATOR, *body]


@dataclass
class Mismatch:
    """A case whose actual output differs from the expected one."""

    case: TestCase
    actual: str

    def diff(self) -> str:
        """A unified diff, expected -> actual."""
        return "\n".join(
            difflib.unified_diff(
                self.case.expected.split("\n"),
                self.actual.split("\n"),
                "expected",
                "actual",
                lineterm="",
            )
        )


@dataclass
class RunResult:
    """What :func:`run_file` saw: cases run, and the first mismatch if any."""

    cases: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)


def run_file(path: Path, handle: Callable[[TestCase], str], rewrite: bool = False) -> RunResult:
    """Run every case of ``path`` through ``handle`` (in order, sharing its state).

    Without ``rewrite``, stops at the first case whose output differs and
    reports it (later cases would only repeat the divergence). With
    ``rewrite``, runs everything and writes the actual outputs back.
    """
    lines, cases = parse_file(path)
    result = RunResult()
    new_lines: list[str] = []
    copied = 0
    for case in cases:
        try:
            actual = _normalize(handle(case))
        except DataDrivenError:
            raise
        except Exception as e:
            raise DataDrivenError(f"{case.pos}: {case.directive!r} raised {e!r}") from e
        result.cases += 1
        if rewrite:
            new_lines.extend(lines[copied : case.out_start])
            new_lines.extend(_render_output(actual))
            copied = case.out_end
        elif actual != _normalize(case.expected):
            result.mismatches.append(Mismatch(case, actual))
            return result
    if rewrite:
        new_lines.extend(lines[copied:])
        text = "\n".join(new_lines) + "\n"
        if text != path.read_text(encoding="utf-8"):
            path.write_text(text, encoding="utf-8")
    return result
