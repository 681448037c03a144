"""The soak's figure: RSS, open fds and threads of every node over the run.

One panel per figure, one colour per node; each process (a segment between
restarts) is a line of its own, so a restart is a new line rather than a drop
joined to the old one. Written with matplotlib's Agg backend (no
display): ``pip install -e '.[soak]'``, which ``make soak`` does.
"""

from __future__ import annotations

from pathlib import Path

from tests.soak.samples import Sample
from tests.soak.trend import segments

__all__ = ["plot_samples"]

_PANELS = (("rss_mib", "RSS (MiB)"), ("fds", "open fds"), ("threads", "threads"))


def plot_samples(samples: list[Sample], path: Path, title: str) -> None:
    """Draw ``samples`` to the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(_PANELS), 1, figsize=(9, 7.5), sharex=True)
    by_segment = segments(samples)
    nodes = sorted({node for node, _ in by_segment})
    colours = {node: f"C{n}" for n, node in enumerate(nodes)}
    for ax, (figure, label) in zip(axes, _PANELS, strict=True):
        labelled: set[int] = set()
        for (node, _), series in sorted(by_segment.items()):
            xs = [s.t / 60 for s in series]
            ys = [float(getattr(s, figure)) for s in series]
            ax.plot(
                xs,
                ys,
                color=colours[node],
                marker="." if len(series) < 3 else None,
                linewidth=1.2,
                label=None if node in labelled else f"node {node}",
            )
            labelled.add(node)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="lower right", fontsize="small")
    axes[0].set_title(title, fontsize="medium")
    axes[-1].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
