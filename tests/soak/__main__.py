"""``python -m tests.soak``: one soak run (``make soak`` calls it); exit 1 on any finding.

SIGTERM and SIGHUP end the run as Ctrl-C does, through its clean-up: every node
stopped, every power-loss filesystem unmounted.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from tests.soak.run import run_soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=120.0, help="load and faults this long")
    parser.add_argument(
        "--sample-seconds", type=float, default=60.0, help="seconds between two samples"
    )
    parser.add_argument("--rate", type=float, default=10.0, help="operations a second, at most")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=None,
        help="left out of the trend fits (default: a fifth of the run, at most 300)",
    )
    parser.add_argument("--out", type=Path, default=Path("build/soak"))
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_cleanly)
    result = run_soak(
        args.out,
        seconds=args.minutes * 60,
        sample_seconds=args.sample_seconds,
        rate=args.rate,
        seed=args.seed,
        warmup=args.warmup_seconds,
    )
    for problem in result.problems:
        print(f"  {problem}", file=sys.stderr)
    return 0 if result.ok else 1


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """Unwind the run (its ``finally`` clean-ups run) instead of dying on the spot."""
    print(f"soak: {signal.Signals(signum).name}: stopping and cleaning up", file=sys.stderr)
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
