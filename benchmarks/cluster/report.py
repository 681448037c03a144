"""Results of the cluster benchmark: medians, ratios against the targets, docs, plot.

A result is one measured wrk run: ``(repeat, system, op, connections, mode)``
and its :class:`~benchmarks.cluster.wrk.WrkResult`. Tables show the median
over repeats. A ratio is computed inside each repeat (the issue: "only ratios
from one run count"), then its median and range over the repeats are given.

The Markdown section replaces ``## Cluster benchmark (make bench)`` in
``docs/benchmarks.md`` (up to the next ``## `` heading), or goes before the
first ``## `` heading when absent; the rest of the file is kept as it is.
"""

from __future__ import annotations

import importlib
import json
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from benchmarks.cluster.wrk import WrkResult

__all__ = [
    "HEADING",
    "OPS",
    "Record",
    "Results",
    "Target",
    "TARGETS",
    "plot",
    "render_section",
    "update_doc",
]

HEADING: Final = "## Cluster benchmark (make bench)"
Mode = Literal["leader", "spread"]
OPS: Final = {
    "put": "writes/s (PUT, 100-byte values, new keys)",
    "get": "linearizable reads/s (GET of existing keys)",
    "stale": "stale reads/s (raftdb ?consistency=stale, etcd serializable range)",
}
MODES: Final = {"leader": "leader", "spread": "spread"}
#: RSS target of the memory run, MiB.
RSS_TARGET_MIB: Final = 150.0


@dataclass(frozen=True)
class Record:
    """One measured run."""

    repeat: int
    system: str
    op: str
    connections: int
    mode: str
    result: WrkResult
    #: CPU seconds the system's server processes used during the run (``None``:
    #: not measured, as in results saved before it was).
    cpu_s: float | None = None

    def cpu_us_per_request(self) -> float | None:
        """The servers' CPU per successful answer, µs (all nodes together)."""
        answered = self.result.requests - self.result.errors
        if self.cpu_s is None or answered <= 0:
            return None
        return self.cpu_s / answered * 1e6

    def to_json(self) -> dict[str, Any]:
        """As a JSON object."""
        data = dict(self.__dict__)
        data["result"] = self.result.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        """The inverse of :meth:`to_json`."""
        fields = dict(data)
        fields["result"] = WrkResult.from_json(fields["result"])
        return cls(**fields)


@dataclass
class Results:
    """Everything a benchmark run produced, saved as JSON next to the plot.

    Attributes:
        meta: machine, versions and the run's settings.
        labels: each system's display name.
        records: the measured runs.
        memory: the memory run (keys written, RSS per node), if one was made.
    """

    meta: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    memory: dict[str, Any] | None = None

    def save(self, path: Path) -> None:
        """Write as JSON."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "meta": self.meta,
            "labels": self.labels,
            "records": [r.to_json() for r in self.records],
            "memory": self.memory,
        }
        path.write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Results:
        """Read what :meth:`save` wrote."""
        data = json.loads(path.read_text())
        return cls(
            meta=data.get("meta", {}),
            labels=data.get("labels", {}),
            records=[Record.from_json(r) for r in data.get("records", [])],
            memory=data.get("memory"),
        )

    def systems(self) -> list[str]:
        """The systems measured, in first-seen order."""
        return list(dict.fromkeys(r.system for r in self.records))

    def connections(self) -> list[int]:
        """The connection counts measured, ascending."""
        return sorted({r.connections for r in self.records})

    def repeats(self) -> list[int]:
        """The repeats, ascending."""
        return sorted({r.repeat for r in self.records})

    def get(self, repeat: int, system: str, op: str, conns: int, mode: str) -> WrkResult | None:
        """One run's result, if it was made."""
        found = self.record(repeat, system, op, conns, mode)
        return found.result if found is not None else None

    def record(self, repeat: int, system: str, op: str, conns: int, mode: str) -> Record | None:
        """One run, if it was made."""
        for r in self.records:
            if (r.repeat, r.system, r.op, r.connections, r.mode) == (
                repeat,
                system,
                op,
                conns,
                mode,
            ):
                return r
        return None

    def median_cpu(self, system: str, op: str, conns: int, mode: str) -> float | None:
        """The median over repeats of the servers' CPU per answer, µs."""
        found = [
            per
            for r in self.records
            if (r.system, r.op, r.connections, r.mode) == (system, op, conns, mode)
            and (per := r.cpu_us_per_request()) is not None
        ]
        return statistics.median(found) if found else None

    def median(self, system: str, op: str, conns: int, mode: str) -> WrkResult | None:
        """The median over repeats of each figure (errors: the total)."""
        found = [
            r.result
            for r in self.records
            if (r.system, r.op, r.connections, r.mode) == (system, op, conns, mode)
        ]
        if not found:
            return None
        return WrkResult(
            requests=sum(f.requests for f in found),
            errors=sum(f.errors for f in found),
            rps=statistics.median(f.rps for f in found),
            p50_ms=statistics.median(f.p50_ms for f in found),
            p99_ms=statistics.median(f.p99_ms for f in found),
            max_ms=max(f.max_ms for f in found),
            processes=found[0].processes,
        )


