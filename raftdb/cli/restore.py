"""``raftdb snapshot restore`` and ``raftdb recover``: build a member's data offline.

Both work on a data directory with no node running, and take the node's
settings as ``raftdb serve`` does (flags, ``RAFTDB_*``, ``--config`` TOML), so
the plugins, the data directory and the member's peer URL are the ones the
node will be served with; the surgery itself is
:mod:`raftdb.node.rebuild`'s. Neither listens on anything, so the peer
security settings are not required here (``insecure_peers`` is assumed
unless given).

``restore`` builds member ``--id`` of a new cluster ``--cluster`` from a
snapshot file (``raftdb snapshot save``), as ``etcdutl snapshot restore``;
``recover --force-new-cluster`` turns one survivor's data into a cluster of
one, as ``etcd --force-new-cluster``. Without ``--force-new-cluster``,
``recover`` only prints what it would do.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from raftdb.app import CONFIG_EXIT_STATUS
from raftdb.cli import common
from raftdb.cli.serve import add_config_flags
from raftdb.config import KEYS, ConfigError, NodeConfig, load_config
from raftdb.node.rebuild import (
    RebuildError,
    RecoverPlan,
    plan_recover,
    recover_member,
    restore_member,
)

__all__ = ["register", "register_snapshot"]


def _add_output_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-w",
        "--output",
        choices=["table", "json"],
        default=argparse.SUPPRESS,
        help="table (the default) or json [RAFTDB_OUTPUT]",
    )


def register_snapshot(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``snapshot restore``."""
    p = commands.add_parser(
        "restore",
        help="build a member of a new cluster from a snapshot file (offline)",
        description=(
            "Build the data directory of member --id of a new cluster whose peers are "
            "--cluster, from a snapshot file made by 'raftdb snapshot save'. Restore every "
            "member from the same file with the same --cluster, then start each with "
            "'raftdb serve' and the same settings. The data directory must not exist or "
            "be empty."
        ),
    )
    p.add_argument("file", metavar="FILE", type=Path, help="the snapshot file")
    _add_output_flag(p)
    add_config_flags(p)
    p.set_defaults(run=_run_restore)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``recover``."""
    p = commands.add_parser(
        "recover",
        help="make a survivor of a lost quorum a cluster of one (offline)",
        description=(
            "Turn the data of one surviving member (its node stopped) into a single-member "
            "cluster that keeps every entry of its log: entries the old cluster never "
            "committed become committed. Then add members back with 'raftdb member add' "
            "and start each on an empty data directory with --join. Without "
            "--force-new-cluster, only print what would be done."
        ),
    )
    p.add_argument(
        "--force-new-cluster",
        action="store_true",
        help="do it (the membership becomes this member alone; new cluster identity)",
    )
    _add_output_flag(p)
    add_config_flags(p)
    p.set_defaults(run=_run_recover)


def _output(args: argparse.Namespace) -> common.Output:
    mode = getattr(args, "output", None) or os.environ.get("RAFTDB_OUTPUT") or "table"
    return common.Output("json" if mode == "json" else "table")


def _node_config(args: argparse.Namespace) -> NodeConfig:
    flags: dict[str, Any] = {key: getattr(args, key, None) for key in KEYS}
    if flags.get("insecure_peers") is None:
        flags["insecure_peers"] = True  # nothing listens here (see the module docstring)
    return load_config(flags, config_file=args.config)


def _progress(
    out: common.Output,
) -> Callable[[str, float | None], AbstractContextManager[Callable[[float], None]]]:
    @contextmanager
    def progress(description: str, total: float | None) -> Iterator[Callable[[float], None]]:
        bytes_ = not description.startswith("applying")
        with out.progress(description, total, bytes_=bytes_) as advance:
            yield advance

    return progress


def _fail(message: str, status: int = int(common.Exit.FAILED)) -> int:
    print(f"raftdb: {' '.join(message.split())}", file=sys.stderr)
    return status


def _run_restore(args: argparse.Namespace) -> int:
    """``raftdb snapshot restore FILE``."""
    out = _output(args)
    try:
        config = _node_config(args)
    except ConfigError as exc:
        return _fail(str(exc).removeprefix("raftdb: "), CONFIG_EXIT_STATUS)
    try:
        done = restore_member(args.file, config, progress=_progress(out))
    except RebuildError as exc:
        return _fail(f"snapshot restore: {exc}")
    except KeyboardInterrupt:
        return 130
    rate = done.keys / done.seconds if done.seconds > 0 else 0.0
    record = {
        "id": done.node_id,
        "data_dir": str(done.data_dir),
        "index": done.index,
        "term": done.term,
        "members": [{"id": i, "peer_url": url} for i, url in sorted(done.members.items())],
        "keys": done.keys,
        "leases": done.leases,
        "sessions": done.sessions,
        "bytes": done.bytes,
        "sha256": done.sha256,
        "cluster_id": done.cluster_id,
        "seconds": round(done.seconds, 3),
    }
    if out.json:
        out.data(record)
        return 0
    members = ", ".join(f"{i}={url}" for i, url in sorted(done.members.items()))
    rows = [
        ("member", done.node_id),
        ("data dir", done.data_dir),
        ("index", done.index),
        ("term", done.term),
        ("members", members),
        ("keys", done.keys),
        ("leases", done.leases),
        ("sessions", done.sessions),
        ("bytes", done.bytes),
        ("sha256", done.sha256),
        ("cluster id", done.cluster_id),
        ("took", f"{done.seconds:.2f} s ({rate:,.0f} keys/s)"),
    ]
    out.table(["field", "value"], rows, title="restored")
    out.note(
        f"start it with the same settings: raftdb serve --id {done.node_id} "
        f"--cluster {','.join(url for _, url in sorted(done.members.items()))} "
        f"--data-dir {done.data_dir}"
    )
    return 0


def _plan_record(plan: RecoverPlan) -> dict[str, Any]:
    return {
        "id": plan.node_id,
        "data_dir": str(plan.data_dir),
        "peer_url": plan.peer_url,
        "old_members": [{"id": i, "peer_url": u} for i, u in sorted(plan.old_members.items())],
        "old_cluster_id": plan.old_cluster_id,
        "term": plan.term,
        "commit_index": plan.commit,
        "applied_index": plan.applied,
        "last_index": plan.last_index,
        "new_index": plan.new_index,
        "entries_to_apply": plan.to_apply,
        "entries_past_commit": plan.uncommitted,
    }


def _show_plan(out: common.Output, plan: RecoverPlan, *, done: bool) -> None:
    old = ", ".join(f"{i}={u}" for i, u in sorted(plan.old_members.items())) or "(none)"
    rows = [
        ("member", plan.node_id),
        ("data dir", plan.data_dir),
        ("peer URL", plan.peer_url),
        ("old members", old),
        ("old cluster id", plan.old_cluster_id or "(none)"),
        ("term", plan.term),
        ("commit index", plan.commit),
        ("applied index", plan.applied),
        ("last index", plan.last_index),
        ("entries to apply", plan.to_apply),
        ("entries past the commit index", plan.uncommitted),
        ("new membership", f"{plan.node_id}={plan.peer_url}"),
        ("new index", plan.new_index),
    ]
    out.table(["field", "value"], rows, title="recovered" if done else "recovery plan")


def _run_recover(args: argparse.Namespace) -> int:
    """``raftdb recover``."""
    out = _output(args)
    try:
        config = _node_config(args)
    except ConfigError as exc:
        return _fail(str(exc).removeprefix("raftdb: "), CONFIG_EXIT_STATUS)
    try:
        if not args.force_new_cluster:
            plan = plan_recover(config)
            if out.json:
                out.data({"done": False, **_plan_record(plan)})
            else:
                _show_plan(out, plan, done=False)
            return _fail(
                "recover: nothing was changed; run again with --force-new-cluster to make "
                f"member {plan.node_id} a cluster of one",
                int(common.Exit.USAGE),
            )
        done = recover_member(config, progress=_progress(out))
    except RebuildError as exc:
        return _fail(f"recover: {exc}")
    except KeyboardInterrupt:
        return 130
    plan = done.plan
    if out.json:
        out.data(
            {
                "done": True,
                **_plan_record(plan),
                "cluster_id": done.cluster_id,
                "seconds": round(done.seconds, 3),
            }
        )
        return 0
    _show_plan(out, plan, done=True)
    if plan.uncommitted:
        out.note(
            f"warning: {plan.uncommitted} entries past the known commit index "
            f"{plan.commit} are now committed"
        )
    out.note(
        f"new cluster id {done.cluster_id}. Start the node (raftdb serve, same settings), "
        "then for each new member: raftdb member add ID URL, and start it on an empty "
        "data directory with --join"
    )
    return 0
