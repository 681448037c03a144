"""Shared by the API tests: the TestClient import and error-answer checks."""

from __future__ import annotations

import warnings

import httpx
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette warns, once at import, that it prefers httpx2 to the httpx installed here.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

__all__ = ["TestClient", "error_of"]


def error_of(response: httpx.Response, status: int) -> str:
    """The ``error`` code of a JSON error answer, after checking its status and shape."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert set(data) >= {"error", "message"}, data
    message = data["message"]
    assert isinstance(message, str), data
    assert message, data
    assert "\n" not in message, message
    assert "Traceback" not in message, message
    return str(data["error"])
