"""``raftdb serve --loop``: which event loop the server runs on."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from raftdb.cli import build_parser, loop_factory

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


def test_asyncio_is_the_standard_loop() -> None:
    assert loop_factory("asyncio") is None


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed")
@pytest.mark.parametrize("name", ["auto", "uvloop"])
def test_auto_and_uvloop_run_on_uvloop(name: str) -> None:
    import uvloop

    factory = loop_factory(name)
    assert factory is not None
    with asyncio.Runner(loop_factory=factory) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)


def test_serve_defaults_to_auto() -> None:
    args = build_parser().parse_args(["serve", "--id", "1", "--cluster", "http://127.0.0.1:1"])
    assert args.loop == "auto"
