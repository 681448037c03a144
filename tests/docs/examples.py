"""The examples of a Markdown page, read into values the runners execute.

A page's fenced code blocks are its examples (docs/testing.md, "Examples in the docs are
tests", has the conventions for writers):

- a ````console`` block is a shell session: a line starting with ``$ `` is a command (a
  line ending in ``\\`` goes on on the next one, as in the shell), and the lines after it,
  up to the next command, are what it prints;
- a ````python`` block is a snippet; an expression statement followed by a ``# →`` comment
  shows the value the interpreter would print (``repr``), continued, for a long value, on
  the comment-only lines right below that start with ``#`` and three spaces (at the
  statement's indentation, where ``ruff format`` keeps comments);
- any other language is data, not run (a ``file NAME`` directive writes it to a file);
- a block without a language, or in ``sh``/``bash``/``shell``, is refused: it would look
  like an example and never run.

A directive is an HTML comment (invisible on the site) right before a block, blank lines
allowed between, one or more of: ``<!-- example: not run (why) -->`` (the reason is required),
``<!-- example: file NAME -->`` (write the block to ``NAME`` before what follows runs),
``<!-- example: stop nodes -->`` (the reader stops the running cluster: the runner stops
every node it started). The parser is pure: no I/O beyond reading the page.
"""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "ARROW",
    "Block",
    "Command",
    "ExampleError",
    "Expectation",
    "Page",
    "expectations",
    "read_page",
]

