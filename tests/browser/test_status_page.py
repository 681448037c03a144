"""The ``/ui`` status page in real headless chromium, against a real 3-node cluster.

What a user of the page relies on, through the DOM contract of issue 14
(``tests/browser/page.py``): the page lists the three members and the one leader
the nodes agree on, refreshes by itself, finds a key, follows a kill -9 of the
leader to the new one within a few election timeouts, says plainly when the node
it talks to is down or has no leader, and, with tokens, asks for one and works
once it is typed in. Screenshots of the main moments are saved as artifacts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from raftdb.http.tokens import hash_token
from tests.integration.harness import ProcessCluster, retry_unavailable, wait_until

if TYPE_CHECKING:
    from tests.browser.conftest import ClusterFactory, PageFactory
    from tests.browser.page import PageView, StatusPage

#: Seconds for the first complete view (chromium's start is outside it).
FIRST_VIEW = 20.0
#: Seconds for the page to show a new leader after kill -9 of the old one: the cluster's
#: election timeout is 0.5 s (ProcessCluster's ticks), so this is many election timeouts
#: plus the page's 1 s polling, on a shared 2-core machine.
NEW_LEADER = 15.0
#: Seconds for the page to notice that its node stopped answering (a 2 s fetch timeout).
NODE_DOWN = 15.0
#: Seconds for anything else the page shows after an action.
REACT = 10.0


def _status(
    cluster: ProcessCluster, node_id: int, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    r = cluster.client.get(cluster.url(node_id, "/v1/status"), headers=headers, timeout=2.0)
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


def _agreed_leader(
    cluster: ProcessCluster, ids: Iterable[int], headers: Mapping[str, str] | None = None
) -> tuple[int, int] | None:
    """``(leader, term)`` when every node of ``ids`` reports the same leader and term."""
    try:
        seen = {(s["leader"], s["term"]) for s in (_status(cluster, i, headers) for i in ids)}
    except (httpx.HTTPError, ValueError):
        return None
    if len(seen) != 1:
        return None
    leader, term = seen.pop()
    return None if leader is None else (int(leader), int(term))


def _complete(view: PageView, leader: int, self_id: int, term: int | None = None) -> bool:
    """The page shows three members, ``leader`` leading (in ``#leader`` and in exactly
    one row), ``self_id`` as the node it talks to, and that node answering."""
    ids = sorted(m.id or "" for m in view.members)
    return (
        view.state == "ok"
        and ids == ["1", "2", "3"]
        and view.leader == str(leader)
        and view.leader_attr == str(leader)
        and [m.id for m in view.leader_rows] == [str(leader)]
        and [m.id for m in view.self_rows] == [str(self_id)]
        and (term is None or view.term == str(term))
        and all(len(m.cells) == 7 for m in view.members)
    )


def _hex_digits(text: str | None) -> str:
    """The hex digits of ``text``, so that ``ff 00``, ``ff00`` and ``0xff 0x00`` compare alike."""
    return re.sub(r"[^0-9a-f]", "", (text or "").lower().replace("0x", ""))


def _browse(page: StatusPage, prefix: str, keys: list[str], key: str, value: str) -> None:
    """List ``prefix`` in the key browser, expect exactly ``keys``, open ``key``, see ``value``."""
    page.list_keys(prefix)
    page.wait(f"the keys under {prefix!r}", lambda v: list(v.keys) == keys, REACT)
    page.open_key(key)
    page.wait(f"the value of {key!r}", lambda v: v.value == value, REACT)


@pytest.mark.deadline(150)
def test_the_page_follows_the_cluster_through_a_leader_kill(
    cluster_factory: ClusterFactory, open_page: PageFactory
) -> None:
    cluster = cluster_factory(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    node = cluster.followers(leader)[0]  # the page talks to a follower
    page = open_page(cluster.url(node, "/ui"))

    # First view: three members, the leader the nodes agree on, rates, refreshes by itself.
    agreed = wait_until(
        "the nodes to agree on a leader", lambda: _agreed_leader(cluster, [1, 2, 3]), 15
    )
    assert agreed[0] == leader
    first = page.wait(
        "three members and the leader",
        lambda v: v if _complete(v, leader, node, term=agreed[1]) else None,
        FIRST_VIEW,
    )
    assert set(first.rates) >= {"writes", "reads", "commits"}, first.rates
    leader_row = first.leader_rows[0]
    assert leader_row.reachable == "true", leader_row  # a follower hears its leader
    assert {m.reachable for m in first.members} <= {"true", "false", "unknown"}, first.members
    assert re.fullmatch(r"updated \d\d:\d\d:\d\d", first.updated or ""), first.updated
    assert first.updated_at
    page.wait("the page to refresh by itself", lambda v: v.updated_at != first.updated_at, REACT)
    page.screenshot("first-view")

    # The key browser finds what was written through the API (text as text, bytes as hex).
    cluster.put_ok("browser/greeting", "hello from the browser test")
    cluster.put_ok("browser/bytes", b"\xff\x00\x01")
    cluster.put_ok("other/key", "not under the prefix")
    _browse(
        page,
        "browser/",
        ["browser/bytes", "browser/greeting"],
        "browser/greeting",
        "hello from the browser test",
    )
    page.open_key("browser/bytes")
    page.wait("the bytes value in hex", lambda v: "ff0001" in _hex_digits(v.value), REACT)

    # kill -9 the leader: the page shows the new one, as the survivors report it.
    cluster.kill(leader)
    survivors = [i for i in (1, 2, 3) if i != leader]

    def new_leader(view: PageView) -> tuple[int, int] | None:
        if view.leader is None or not view.leader.isdigit() or view.leader == str(leader):
            return None
        now = _agreed_leader(cluster, survivors)
        if now is None or str(now[0]) != view.leader:
            return None
        newest = view.changes[0] if view.changes else None
        if newest != (str(now[1]), view.leader):
            return None
        return now if _complete(view, now[0], node, term=now[1]) else None

    new, _ = page.wait(f"a new leader after killing node {leader}", new_leader, NEW_LEADER)
    assert new in survivors
    after = page.view()
    assert (str(agreed[1]), str(leader)) in after.changes[1:], after.changes  # the old one
    page.screenshot("new-leader")

    # Kill the node the page talks to: the page says so.
    cluster.kill(node)
    down = page.wait(
        f"the page to say node {node} is down",
        lambda v: v if v.state == "down" else None,
        NODE_DOWN,
    )
    assert down.state_text, down
    page.screenshot("node-down")

    # The last node has no quorum: a page on it says there is no leader.
    (last,) = (i for i in survivors if i != node)
    lone = open_page(cluster.url(last, "/ui"))
    lone.wait(
        f"node {last} alone to show no leader",
        lambda v: v.state == "no-leader" and v.leader == "none" and v.leader_attr == "",
        NEW_LEADER,
    )
    lone.screenshot("no-leader")


#: The tokens of the secured cluster: (text, role).
READER = ("browser-reader-3b9e1f", "read")
WRITER = ("browser-writer-8c2d7a", "write")


def _tokens_file(path: Path) -> Path:
    entries = [
        f'[[token]]\nname = "{name}"\nsha256 = "{hash_token(text)}"\nrole = "{role}"\n'
        for name, (text, role) in {"ui-reader": READER, "api-writer": WRITER}.items()
    ]
    path.write_text("\n".join(entries))
    return path


@pytest.mark.deadline(120)
def test_with_tokens_the_page_asks_for_one_and_works_with_it(
    cluster_factory: ClusterFactory, open_page: PageFactory, tmp_path: Path
) -> None:
    tokens = _tokens_file(tmp_path / "tokens.toml")
    cluster = cluster_factory(3, settings={"tokens_file": str(tokens), "public_status": False})
    cluster.start_all()  # /readyz stays open
    read = {"authorization": f"Bearer {READER[0]}"}
    write = {"authorization": f"Bearer {WRITER[0]}"}
    assert cluster.client.get(cluster.url(1, "/v1/status")).status_code == 401
    leader, term = wait_until(
        "the nodes to agree on a leader", lambda: _agreed_leader(cluster, [1, 2, 3], read), 15
    )
    r = retry_unavailable(lambda: cluster.put(leader, "secret/k", "shown with a token", **write))
    assert r.status_code == 204, r.text
    node = next(i for i in (1, 2, 3) if i != leader)

    page = open_page(cluster.url(node, "/ui"))
    page.wait("the page to ask for a token", lambda v: v.state == "unauthorized", FIRST_VIEW)
    body = page.body_text()
    assert "token" in body.lower(), body
    # The key browser shows the API's own message for the refused listing.
    refused = cluster.client.get(cluster.url(node, "/v1/kv"), params={"prefix": "secret/"})
    assert refused.status_code == 401
    page.list_keys("secret/")
    message = refused.json()["message"]
    page.wait("the API's message in #kv-error", lambda v: message in (v.kv_error or ""), REACT)
    page.screenshot("unauthorized")

    page.save_token(READER[0])
    page.wait(
        "three members and the leader with the read token",
        lambda v: _complete(v, leader, node, term=term),
        FIRST_VIEW,
    )
    _browse(page, "secret/", ["secret/k"], "secret/k", "shown with a token")
    page.screenshot("with-token")

    # The token lives in the tab's sessionStorage: a reload keeps it.
    page.driver.refresh()
    page.wait(
        "the reloaded page to keep the token", lambda v: _complete(v, leader, node), FIRST_VIEW
    )
