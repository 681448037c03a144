"""Runs a page's ``console`` blocks: each ``$`` command in bash, its output compared.

A command runs as ``bash -o pipefail -c <command>`` in the scratch checkout of
:class:`~tests.docs.cluster.DocsCluster`, after its ports were mapped to the cluster's
and ``$(pgrep -f '...')`` was replaced by the ids of the matching nodes started here.
Its standard output and error, interleaved as a terminal shows them, mapped back to the
docs' ports, must match the lines the page shows (:mod:`tests.docs.matching`), and it
must exit with status 0. A serve command starts a node in the background instead
(:meth:`DocsCluster.serve`); a node that a command stopped (``kill -STOP``) and another
let go on (``kill -CONT``) is waited for until it is ready again, as the page tells the
reader it may answer ``503`` for a moment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap

from tests.docs.cluster import DocsCluster
from tests.docs.examples import Block, Command, ExampleError
from tests.docs.matching import diff, lines_match
from tests.docs.rewrite import Edit

__all__ = ["COMMAND_TIMEOUT", "run_console"]

#: Longest one command may run.
COMMAND_TIMEOUT = 30.0


def run_console(docs: DocsCluster, block: Block, rewrite: list[Edit] | None = None) -> int:
    """Run every command of ``block`` in order; how many ran. With ``rewrite``, an output
    that differs is not a failure: its replacement is appended to ``rewrite``.

    Raises:
        ExampleError: a command failed or printed something else than the page shows;
            the message names the file, line and block, what ran and the difference.
    """
    for command in block.commands:
        if docs.is_serve(command.text):
            if command.expected:
                raise ExampleError(
                    f"{block.path}:{command.line}: in the {block.where}: a serve command "
                    "runs in the background; show no output after it"
                )
            docs.serve(command.text)
            continue
        ran = docs.ports.to_real(docs.substitute_pgrep(command.text))
        code, out = _bash(ran, docs)
        for node_id in docs.refresh_paused():
            docs.cluster.wait_ready(node_id)
        actual = docs.ports.to_doc(out).splitlines()
        if code == 0 and lines_match(command.expected, actual):
            continue
        if code == 0 and rewrite is not None:
            new = tuple(block.indent + line.rstrip() for line in _trim(actual))
            rewrite.append(Edit(command.output_line, len(command.expected), new))
            continue
        raise ExampleError(_failure(block, command, ran, code, actual))
    return len(block.commands)


def _bash(command: str, docs: DocsCluster) -> tuple[int, str]:
    proc = subprocess.Popen(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=docs.work,
        env=docs.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        text = out.decode(errors="replace")
        raise ExampleError(
            f"the command ran longer than {COMMAND_TIMEOUT:g}s:\n{_indent(command)}\n"
            f"it printed:\n{_indent(text)}"
        ) from None
    return proc.returncode, out.decode(errors="replace")


def _failure(block: Block, command: Command, ran: str, code: int, actual: list[str]) -> str:
    status = "exit status 0" if code == 0 else f"exit status {code} (a command must exit 0)"
    shown = "\n".join(command.expected) or "(nothing)"
    printed = "\n".join(actual) or "(nothing)"
    return (
        f"{block.path}:{command.line}: a command of the {block.where} failed\n"
        f"the page:\n{_indent('$ ' + command.text)}\n"
        f"ran as:\n{_indent(ran)}\n"
        f"{status}\n"
        f"expected:\n{_indent(shown)}\n"
        f"actual:\n{_indent(printed)}\n"
        f"{diff(command.expected, actual)}"
    )


def _trim(lines: list[str]) -> list[str]:
    out = list(lines)
    while out and not out[-1].strip():
        out.pop()
    return out


def _indent(text: str) -> str:
    return textwrap.indent(text, "    ", lambda _: True)
