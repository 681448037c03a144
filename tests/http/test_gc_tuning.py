"""A server process tunes its garbage collector once the node has started."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from raftdb import app as app_module
from raftdb.app import GC_YOUNG_THRESHOLD, RaftdbApp, tune_gc
from raftdb.config import NodeConfig


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    tune_gc()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])


def test_server_apps_tune_gc_and_embedded_ones_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    config = NodeConfig(id=1, cluster=["http://127.0.0.1:1"])
    assert not RaftdbApp(config).tune_gc
    monkeypatch.setattr(app_module, "load_config", lambda **_: config)
    assert app_module.app_from_environment().tune_gc
