"""``python -m tests.mutation``: the mutation check of the Raft core (``make mutants``).

Applies each mutation of ``tests/mutation/catalogue.py`` alone to a copy of
``raftdb/``, runs the deterministic simulation on it, and prints which run
caught it. Exits 1 if any mutation survived (or timed out), or if the
unmutated baseline fails; 2 on a catalogue that no longer applies.

    python -m tests.mutation                   # the whole catalogue, 300 seeds each at most
    python -m tests.mutation --seeds 40        # the bounded form make test runs
    python -m tests.mutation --only figure8 --only vote-twice
    python -m tests.mutation --list            # the catalogue, no runs
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .catalogue import CATALOGUE, Mutation, MutationError, by_name
from .runner import ROOT, Outcome, run_all


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.mutation",
        description="Every mutation of the Raft core must be caught by the simulation.",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=300,
        help="random seeds each mutant may run after the targeted schedules (default 300)",
    )
    p.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    p.add_argument(
        "--only", action="append", metavar="NAME", help="run only this mutation (repeatable)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per mutant before it counts as a timeout (default: 120 + 3 per seed)",
    )
    p.add_argument("--no-baseline", action="store_true", help="skip the run of the unmutated copy")
    p.add_argument("--list", action="store_true", help="print the catalogue and exit")
    p.add_argument(
        "--markdown",
        type=Path,
        metavar="FILE",
        help="also write the results as a Markdown table to FILE",
    )
    return p.parse_args(argv)


def _catalogue_table(mutations: list[Mutation]) -> Table:
    table = Table(title=f"{len(mutations)} mutations of raftdb/raft/")
    for col in ("mutation", "area", "file", "breaks"):
        table.add_column(col)
    for m in mutations:
        table.add_row(m.name, m.area, m.file, m.rule)
    return table


def _results_table(outcomes: list[Outcome], areas: dict[str, str], seeds: int) -> Table:
    table = Table(title=f"mutation check ({seeds} seeds at most per mutant)")
    for col in ("mutation", "area", "verdict", "caught by", "what", "runs", "time"):
        table.add_column(col, overflow="fold")
    for o in outcomes:
        style = "green" if o.clean else "bold red"
        table.add_row(
            o.name,
            areas.get(o.name, ""),
            f"[{style}]{o.status}[/]",
            o.caught_by,
            o.reason,
            str(o.runs),
            f"{o.seconds:.1f}s",
        )
    return table


def _markdown(outcomes: list[Outcome], mutations: dict[str, Mutation]) -> str:
    lines = [
        "| mutation | rule it breaks | caught by | what | runs | time |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        if o.name == "baseline":
            continue
        m = mutations[o.name]
        what = o.reason.replace("|", "\\|") if o.status == "caught" else o.status.upper()
        lines.append(
            f"| `{o.name}` | {m.rule} | {o.caught_by or '-'} | {what} | {o.runs} "
            f"| {o.seconds:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    # A SIGTERM (make or CI giving up) stops the subprocesses, as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        mutations = [by_name(n) for n in args.only] if args.only else list(CATALOGUE)
    except KeyError as e:
        console.print(f"[red]{e.args[0]}[/]")
        return 2
    if args.list:
        console.print(_catalogue_table(mutations))
        return 0
    try:
        for m in mutations:  # fail before any run if the catalogue rotted
            m.apply_to((ROOT / "raftdb" / "raft" / m.file).read_text())
    except MutationError as e:
        console.print(f"[red]{e}[/]")
        return 2
    timeout = args.timeout if args.timeout is not None else 120.0 + 3.0 * args.seeds
    todo: list[Mutation | None] = [] if args.no_baseline else [None]
    todo += mutations
    console.print(
        f"mutation check: {len(mutations)} mutants, at most {args.seeds} seeds each after the "
        f"targeted schedules, {args.jobs} at a time"
    )

    def done(o: Outcome) -> None:
        mark = "ok " if o.clean else "BAD"
        where = f" by {o.caught_by}" if o.caught_by else ""
        console.print(f"  {mark} {o.name}: {o.status}{where} ({o.runs} runs, {o.seconds:.1f}s)")

    start = time.monotonic()
    outcomes = run_all(todo, args.seeds, args.jobs, timeout, on_done=done)
    wall = time.monotonic() - start
    areas = {m.name: m.area for m in mutations}
    console.print(_results_table(outcomes, areas, args.seeds))
    if args.markdown is not None:
        args.markdown.write_text(_markdown(outcomes, {m.name: m for m in mutations}))
    bad = [o for o in outcomes if not o.clean]
    caught = sum(1 for o in outcomes if o.name != "baseline" and o.status == "caught")
    console.print(f"{caught}/{len(mutations)} mutations caught in {wall:.0f}s wall time")
    if bad:
        console.print(
            "[bold red]not clean:[/] "
            + ", ".join(f"{o.name} ({o.status}{': ' + o.reason if o.reason else ''})" for o in bad)
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
