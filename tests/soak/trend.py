"""The trend check: does a node's RSS, fd count or thread count grow over time?

A leak shows as a steady rise of a process's figures over its life. Kills
restart processes, so the samples are split into *segments* (one per process:
a node's samples with the same start count), the samples of each segment's
first ``warmup`` seconds are dropped (caches, pools and bounded histories
filling up are not leaks), and a least-squares line is fitted to what
remains. A segment *grows* on a figure when both hold:

1. the slope exceeds ``rel_per_hour`` of the segment's mean per hour: the
   defaults (:data:`BOUNDS`) are 10 %/h for RSS, 10 %/h for fds and threads:
   a process growing that fast doubles in well under a day, which is what an
   hours-long soak is for; a process that is flat after warm-up (what
   CPython's allocator and raftdb's bounded caches give) has a slope near 0;
2. the rise the line predicts over the segment exceeds ``floor`` (absolute:
   8 MiB, 16 fds, 4 threads): on a short segment a few megabytes of allocator
   noise (arenas come and go in 1 MiB steps; a burst of snapshot traffic)
   would otherwise fit a steep line; fds and threads move in steps with
   connections and the default thread pool.

Segments with fewer than :data:`MIN_POINTS` samples after warm-up are not
judged (a node killed every few minutes gives many short ones; the soak spares
one node from restarts so that one process spans the whole run).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Final

from tests.soak.samples import Sample

__all__ = [
    "BOUNDS",
    "MIN_POINTS",
    "Bound",
    "Fit",
    "Growth",
    "check_trends",
    "fit_line",
    "segments",
]

#: Samples a segment needs after warm-up to be judged.
MIN_POINTS: Final = 4


@dataclass(frozen=True)
class Bound:
    """How much growth of one figure the check allows (see the module docstring)."""

    rel_per_hour: float
    floor: float


#: The figures checked and their bounds.
BOUNDS: Final = {
    "rss_mib": Bound(0.10, 8.0),
    "fds": Bound(0.10, 16.0),
    "threads": Bound(0.10, 4.0),
}


@dataclass(frozen=True)
class Fit:
    """A least-squares line ``y = intercept + slope * t`` over ``points`` samples."""

    slope: float  # per second
    intercept: float
    mean: float
    span: float  # seconds from the first to the last point
    points: int

    @property
    def per_hour(self) -> float:
        return self.slope * 3600.0

    @property
    def rise(self) -> float:
        """What the line grows by over the segment."""
        return self.slope * self.span


def fit_line(ts: list[float], ys: list[float]) -> Fit:
    """The least-squares line through ``(ts, ys)`` (at least two distinct ``ts``)."""
    n = len(ts)
    if n < 2:
        raise ValueError("a line needs two points")
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    if var == 0:
        raise ValueError("a line needs two distinct times")
    slope = sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var
    return Fit(slope, my - slope * mt, my, max(ts) - min(ts), n)


def segments(samples: list[Sample]) -> dict[tuple[int, int], list[Sample]]:
    """The samples of each process: ``(node, segment)`` → samples in time order."""
    out: dict[tuple[int, int], list[Sample]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: s.t):
        out[(s.node, s.segment)].append(s)
    return dict(out)


@dataclass(frozen=True)
class Growth:
    """One figure's fit over one segment, and whether it breaks its bound."""

    node: int
    segment: int
    figure: str
    fit: Fit
    bound: Bound

    @property
    def grows(self) -> bool:
        limit = self.bound.rel_per_hour * abs(self.fit.mean)
        return self.fit.per_hour > limit and self.fit.rise > self.bound.floor

    def describe(self) -> str:
        f = self.fit
        pct = 100 * f.per_hour / f.mean if f.mean else math.inf
        return (
            f"node {self.node} (process {self.segment}) {self.figure} grows "
            f"{f.per_hour:+.2f}/h ({pct:+.1f}%/h of its mean {f.mean:.1f}; bound "
            f"{100 * self.bound.rel_per_hour:.0f}%/h), {f.rise:+.1f} over {f.span / 60:.1f} min "
            f"(floor {self.bound.floor:g}) in {f.points} samples"
        )


def check_trends(
    samples: list[Sample],
    warmup: float,
    bounds: dict[str, Bound] = BOUNDS,
    min_points: int = MIN_POINTS,
) -> list[Growth]:
    """Every judged (segment, figure) fit; ``[g for g in result if g.grows]`` are leaks.

    A segment's first ``warmup`` seconds (from its first sample) are left out.
    """
    out: list[Growth] = []
    for (node, segment), series in sorted(segments(samples).items()):
        start = series[0].t
        kept = [s for s in series if s.t - start >= warmup]
        if len(kept) < min_points or kept[-1].t == kept[0].t:
            continue
        ts = [s.t for s in kept]
        for figure, bound in bounds.items():
            ys = [float(getattr(s, figure)) for s in kept]
            out.append(Growth(node, segment, figure, fit_line(ts, ys), bound))
    return out