Getter = Callable[[Results, int, int], float | None]


def _rps(system: str, op: str, mode: str = "leader") -> Getter:
    def get(results: Results, repeat: int, conns: int) -> float | None:
        found = results.get(repeat, system, op, conns, mode)
        return found.rps if found is not None and found.rps > 0 else None

    return get


def _p99(system: str, op: str) -> Getter:
    def get(results: Results, repeat: int, conns: int) -> float | None:
        found = results.get(repeat, system, op, conns, "leader")
        return found.p99_ms if found is not None and found.p99_ms > 0 else None

    return get


def _cpu(system: str, op: str, mode: str = "leader") -> Getter:
    """The servers' CPU per answer, µs, in one repeat."""

    def get(results: Results, repeat: int, conns: int) -> float | None:
        found = results.record(repeat, system, op, conns, mode)
        return found.cpu_us_per_request() if found is not None else None

    return get


def _one(results: Results, repeat: int, conns: int) -> float | None:
    return 1.0


@dataclass(frozen=True)
class Target:
    """A figure the issue sets: ``numerator / denominator`` compared with ``bound``.

    ``bound`` is one number for every connection count, or one per count (a count
    left out is shown without a verdict), or ``None`` for a figure shown only for
    comparison. ``unit`` is ``"x"`` for a ratio, ``"µs"`` for an absolute figure
    (then ``denominator`` is :func:`_one`).
    """

    text: str
    numerator: Getter
    denominator: Getter
    bound: float | Mapping[int, float] | None
    at_most: bool = False
    unit: Literal["x", "µs"] = "x"

    def ratios(self, results: Results, conns: int) -> list[float]:
        """The ratio in each repeat where both sides were measured."""
        out = []
        for repeat in results.repeats():
            top = self.numerator(results, repeat, conns)
            bottom = self.denominator(results, repeat, conns)
            if top is not None and bottom is not None:
                out.append(top / bottom)
        return out

    def bound_at(self, conns: int) -> float | None:
        """The bound at ``conns`` connections, if the target sets one there."""
        if self.bound is None or isinstance(self.bound, int | float):
            return self.bound
        return self.bound.get(conns)

    def met(self, value: float, conns: int) -> bool | None:
        """Whether ``value`` satisfies the target at ``conns`` (``None``: no bound there)."""
        bound = self.bound_at(conns)
        if bound is None:
            return None
        return value <= bound if self.at_most else value >= bound


#: Issue 15's targets ("Performance, round 2: the write path"), in its order.
TARGETS: Final = [
    Target(
        "writes/s ≥ 1.5× etcd at 64 connections, ≥ 1.0× at 1 and 16",
        _rps("raftdb", "put"),
        _rps("etcd", "put"),
        {1: 1.0, 16: 1.0, 64: 1.5},
    ),
    Target(
        "p99 write latency ≤ etcd's",
        _p99("raftdb", "put"),
        _p99("etcd", "put"),
        1.0,
        at_most=True,
    ),
    Target(
        "writes/s ≥ 2.5× tuned PySyncObj",
        _rps("raftdb", "put"),
        _rps("pysyncobj", "put"),
        2.5,
    ),
    Target(
        "cluster CPU per write ≤ 150 µs at 64 connections, ≤ 450 µs at 1 "
        "(≤ 150 per node per Ready); all server processes, from /proc",
        _cpu("raftdb", "put"),
        _one,
        {1: 450.0, 64: 150.0},
        at_most=True,
        unit="µs",
    ),
    Target(
        "etcd's cluster CPU per write (for comparison)",
        _cpu("etcd", "put"),
        _one,
        None,
        unit="µs",
    ),
    Target(
        "linearizable reads/s ≥ 0.9× raftdb's stale reads",
        _rps("raftdb", "get"),
        _rps("raftdb", "stale"),
        0.9,
    ),
    Target(
        "stale reads/s ≥ 0.85× the trivial Starlette app",
        _rps("raftdb", "stale"),
        _rps("starlette", "stale"),
        0.85,
    ),
    Target(
        "writes spread over all members ≥ leader-only",
        _rps("raftdb", "put", "spread"),
        _rps("raftdb", "put"),
        1.0,
    ),
    Target(
        "one member: writes/s ≥ 1.5× one-member etcd",
        _rps("raftdb-1", "put"),
        _rps("etcd-1", "put"),
        1.5,
    ),
    Target(
        "linearizable reads/s against etcd's linearizable range (for comparison)",
        _rps("raftdb", "get"),
        _rps("etcd", "get"),
        None,
    ),
]


