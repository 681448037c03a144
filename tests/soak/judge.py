"""``python -m tests.soak.judge build/soak/<run>``: judge a run's samples again.

The trend check and the plot only need ``samples.csv``, so a finished (or
interrupted) run can be looked at again with another warm-up, e.g. to see
whether a rise is the filling of a bounded cache that the run's warm-up did not
cover. Prints one line per fitted figure and process, redraws ``rss.png``
unless ``--no-plot``; exit 1 if anything grows past its bound.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.soak.samples import read_samples
from tests.soak.trend import check_trends


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak.judge", description=__doc__)
    parser.add_argument("run", type=Path, help="a run's directory (with samples.csv)")
    parser.add_argument("--warmup-seconds", type=float, default=300.0)
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    samples = read_samples(args.run / "samples.csv")
    growth = check_trends(samples, args.warmup_seconds)
    for g in growth:
        f = g.fit
        verdict = "GROWS" if g.grows else "flat"
        print(
            f"node {g.node} process {g.segment} {g.figure}: {f.per_hour:+.2f}/h "
            f"(mean {f.mean:.1f}, {f.points} samples over {f.span / 60:.1f} min): {verdict}"
        )
    if not args.no_plot and samples:
        from tests.soak.plot import plot_samples

        plot_samples(samples, args.run / "rss.png", f"raftdb soak {args.run.name}")
    return 1 if any(g.grows for g in growth) else 0


if __name__ == "__main__":
    sys.exit(main())
