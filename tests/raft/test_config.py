"""The core's settings and their validation (``raftdb/raft/config.py``)."""

from __future__ import annotations

from random import Random
from typing import Any

import pytest

from raftdb.raft import RawNode
from raftdb.raft.config import Config
from raftdb.raft.errors import RaftConfigError, RaftError
from raftdb.storage.memory import MemoryStorage


def test_defaults_are_valid() -> None:
    config = Config(id=1, storage=MemoryStorage())
    config.validate()
    assert config.election_tick > config.heartbeat_tick
    assert config.check_quorum
    assert config.pre_vote


def test_each_config_gets_its_own_rng() -> None:
    a = Config(id=1, storage=MemoryStorage())
    b = Config(id=2, storage=MemoryStorage())
    assert isinstance(a.rng, Random)
    assert a.rng is not b.rng


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"id": 0}, "id"),
        ({"id": -1}, "id"),
        ({"heartbeat_tick": 0}, "heartbeat_tick"),
        ({"election_tick": 1, "heartbeat_tick": 1}, "election_tick"),
        ({"election_tick": 3, "heartbeat_tick": 5}, "election_tick"),
        ({"max_inflight_msgs": 0}, "max_inflight_msgs"),
        ({"max_size_per_msg": 0}, "max_size_per_msg"),
        ({"max_committed_size_per_ready": 0}, "max_committed_size_per_ready"),
        ({"max_uncommitted_entries_size": -1}, "max_uncommitted_entries_size"),
        ({"applied": -1}, "applied"),
    ],
)
def test_invalid_settings_name_the_field(overrides: dict[str, Any], field: str) -> None:
    config = Config(id=1, storage=MemoryStorage())
    for name, value in overrides.items():
        setattr(config, name, value)
    with pytest.raises(RaftConfigError, match=field):
        config.validate()
    # A node is never made from an invalid config.
    with pytest.raises(RaftConfigError, match=field):
        RawNode(config)


@pytest.mark.parametrize(
    "overrides",
    [
        {"election_tick": 2, "heartbeat_tick": 1},
        {"max_uncommitted_entries_size": 0},
        {"max_inflight_msgs": 1, "max_size_per_msg": 1, "max_committed_size_per_ready": 1},
    ],
)
def test_boundary_settings_are_valid(overrides: dict[str, Any]) -> None:
    config = Config(id=1, storage=MemoryStorage(), **overrides)
    config.validate()
    RawNode(config)


def test_config_error_is_a_raft_error() -> None:
    assert issubclass(RaftConfigError, RaftError)


def test_negative_max_inflight_bytes_is_refused() -> None:
    config = Config(id=1, storage=MemoryStorage(), max_inflight_bytes=-1)
    with pytest.raises(RaftConfigError, match="max_inflight_bytes"):
        config.validate()