#: The comment that introduces a snippet's expected value.
ARROW = "# →"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+)(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*example:\s*(?P<body>.*?)\s*-->\s*$")
_NOT_RUN = re.compile(r"^not run \((?P<reason>.+)\)$")
_FILE = re.compile(r"^file (?P<name>[\w.\-/]+)$")
#: A comment-only line continuing a ``# →`` value: ``#`` and (at least) two spaces.
_CONTINUATION = re.compile(r"^\s*#  ")
_REFUSED_LANGUAGES = frozenset({"", "sh", "bash", "shell", "zsh"})

Kind = Literal["console", "python", "data"]


class ExampleError(AssertionError):
    """A page breaks the conventions, or one of its examples failed (the message says
    which file, line and block)."""


@dataclass(frozen=True, slots=True)
class Command:
    """One ``$`` command of a console block and the output the page shows for it."""

    line: int  # 1-based line of the ``$`` in the page
    text: str  # without the ``$ ``; continuation lines kept, with their ``\\``
    expected: tuple[str, ...]  # the lines shown after it (trailing blank lines dropped)

    @property
    def output_line(self) -> int:
        """The page line of the first output line."""
        return self.line + self.text.count("\n") + 1


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced code block of a page."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    source: str  # the content, without the fence's indentation
    indent: str  # the fence's indentation (a block in a list item)
    section: str  # the last heading above it
    not_run: str | None = None  # the reason, when marked ``not run``
    file_name: str | None = None  # for ``file NAME``
    stop_nodes: bool = False
    commands: tuple[Command, ...] = ()

    @property
    def kind(self) -> Kind:
        if self.language == "console":
            return "console"
        if self.language == "python":
            return "python"
        return "data"

    @property
    def where(self) -> str:
        """``docs/x.md:12 (console block in "Section")`` for failure messages."""
        return f'{self.path}:{self.line} ({self.language} block in "{self.section}")'


@dataclass(frozen=True, slots=True)
class Page:
    """A page's blocks, in order. ``path`` is the name messages give, ``file`` the file."""

    path: Path
    file: Path
    blocks: tuple[Block, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Expectation:
    """A ``# →`` comment of a snippet: the value shown for the expression ending on ``line``."""

    line: int  # line in the page
    column: int  # of the arrow's ``#`` in the block's source (fence indentation cut)
    lines: int  # how many page lines it takes (the arrow's and its continuations)
    text: str  # the expected ``repr``, continuation lines joined with a space


def read_page(path: Path, *, shown_as: Path | None = None) -> Page:
    """Every fenced block of the Markdown page at ``path``, with its directives.

    ``shown_as`` is the path failure messages name (default ``path``).

    Raises:
        ExampleError: an unclosed fence, a block the conventions refuse, a directive
            not followed by a block or not understood, a console block not starting with
            a command.
    """
    name = shown_as or path
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    section = "(top)"
    directives: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := _DIRECTIVE.match(line):
            directives.append((i + 1, m["body"]))
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence is None:
            if line.startswith("#") and not line.startswith("#!"):
                section = line.lstrip("#").strip()
            if line.strip() and directives:
                raise ExampleError(
                    f"{name}:{directives[0][0]}: a directive must come right before a code block"
                )
            i += 1
            continue
        start = i + 1
        indent, ticks = fence["indent"], fence["fence"]
        language = fence["info"].strip().split(" ")[0] if fence["info"].strip() else ""
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != ticks:
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        if i == len(lines):
            raise ExampleError(f"{name}:{start}: a code block is never closed")
        i += 1
        if language in _REFUSED_LANGUAGES:
            what = "a block without a language" if not language else f"a {language} block"
            raise ExampleError(
                f"{name}:{start}: {what}: write a shell session as a console block "
                f"(`$ ` before each command), code as python, anything else as text"
            )
        source = "\n".join(body) + "\n"
        blocks.append(_block(name, start, language, source, indent, section, directives))
        directives = []
    if directives:
        raise ExampleError(f"{name}:{directives[0][0]}: a directive not followed by a block")
    return Page(name, path, tuple(blocks))


def _block(
    path: Path,
    line: int,
    language: str,
    source: str,
    indent: str,
    section: str,
    directives: list[tuple[int, str]],
) -> Block:
    not_run: str | None = None
    file_name: str | None = None
    stop_nodes = False
    for at, body in directives:
        if m := _NOT_RUN.match(body):
            not_run = m["reason"]
        elif m := _FILE.match(body):
            file_name = m["name"]
        elif body == "stop nodes":
            stop_nodes = True
        else:
            raise ExampleError(
                f"{path}:{at}: unknown directive {body!r} (known: "
                "'not run (<reason>)', 'file <name>', 'stop nodes')"
            )
    commands = _commands(path, line, source) if language == "console" else ()
    return Block(
        path, line, language, source, indent, section, not_run, file_name, stop_nodes, commands
    )


def _commands(path: Path, fence_line: int, source: str) -> tuple[Command, ...]:
    """The ``$`` commands of a console block and the output lines after each."""
    out: list[Command] = []
    lines = source.splitlines()
    i = 0
    while i < len(lines):
        line_no = fence_line + 1 + i
        if not lines[i].startswith("$ "):
            if not out and lines[i].strip():
                raise ExampleError(
                    f"{path}:{line_no}: a console block starts with a `$ ` command "
                    f"(got {lines[i]!r})"
                )
            i += 1
            continue
        text = [lines[i][2:]]
        while text[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            text.append(lines[i])
        i += 1
        expected: list[str] = []
        while i < len(lines) and not lines[i].startswith("$ "):
            expected.append(lines[i])
            i += 1
        while expected and not expected[-1].strip():
            expected.pop()
        out.append(Command(line_no, "\n".join(text), tuple(expected)))
    return tuple(out)


def expectations(block: Block) -> list[Expectation]:
    """The ``# →`` comments of a python block, with their continuation lines.

    Raises:
        ExampleError: the snippet cannot be tokenized.
    """
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(block.source).readline))
    except (tokenize.TokenError, SyntaxError) as e:
        raise ExampleError(f"{block.where}: the snippet does not parse: {e}") from e
    lines = block.source.splitlines()
    found: list[Expectation] = []
    for tok in tokens:
        if tok.type != tokenize.COMMENT or not tok.string.startswith(ARROW):
            continue
        row, col = tok.start
        parts = [tok.string[len(ARROW) :].strip()]
        nxt = row  # 0-based index of the next line (rows are 1-based)
        while nxt < len(lines) and _CONTINUATION.match(lines[nxt]):
            parts.append(lines[nxt].strip()[1:].strip())
            nxt += 1
        text = " ".join(p for p in parts if p)
        found.append(Expectation(block.line + row, col, len(parts), text))
    return found
