"""The command-line reference page, from the ``raftdb`` command's own argparse parser.

Every command, its usage line and its flags come from
:func:`raftdb.cli.build_parser` as ``--help`` prints them (argparse's own
formatter writes the usage and each flag's spelling), so a new command or
flag shows up here by itself. A flag group that several commands share (the
connection flags, the node settings) is listed once, where it first appears, and
linked from the others. ``docs/cli.md`` is the guide, with real output.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass

from raftdb.cli import build_parser
from refpages.md import anchor, cell, code, table, text

__all__ = ["PATH", "Command", "commands", "page"]

#: Where the page is in the site.
PATH = "reference/cli.md"
#: The width usage lines are wrapped to (a terminal's would make the page depend on it).
_WIDTH = 76


@dataclass(frozen=True, slots=True)
class Command:
    """One command of the tree: ``raftdb``, ``raftdb put``, ``raftdb snapshot save``…

    Attributes:
        name: the full command line prefix (``raftdb snapshot save``).
        parser: its parser.
        summary: the one line its parent's ``--help`` shows for it ("" for ``raftdb``).
        depth: 0 for ``raftdb``, 1 for its commands, 2 for theirs.
    """

    name: str
    parser: argparse.ArgumentParser
    summary: str
    depth: int

    @property
    def anchor(self) -> str:
        """The command's anchor on the page: ``raftdb-snapshot-save``."""
        return anchor(self.name)


def _subcommands(
    parser: argparse.ArgumentParser,
) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def commands(parser: argparse.ArgumentParser | None = None) -> Iterator[Command]:
    """Every command under ``parser`` (the ``raftdb`` parser by default), depth first."""
    root = build_parser() if parser is None else parser

    def walk(current: Command) -> Iterator[Command]:
        yield current
        sub = _subcommands(current.parser)
        if sub is None:
            return
        summaries = {choice.dest: choice.help or "" for choice in sub._choices_actions}
        seen: set[int] = set()
        for name, child in sub.choices.items():
            if id(child) in seen:  # an alias
                continue
            seen.add(id(child))
            yield from walk(
                Command(f"{current.name} {name}", child, summaries.get(name, ""), current.depth + 1)
            )

    yield from walk(Command(root.prog, root, "", 0))


def _formatter(parser: argparse.ArgumentParser) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(parser.prog, width=_WIDTH)


def usage(parser: argparse.ArgumentParser) -> str:
    """The parser's usage line(s), as ``--help`` prints them on a 76-column terminal."""
    formatter = _formatter(parser)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _shown_actions(group: argparse._ArgumentGroup) -> list[argparse.Action]:
    return [
        action
        for action in group._group_actions
        if action.help != argparse.SUPPRESS
        and not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
    ]


def _flag_rows(parser: argparse.ArgumentParser, actions: list[argparse.Action]) -> list[list[str]]:
    formatter = _formatter(parser)
    rows = []
    for action in actions:
        invocation = formatter._format_action_invocation(action)
        help_text = formatter._expand_help(action) if action.help else ""
        rows.append([code(invocation), cell(text(help_text))])
    return rows


def _section(command: Command, shared: dict[tuple[str, ...], tuple[str, str]]) -> list[str]:
    parser = command.parser
    level = "#" * min(2 + command.depth, 4) if command.depth else "##"
    lines = [f"{level} {code(command.name)} {{ #{command.anchor} }}", ""]
    if command.summary:
        lines += [f"*{text(command.summary)}*", ""]
    if parser.description:
        lines += [text(parser.description), ""]
    lines += ["```text", usage(parser), "```", ""]
    sub = _subcommands(parser)
    if sub is not None:
        rows = [
            [f"[{code(name)}](#{anchor(name)})", cell(text(choice.help or ""))]
            for name, choice in (
                (f"{command.name} {choice.dest}", choice) for choice in sub._choices_actions
            )
        ]
        lines += [table(["command", "what it does"], rows)]
    for group in parser._action_groups:
        actions = _shown_actions(group)
        if not actions:
            continue
        title = group.title or "options"
        key = (title, *(action.dest for action in actions))
        if title not in ("positional arguments", "options") and key in shared:
            where, first = shared[key]
            lines += [f"**{text(title)}**: the same as for [{code(first)}](#{where}).", ""]
            continue
        shared.setdefault(key, (command.anchor, command.name))
        lines += [f"**{text(title)}**", ""]
        if group.description:
            lines += [text(group.description), ""]
        lines += [table(["argument", "what it does"], _flag_rows(parser, actions))]
    if parser.epilog:
        lines += [text(parser.epilog), ""]
    return lines


def page(parser: argparse.ArgumentParser | None = None) -> str:
    """The page's Markdown: each command with its usage and flags, depth first."""
    tree = list(commands(parser))
    lines = [
        "# Command-line reference",
        "",
        "Every command of `raftdb` with its usage and flags, generated when the site is "
        "built from the command's own argument parser (`raftdb.cli.build_parser`): the same "
        "text `raftdb COMMAND --help` prints. The [command guide](../cli.md) shows each "
        "command at work, its output and its exit statuses. Every command also takes "
        "`-h`/`--help`. The *node settings* flags are the node's configuration keys, "
        "described in the [configuration reference](configuration.md).",
        "",
    ]
    shared: dict[tuple[str, ...], tuple[str, str]] = {}
    for command in tree:
        lines += _section(command, shared)
    return "\n".join(lines) + "\n"
