"""``/ui``: the status page's three static files (raftdb.http.ui).

What is checked here is what the page promises without a browser: the files,
their types and headers (a CSP that allows nothing but this node), no
external URL and no inline script or style anywhere, the DOM ids the browser
test relies on, open access whatever the token rules, and ``ui`` as a
reserved root. tests/browser runs the page itself in chromium.
"""

from __future__ import annotations

import gzip
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from raftdb.http.ui import FILES
from tests.http.conftest import CLUSTER
from tests.http.fake_node import FakeNode
from tests.http.helpers import TestClient, error_of

UI_DIR = Path(__file__).resolve().parents[2] / "raftdb" / "http" / "ui"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
TYPES = {"/ui": "text/html", "/ui/ui.js": "text/javascript", "/ui/ui.css": "text/css"}
#: The DOM contract of docs/api.md (and spec): ids the browser test finds.
IDS = (
    "node-state",
    "leader",
    "term",
    "members",
    "rates",
    "leader-changes",
    "token",
    "token-save",
    "kv-prefix",
    "kv-list",
    "kv-keys",
    "kv-value",
    "kv-error",
    "updated",
)


def _text(name: str) -> str:
    return (UI_DIR / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("path", sorted(FILES))
def test_each_file_is_served_with_its_type_and_headers(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == f"{TYPES[path]}; charset=utf-8"
    assert response.content == (UI_DIR / FILES[path][0]).read_bytes()
    csp = response.headers["content-security-policy"]
    assert csp.startswith("default-src 'self';")
    assert "script-src 'self';" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    head = client.head(path)
    assert head.status_code == 200
    assert head.headers["content-security-policy"] == csp


def test_the_page_loads_only_its_own_files() -> None:
    page = _text("index.html")
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, flags=re.S)
    assert scripts == [(' src="ui/ui.js" defer', "")]  # one script, external, no inline code
    assert re.findall(r'<link rel="stylesheet" href="([^"]+)"', page) == ["ui/ui.css"]
    assert "<style" not in page
    assert "style=" not in page  # the CSP forbids inline style too
    assert not re.search(r"\son\w+=", page)  # no inline event handlers


@pytest.mark.parametrize("name", ["index.html", "ui.js", "ui.css"])
def test_no_external_url_anywhere(name: str) -> None:
    text = _text(name)
    assert not re.search(r"https?://", text), name
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?//""", text), name
    assert "@import" not in text


def test_the_script_never_parses_data_as_html() -> None:
    script = _text("ui.js")
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert unsafe not in script, unsafe
    assert "textContent" in script


def test_the_script_polls_as_the_spec_says() -> None:
    script = _text("ui.js")
    assert '"v1/cluster/status"' in script
    assert "POLL_MS = 1000" in script
    assert "TIMEOUT_MS = 2000" in script
    assert '"v1/kv?prefix=" + encodeURIComponent(prefix) + "&limit=100"' in script
    assert "sessionStorage" in script
    assert "Authorization" in script


def test_the_page_has_the_dom_contract() -> None:
    page = _text("index.html")
    for element_id in IDS:
        assert len(re.findall(rf'\bid="{element_id}"', page)) == 1, element_id
    assert re.search(r'<table id="members">.*<tbody></tbody>', page, flags=re.S)
    for rate in ("writes", "reads", "commits"):
        assert f'data-rate="{rate}"' in page
    assert re.search(r'<pre id="kv-value">', page)
    assert re.search(r'<input id="token"', page)
    # The script fills what the contract names.
    script = _text("ui.js")
    for attribute in ("memberId", "role", "self", "reachable", "term", "leader", "key", "at"):
        assert f"dataset.{attribute} =" in script, attribute
    for state in ("ok", "down", "no-leader", "unauthorized"):
        assert f'"{state}"' in script, state


def test_the_page_is_small() -> None:
    total = sum((UI_DIR / name).stat().st_size for name, _ in FILES.values())
    assert total < 32 * 1024, total


def test_the_files_are_package_data() -> None:
    """An installed (not editable) raftdb must carry the files the routes read."""
    package_data = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    globs = package_data["raftdb.http"]
    for name, _ in FILES.values():
        assert any(fnmatch(f"ui/{name}", pattern) for pattern in globs), name


@pytest.mark.parametrize("public_status", [True, False])
def test_the_page_is_open_whatever_the_tokens(
    node: FakeNode, tmp_path: Path, public_status: bool
) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        '[[token]]\nname = "r"\nsha256 = "' + "0" * 64 + '"\nrole = "read"\n', encoding="utf-8"
    )
    config = NodeConfig(id=1, cluster=CLUSTER, tokens_file=str(tokens), public_status=public_status)
    with TestClient(create_api(node, config)) as client:
        for path in FILES:
            assert client.get(path).status_code == 200, path
            wrong = client.get(path, headers={"authorization": "Bearer not-a-token"})
            assert wrong.status_code == 200, path
        # What the page fetches follows the rules (here: a token is needed).
        status = client.get("/v1/cluster/status")
        if public_status:
            assert status.status_code == 200
        else:
            assert error_of(status, 401) == "unauthorized"
        assert error_of(client.get("/v1/kv?prefix="), 401) == "unauthorized"


@pytest.mark.parametrize("fast_path", [True, False])
def test_ui_is_a_reserved_root(node: FakeNode, config: NodeConfig, fast_path: bool) -> None:
    with TestClient(create_api(node, config, fast_path=fast_path)) as client:
        put = client.put("/ui", content=b"v")
        assert error_of(put, 400) == "reserved_path"
        assert "/v1/kv/ui" in put.json()["message"]
        for path in ("/ui/", "/ui/other", "/ui/ui.js/x"):
            response = client.get(path)
            assert error_of(response, 400) == "reserved_path", path
            assert "ui" in response.json()["message"]
        assert node.calls == []
        # The key ui is still a key, through /v1/kv; uix is a raftexample key.
        assert client.put("/v1/kv/ui", content=b"page").status_code == 204
        assert client.get("/v1/kv/ui").content == b"page"
        assert client.put("/uix", content=b"x").status_code == 204
        assert sorted(node.data) == [b"ui", b"uix"]


@pytest.mark.parametrize("path", sorted(FILES))
def test_a_browser_that_accepts_gzip_gets_the_files_compressed(
    client: TestClient, path: str
) -> None:
    original = (UI_DIR / FILES[path][0]).read_bytes()
    packed = client.get(path, headers={"accept-encoding": "gzip, deflate, br"})
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["vary"] == "Accept-Encoding"
    assert packed.content == original  # httpx decodes it: the same bytes
    assert int(packed.headers["content-length"]) < len(original)
    for refused in ("identity", "br", "gzip;q=0", ""):
        plain = client.get(path, headers={"accept-encoding": refused})
        assert "content-encoding" not in plain.headers, refused
        assert plain.headers["vary"] == "Accept-Encoding"
        assert plain.content == original


def test_the_page_travels_in_a_few_kib() -> None:
    sent = sum(len(gzip.compress((UI_DIR / name).read_bytes(), 9)) for name, _ in FILES.values())
    assert sent < 10 * 1024