def _num(value: float) -> str:
    return f"{value:,.0f}"


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _cell(result: WrkResult | None, cpu_us: float | None = None) -> str:
    if result is None:
        return "—"
    text = f"{_num(result.rps)} · {_ms(result.p50_ms)} / {_ms(result.p99_ms)}"
    if cpu_us is not None:
        text += f" · {cpu_us:,.0f} µs"
    if result.errors:
        text += f" ({result.errors:,} errors)"
    return text


def _figure(target: Target, value: float) -> str:
    return f"{value:,.0f} µs" if target.unit == "µs" else f"{value:.2f}"


def _ratio_cell(target: Target, values: Sequence[float], conns: int) -> str:
    if not values:
        return "—"
    middle = statistics.median(values)
    met = target.met(middle, conns)
    text = f"**{_figure(target, middle)}**"
    if met is not None:
        text += " ✓" if met else " ✗"
    if len(values) > 1:
        low, high = _figure(target, min(values)), _figure(target, max(values))
        text += f" ({low}–{high})"
    return text


def figures_tables(results: Results) -> list[str]:
    """One Markdown table per operation: system × mode rows, connection columns."""
    conns = results.connections()
    lines: list[str] = []
    for op, title in OPS.items():
        systems = [
            s
            for s in results.systems()
            if any(r.system == s and r.op == op for r in results.records)
        ]
        if not systems:
            continue
        lines += [f"#### {title[0].upper()}{title[1:]}", ""]
        lines.append(
            "| system | to | " + " | ".join(f"{c} conn{'s' if c > 1 else ''}" for c in conns) + " |"
        )
        lines.append("|---|---|" + "---|" * len(conns))
        for system in systems:
            for mode in MODES:
                cells = [
                    _cell(
                        results.median(system, op, c, mode), results.median_cpu(system, op, c, mode)
                    )
                    for c in conns
                ]
                if all(cell == "—" for cell in cells):
                    continue
                label = results.labels.get(system, system)
                lines.append(f"| {label} | {mode} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def ratios_table(results: Results) -> list[str]:
    """The targets: raftdb's ratio in each repeat (median, range), per connection count."""
    conns = results.connections()
    lines = [
        "| target (issue 15) | "
        + " | ".join(f"{c} conn{'s' if c > 1 else ''}" for c in conns)
        + " |",
        "|---|" + "---|" * len(conns),
    ]
    for target in TARGETS:
        cells = [_ratio_cell(target, target.ratios(results, c), c) for c in conns]
        lines.append(f"| {target.text} | " + " | ".join(cells) + " |")
    memory = results.memory
    if memory:
        worst = max(float(v) for v in memory["rss_mib"].values())
        mark = "✓" if worst <= RSS_TARGET_MIB else "✗"
        nodes = ", ".join(f"{v:.0f}" for v in memory["rss_mib"].values())
        cells = ["—"] * (len(conns) - 1) + [f"{nodes} MiB: **{worst:.0f}** {mark}"]
        lines.append(
            f"| RSS of each node after {memory['keys']:,} keys ≤ {RSS_TARGET_MIB:.0f} MiB | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def render_section(results: Results, plot_path: str | None) -> str:
    """The ``## Cluster benchmark (make bench)`` section, Markdown."""
    meta = results.meta
    lines = [
        HEADING,
        "",
        "`make bench` (`python -m benchmarks.cluster run`, issue 6) starts, one after another "
        "and interleaved over repeats, a 3-node raftdb cluster, a 3-node etcd cluster, a "
        "3-node PySyncObj-backed server "
        "(`benchmarks/cluster/pysyncobj_server.py`) and three processes each of a trivial "
        "Starlette app and a bare ASGI app (`benchmarks/cluster/apps.py`), all on "
        "127.0.0.1, and drives each with the same `wrk` script "
        "(`benchmarks/cluster/load.lua`); raftdb and etcd also run as clusters of one "
        "member (`raftdb-1`, `etcd-1`: writes only). *leader*: all connections to the "
        "leader (node 1 for the apps); *spread*: one `wrk` per node, the connections "
        "split between them (with 1 connection: that connection to a follower). During "
        "each measured run the CPU time (user + system) of the system's server "
        "processes is read from `/proc/<pid>/stat` before and after; divided by the "
        "answers, it is the CPU per request of the whole cluster. This section is "
        "written by the benchmark; the tables are the median over the repeats.",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    for key, value in meta.items():
        lines.append(f"| {key} | {value} |")
    lines += [
        "",
        "### Targets: raftdb's ratios",
        "",
        "Each ratio is taken within one repeat (the systems ran one after another, a "
        "few minutes apart); the table gives the median over repeats, ✓ or ✗ against the "
        "target where the issue sets one at that connection count, and the range. The "
        "CPU rows are absolute figures (µs of server CPU per write, all nodes), so "
        "they depend on the machine more than the ratios do.",
        "",
        *ratios_table(results),
        "",
        "### Figures",
        "",
        "Each cell: requests/s · p50 / p99 latency in ms · the servers' CPU per "
        "request (all nodes). Errors (status > 399, timeouts, socket errors) are counted "
        "apart and not in requests/s.",
        "",
        *figures_tables(results),
    ]
    memory = results.memory
    if memory:
        lines += [
            "### Memory",
            "",
            f"{memory['keys']:,} keys written ({memory['how']}; raftdb "
            f"{memory.get('raftdb', '?')}), then each node's RSS "
            "(`ps -o rss`): "
            + ", ".join(f"node {n}: **{v:.1f} MiB**" for n, v in memory["rss_mib"].items())
            + f"; target ≤ {RSS_TARGET_MIB:.0f} MiB each.",
            "",
        ]
        steps = memory.get("steps") or []
        if len(steps) > 1:
            lines += [
                "| keys written | " + " | ".join(f"node {n} RSS" for n in memory["rss_mib"]) + " |",
                "|---|" + "---|" * len(memory["rss_mib"]),
            ]
            for step in steps:
                cells = " | ".join(f"{v:.1f} MiB" for v in step["rss_mib"].values())
                lines.append(f"| {step['keys']:,} | {cells} |")
            lines.append("")
    if plot_path:
        lines += [f"![throughput and p99 by concurrency]({plot_path})", ""]
    return "\n".join(lines).rstrip() + "\n"


def update_doc(doc: Path, section: str) -> None:
    """Put ``section`` in ``doc`` in place of its old version (see the module docstring)."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == HEADING), None)
    if start is None:
        start = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
        end = start
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
    before = "".join(lines[:start]).rstrip("\n")
    after = "".join(lines[end:])
    new = (before + "\n\n" if before else "") + section
    if after:
        new += "\n" + after
    doc.write_text(new)


def _lines_for(
    results: Results, op: str
) -> Iterable[tuple[str, str, list[int], list[float], list[float]]]:
    for system in results.systems():
        for mode in MODES:
            xs, rps, p99 = [], [], []
            for c in results.connections():
                found = results.median(system, op, c, mode)
                if found is not None:
                    xs.append(c)
                    rps.append(found.rps)
                    p99.append(found.p99_ms)
            if xs:
                yield system, mode, xs, rps, p99


def plot(results: Results, path: Path) -> None:
    """Throughput (top) and p99 latency (bottom) by connections, one column per operation.

    Solid lines: to the leader; dashed: spread over the 3 nodes; dotted: a cluster
    of one member (``raftdb-1``, ``etcd-1``).
    """
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    ops = [op for op in OPS if any(r.op == op for r in results.records)]
    fig, axes = plt.subplots(2, len(ops), figsize=(5.2 * len(ops), 8.5), squeeze=False)
    colours = dict(
        zip(
            results.systems(),
            [
                "tab:red",
                "tab:blue",
                "tab:green",
                "tab:gray",
                "tab:purple",
                "tab:orange",
                "tab:brown",
                "tab:pink",
            ],
            strict=False,
        )
    )
    for col, op in enumerate(ops):
        top, bottom = axes[0][col], axes[1][col]
        for system, mode, xs, rps, p99 in _lines_for(results, op):
            style = ":" if system.endswith("-1") else "-" if mode == "leader" else "--"
            label = f"{results.labels.get(system, system)}, {mode}"
            colour = colours.get(system, "black")
            top.plot(xs, rps, style, marker="o", color=colour, label=label)
            bottom.plot(xs, p99, style, marker="o", color=colour, label=label)
        top.set_title(OPS[op].split(" (")[0])
        top.set_ylabel("requests/s")
        bottom.set_ylabel("p99 latency (ms)")
        top.set_yscale("log")
        bottom.set_yscale("log")
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xticks(results.connections())
            ax.set_xticklabels([str(c) for c in results.connections()])
            ax.set_xlabel("connections")
            ax.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    fig.suptitle(
        "Cluster benchmark: 3 nodes on 127.0.0.1, wrk "
        "(solid: leader, dashed: spread, dotted: one member)"
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
