"""The REST API against its own OpenAPI document, with schemathesis.

A real ``raftdb serve`` process (a one-node cluster) serves ``/openapi.json``;
schemathesis loads it from there and sends every operation generated requests,
valid and invalid (negative testing), :data:`EXAMPLES` per operation in CI
(``SCHEMATHESIS_EXAMPLES`` for more). Every answer must be: no ``5xx`` except
the ``503``/``504`` the contract allows, a status the document lists, the
content type and body schema it gives, and for every error (``>= 400``) a JSON
object with string ``error`` and ``message``. The node must still be ready at
the end.

Two kinds of answer never end by themselves, and are bounded here so that an
example costs a second at most: a blocking read (``wait_index``) with a valid
``wait`` gets ``wait=200ms`` instead (a generated one may say ten minutes, the
default is five; an invalid one keeps its ``400``), and a watch
(``/v1/watch``, an event stream) is called with a 1 s timeout, after which
schemathesis stops reading the stream and checks the events it got (the node
sends ``progress`` every 0.2 s, so there always are some).

Membership changes are kept from breaking the node under test: generated new
members are learners (a voter at a bogus URL would take its quorum away), and
member 1 (the node itself) is never removed or demoted; the values that would
do it are mapped to other ids. Everything else is as generated.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi import checks as openapi_checks

from raftdb.http.openapi import openapi_schema
from raftdb.http.params import parse_wait
from raftdb.node.errors import BadRequestError
from tests.chaos.cluster import poll
from tests.integration.harness import free_ports

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "25"))
#: The node under test (its own id): never removed or demoted by generated requests.
SELF = 1
_OTHER_ID = 1001


#: Every operation of the document, by label (``GET /v1/kv/{key}``); the test loads
#: the operations themselves from the document the node serves.
def _operations(loaded: Any) -> dict[str, Any]:
    """The operations of a loaded document, by label; a broken one fails the test."""
    found: dict[str, Any] = {}
    for result in loaded.get_all_operations():
        assert isinstance(result, Ok), f"schemathesis cannot read an operation: {result}"
        found[result.ok().label] = result.ok()
    return found


LABELS = sorted(_operations(schemathesis.openapi.from_dict(openapi_schema())))


def _takes_input(label: str) -> bool:
    """Whether an operation has parameters or a body (else no request of it is invalid)."""
    method, path = label.split(" ", 1)
    spec = openapi_schema()["paths"][path][method.lower()]
    return bool(spec.get("parameters") or spec.get("requestBody"))


CASES = [(label, GenerationMode.POSITIVE) for label in LABELS]
CASES += [(label, GenerationMode.NEGATIVE) for label in LABELS if _takes_input(label)]


@pytest.fixture(scope="module")
def node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-node cluster process; stopped at the end of the module."""
    tmp = tmp_path_factory.mktemp("schemathesis")
    api, peer = free_ports(2)
    argv = [sys.executable, "-m", "raftdb.cli", "serve", "--id", str(SELF), "--port", str(api)]
    argv += ["--cluster", f"http://127.0.0.1:{peer}", "--data-dir", str(tmp / "data")]
    argv += ["--tick-ms", "20", "--request-timeout-s", "1"]
    # Progress events well within a watch example's read: every one has events to check.
    argv += ["--watch-progress-s", "0.2"]
    log = (tmp / "node.log").open("ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    url = f"http://127.0.0.1:{api}"
    try:
        with httpx.Client(timeout=2.0) as http:
            poll("the node to be ready", lambda: http.get(f"{url}/readyz").is_success or None, 30)
        yield url
        with httpx.Client(timeout=5.0) as http:
            assert http.get(f"{url}/readyz").status_code == 200, "the node is not ready at the end"
        assert proc.poll() is None, "the node exited"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture(scope="module")
def node_schema(node_url: str) -> Any:
    """The node's own ``/openapi.json``, loaded by schemathesis."""
    with httpx.Client(timeout=5.0) as http:
        document = http.get(f"{node_url}/openapi.json").json()
    loaded = schemathesis.openapi.from_dict(document)
    assert sorted(_operations(loaded)) == LABELS
    return loaded


def _keep_node_alive(case: Case[Any]) -> None:
    """Map generated membership changes that would take the node's quorum away."""
    path, method = case.operation.path, case.method.upper()
    params = case.path_parameters or {}
    if path == "/v1/cluster/members" and method == "POST" and isinstance(case.body, dict):
        if isinstance(case.body.get("id"), int):
            if case.body["id"] == SELF:
                case.body["id"] = _OTHER_ID
            case.body["learner"] = True
    elif path == "/v1/cluster/members/{id}" and str(params.get("id")) == str(SELF):
        params["id"] = _OTHER_ID
    elif path == "/{key}" and method in ("POST", "DELETE"):
        key = str(params.get("key", ""))
        if key.isascii() and key.isdigit():
            # POST /<id> adds a voter: only ever for the node itself (400 or a no-op);
            # DELETE /<id> removes one: never the node itself.
            params["key"] = str(SELF) if method == "POST" else str(_OTHER_ID)


#: How long a blocking read of a generated request may wait.
_SHORT_WAIT = "200ms"
#: Seconds an event stream is read (it never ends by itself).
_STREAM_SECONDS = 1.0


def _bound_waits(case: Case[Any]) -> None:
    """A blocking read with a valid ``wait`` waits :data:`_SHORT_WAIT` instead."""
    query = case.query
    if not isinstance(query, dict) or "wait_index" not in query:
        return
    wait = query.get("wait")
    if wait is not None:
        try:
            parse_wait(str(wait).encode())
        except BadRequestError:
            return  # invalid: its 400 is what the case tests
    query["wait"] = _SHORT_WAIT


def _error_is_json(response: Any) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(
            f"{response.status_code} without a JSON body: {response.text[:200]!r}"
        ) from None
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str), body
    assert isinstance(body.get("message"), str), body


def _no_unexpected_5xx(response: Any) -> None:
    if response.status_code >= 500:
        assert response.status_code in (503, 504), (response.status_code, response.text[:300])


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{lb}-{m.value}" for lb, m in CASES])
def test_operation_against_the_schema(
    label: str, mode: GenerationMode, node_schema: Any, node_url: str
) -> None:
    operation = _operations(node_schema)[label]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(case=operation.as_strategy(mode))
    def check(case: Case[Any]) -> None:
        _keep_node_alive(case)
        _bound_waits(case)
        stream = case.operation.path == "/v1/watch"
        response = case.call(base_url=node_url, timeout=_STREAM_SECONDS if stream else 10)
        _no_unexpected_5xx(response)
        _error_is_json(response)
        case.validate_response(
            response,
            checks=[
                openapi_checks.status_code_conformance,
                openapi_checks.content_type_conformance,
                openapi_checks.response_schema_conformance,
            ],
        )

    try:
        check()
    except Unsatisfiable:
        if mode is not GenerationMode.NEGATIVE:
            raise
        pytest.skip(f"schemathesis finds no invalid request for {label}")
