"""``raftdb.config``: defaults, precedence (TOML < environment < flags), validation."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from raftdb.config import (
    CONFIG_ENV,
    KEYS,
    ConfigError,
    NodeConfig,
    check_peer_url,
    config_keys,
    env_name,
    flag_name,
    load_config,
    unknown_environment,
)

CLUSTER = ["http://127.0.0.1:12379", "http://127.0.0.1:22379", "http://127.0.0.1:32379"]
CLUSTER_TEXT = ",".join(CLUSTER)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = NodeConfig(id=2, cluster=CLUSTER)
    assert config.cluster == tuple(CLUSTER)
    assert config.join is False
    assert config.data_dir == Path("raftdb-2")
    assert config.storage == "leveldb"
    assert config.state_machine == "leveldb"
    assert config.snapshot_entries == 10_000
    assert config.snapshot_keep_entries == 5_000
    assert config.tick_ms == 100
    assert config.election_ticks == 10
    assert config.heartbeat_ticks == 1
    assert config.sync is True
    assert config.request_timeout_s == 5.0
    assert config.max_key_bytes == 4096
    assert config.max_value_bytes == 1024 * 1024
    assert config.max_request_bytes == 1536 * 1024
    assert config.cluster_token == "raftdb"
    assert config.watch_history == 50_000
    assert config.max_watchers == 10_000
    assert config.watch_buffer == 1_000
    assert config.watch_progress_s == 5.0
    assert config.peer_url == "http://127.0.0.1:22379"
    assert config.peers == {1: CLUSTER[0], 2: CLUSTER[1], 3: CLUSTER[2]}
    assert config.tick_s == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("tick_ms", "election_ticks", "minimum"),
    [(100, 10, 2), (10, 10, 2), (100, 20, 4), (100, 11, 3), (1000, 15, 30)],
)
def test_the_minimum_lease_ttl_is_above_twice_the_election_timeout(
    tick_ms: int, election_ticks: int, minimum: int
) -> None:
    config = NodeConfig(id=1, cluster=CLUSTER, tick_ms=tick_ms, election_ticks=election_ticks)
    assert config.election_timeout_s == pytest.approx(tick_ms * election_ticks / 1000)
    assert config.min_lease_ttl == minimum


def test_watch_keys_from_the_environment_and_toml(tmp_path: Path) -> None:
    environ = {
        "RAFTDB_ID": "1",
        "RAFTDB_CLUSTER": CLUSTER_TEXT,
        "RAFTDB_WATCH_HISTORY": "1_000",
        "RAFTDB_WATCH_PROGRESS_S": "0.5",
    }
    config = load_config(environ=environ)
    assert (config.watch_history, config.watch_progress_s) == (1000, 0.5)
    toml = _toml(tmp_path, "max_watchers = 7\nwatch_buffer = 3\nwatch_progress_s = 2\n")
    config = load_config(environ=environ, config_file=toml)
    # The environment's watch_progress_s wins over the file's.
    assert (config.max_watchers, config.watch_buffer, config.watch_progress_s) == (7, 3, 0.5)


def test_data_dir_given_as_str_becomes_a_path() -> None:
    config = NodeConfig(id=1, cluster=CLUSTER, data_dir="data/1")  # type: ignore[arg-type]
    assert config.data_dir == Path("data/1")


def test_the_three_ways_of_the_contract_mean_the_same(tmp_path: Path) -> None:
    toml = _toml(
        tmp_path, f'id = 1\ncluster = {CLUSTER!r}\ndata_dir = "data/1"\n'.replace("'", '"')
    )
    from_file = load_config(environ={CONFIG_ENV: str(toml)})
    from_env = load_config(
        environ={"RAFTDB_ID": "1", "RAFTDB_CLUSTER": CLUSTER_TEXT, "RAFTDB_DATA_DIR": "data/1"}
    )
    from_flags = load_config({"id": "1", "cluster": CLUSTER_TEXT, "data_dir": "data/1"}, environ={})
    assert from_file == from_env == from_flags


def test_precedence_toml_then_environment_then_flags(tmp_path: Path) -> None:
    toml = _toml(
        tmp_path,
        'id = 1\ncluster = ["http://127.0.0.1:1", "http://127.0.0.1:2"]\n'
        "tick_ms = 10\nelection_ticks = 20\nheartbeat_ticks = 2\nsync = false\n",
    )
    environ = {CONFIG_ENV: str(toml), "RAFTDB_ELECTION_TICKS": "30", "RAFTDB_HEARTBEAT_TICKS": "3"}
    config = load_config({"heartbeat_ticks": "4", "tick_ms": None}, environ=environ)
    assert config.tick_ms == 10  # TOML only
    assert config.election_ticks == 30  # environment over TOML
    assert config.heartbeat_ticks == 4  # flag over environment
    assert config.sync is False
    assert config.cluster == ("http://127.0.0.1:1", "http://127.0.0.1:2")


def test_config_file_flag_wins_over_the_variable(tmp_path: Path) -> None:
    env_file = tmp_path / "env.toml"
    env_file.write_text('id = 1\ncluster = ["http://127.0.0.1:1"]\n')
    flag_file = tmp_path / "flag.toml"
    flag_file.write_text('id = 1\ncluster = ["http://127.0.0.2:1"]\n')
    config = load_config(environ={CONFIG_ENV: str(env_file)}, config_file=flag_file)
    assert config.cluster == ("http://127.0.0.2:1",)


def test_flags_may_be_typed_values() -> None:
    config = load_config({"id": 2, "cluster": CLUSTER, "join": True, "sync": False}, environ={})
    assert (config.id, config.join, config.sync) == (2, True, False)


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("1", True), ("yes", True), ("ON", True), ("false", False), ("0", False)],
)
def test_environment_booleans(text: str, value: bool) -> None:
    environ = {"RAFTDB_ID": "1", "RAFTDB_CLUSTER": CLUSTER_TEXT, "RAFTDB_SYNC": text}
    assert load_config(environ=environ).sync is value


def test_empty_environment_values_are_unset() -> None:
    environ = {"RAFTDB_ID": "1", "RAFTDB_CLUSTER": CLUSTER_TEXT, "RAFTDB_DATA_DIR": ""}
    assert load_config(environ=environ).data_dir == Path("raftdb-1")


def test_cluster_list_tolerates_spaces_and_a_trailing_comma() -> None:
    environ = {"RAFTDB_ID": "1", "RAFTDB_CLUSTER": " http://127.0.0.1:1/ , http://127.0.0.2:2 ,"}
    assert load_config(environ=environ).cluster == ("http://127.0.0.1:1", "http://127.0.0.2:2")


def test_a_joining_node_lists_its_own_peer_url_too() -> None:
    # The node listens on entry `id`: without it a joining node could not start.
    with pytest.raises(ConfigError, match="'id'.*must index into 'cluster', also with 'join'"):
        load_config({"id": "4", "cluster": CLUSTER_TEXT, "join": "true"}, environ={})
    joined = load_config(
        {"id": "4", "cluster": CLUSTER_TEXT + ",http://127.0.0.1:42379", "join": "true"},
        environ={},
    )
    assert joined.join
    assert joined.peer_url == "http://127.0.0.1:42379"


def test_plugin_names_are_checked() -> None:
    config = load_config(
        {"id": "1", "cluster": CLUSTER_TEXT, "storage": "memory", "state_machine": "memory"},
        environ={},
    )
    assert (config.storage, config.state_machine) == ("memory", "memory")
    config = load_config(
        {"id": "1", "cluster": CLUSTER_TEXT, "storage": "raftdb.storage:MemoryStorage"},
        environ={},
    )
    assert config.storage == "raftdb.storage:MemoryStorage"


def test_to_toml_reads_back(tmp_path: Path) -> None:
    config = NodeConfig(
        id=3, cluster=CLUSTER, data_dir=Path('we"ird\\dir'), request_timeout_s=2.5, sync=False
    )
    text = config.to_toml()
    assert set(tomllib.loads(text)) == set(KEYS)
    assert load_config(config_file=_toml(tmp_path, text), environ={}) == config


BAD_SETTINGS = [
    # (settings as flags, the key the message must name, a phrase it must contain).
    # A flag given as blank is an error; a blank environment variable is "unset".
    ({"id": "0"}, "id", "at least 1"),
    ({"id": "-3"}, "id", "at least 1"),
    ({"id": "one"}, "id", "integer"),
    ({"id": "5"}, "id", "index into 'cluster'"),
    ({"cluster": ""}, "cluster", "required"),
    ({"cluster": "127.0.0.1:12379"}, "cluster", "http://host:port"),
    ({"cluster": "https://a:1"}, "cluster", "http://host:port"),
    ({"cluster": "http://127.0.0.1"}, "cluster", "port"),
    ({"cluster": "http://127.0.0.1:0"}, "cluster", "port"),
    ({"cluster": "http://127.0.0.1:99999"}, "cluster", "out of range"),
    ({"cluster": "http://127.0.0.1:1/path"}, "cluster", "nothing more"),
    ({"cluster": "http://u@a:1"}, "cluster", "nothing more"),
    ({"cluster": "http://127.0.0.1:1,http://127.0.0.1:1/"}, "cluster", "twice"),
    ({"join": "maybe"}, "join", "true or false"),
    ({"sync": "2"}, "sync", "true or false"),
    ({"data_dir": " "}, "data_dir", "non-empty"),
    ({"storage": "nosuch"}, "storage", "known: leveldb, memory"),
    ({"state_machine": "nosuch"}, "state_machine", "known: leveldb, memory"),
    ({"storage": "nosuch.module:Thing"}, "storage", "cannot import"),
    ({"snapshot_entries": "0"}, "snapshot_entries", "at least 1"),
    ({"snapshot_keep_entries": "-1"}, "snapshot_keep_entries", "at least 0"),
    ({"tick_ms": "0"}, "tick_ms", "at least 1"),
    ({"tick_ms": "1.5"}, "tick_ms", "integer"),
    ({"heartbeat_ticks": "0"}, "heartbeat_ticks", "at least 1"),
    ({"election_ticks": "1"}, "election_ticks", "greater than 'heartbeat_ticks' (got 1 ≤ 1)"),
    ({"heartbeat_ticks": "12"}, "election_ticks", "(got 10 ≤ 12)"),
    ({"commit_notice_delay_ms": "-1"}, "commit_notice_delay_ms", "at least 0"),
    ({"commit_notice_delay_ms": "0.5"}, "commit_notice_delay_ms", "integer"),
    ({"request_timeout_s": "0"}, "request_timeout_s", "> 0"),
    ({"request_timeout_s": "nan"}, "request_timeout_s", "> 0"),
    ({"request_timeout_s": "soon"}, "request_timeout_s", "number"),
    ({"max_key_bytes": "0"}, "max_key_bytes", "at least 1"),
    ({"max_value_bytes": "2000000"}, "max_value_bytes", "at most 'max_request_bytes'"),
    ({"max_request_bytes": "1000"}, "max_key_bytes", "at most 'max_request_bytes'"),
    ({"cluster_token": " "}, "cluster_token", "non-empty"),
    ({"cluster_token": "t" * 257}, "cluster_token", "at most 256 characters"),
    ({"watch_history": "0"}, "watch_history", "at least 1"),
    ({"watch_history": "lots"}, "watch_history", "integer"),
    ({"max_watchers": "0"}, "max_watchers", "at least 1"),
    ({"watch_buffer": "0"}, "watch_buffer", "at least 1"),
    ({"watch_buffer": "2.5"}, "watch_buffer", "integer"),
    ({"watch_progress_s": "0"}, "watch_progress_s", "> 0"),
    ({"watch_progress_s": "inf"}, "watch_progress_s", "> 0"),
    ({"watch_progress_s": "often"}, "watch_progress_s", "number"),
]


@pytest.mark.parametrize(("flags", "key", "phrase"), BAD_SETTINGS)
def test_each_bad_setting_is_one_line_naming_the_key(
    flags: dict[str, str], key: str, phrase: str
) -> None:
    settings = {"id": "1", "cluster": CLUSTER_TEXT, **flags}
    with pytest.raises(ConfigError) as raised:
        load_config(settings, environ={})
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"raftdb: config key {key!r}")
    assert phrase in message
    assert raised.value.key == key


def test_errors_say_where_the_value_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'tick_ms' \(from RAFTDB_TICK_MS\) must be"):
        load_config({"id": "1", "cluster": CLUSTER_TEXT}, environ={"RAFTDB_TICK_MS": "x"})
    with pytest.raises(ConfigError, match=r"'tick_ms' \(from --tick-ms\)"):
        load_config({"id": "1", "cluster": CLUSTER_TEXT, "tick_ms": "0"}, environ={})
    toml = _toml(tmp_path, f'id = 1\ncluster = "{CLUSTER_TEXT}"\nstorage = "nosuch"\n')
    with pytest.raises(ConfigError, match=r"'storage' \(from .*node.toml\) is wrong"):
        load_config(config_file=toml, environ={})


def test_missing_id_names_every_way_to_set_it() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(environ={"RAFTDB_CLUSTER": CLUSTER_TEXT})
    message = str(raised.value)
    assert "'id' is required" in message
    assert "RAFTDB_ID" in message
    assert "--id" in message


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("id = 1\nelecton_ticks = 3\n", "unknown config key 'electon_ticks'"),
        ("id = 1\nelecton_ticks = 3\n", "did you mean 'election_ticks'"),
        ("id = 1\n[raft]\nx = 1\n", "unknown config key 'raft'"),
        ("id = \n", "not valid TOML"),
        ('id = "1"\n', "must be an integer (got '1')"),
        ("id = true\n", "must be an integer (got True)"),
        ("id = 1\nsync = 1\n", "'sync' (from "),
        ("id = 1\ncluster = [1, 2]\n", "list of peer URL strings"),
        ("id = 1\nrequest_timeout_s = true\n", "'request_timeout_s'"),
        ('id = 1\nstorage = 3\ncluster = ["http://127.0.0.1:1"]\n', "'storage'"),
    ],
)
def test_bad_toml_files_are_one_line(tmp_path: Path, text: str, phrase: str) -> None:
    path = _toml(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_config(environ={CONFIG_ENV: str(path)})
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("raftdb: ")
    assert phrase in message


def test_toml_accepts_floats_and_ints_for_seconds(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'id = 1\ncluster = ["http://127.0.0.1:1"]\nrequest_timeout_s = 2\n')
    assert load_config(config_file=path, environ={}).request_timeout_s == 2.0


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(environ={CONFIG_ENV: str(tmp_path / "absent.toml")})
    message = str(raised.value)
    assert "\n" not in message
    assert "absent.toml" in message
    assert CONFIG_ENV in message
    assert "cannot be read" in message


def test_unknown_flag_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'port'"):
        load_config({"id": "1", "cluster": CLUSTER_TEXT, "port": "1"}, environ={})


def test_direct_construction_checks_too() -> None:
    with pytest.raises(ConfigError, match="'election_ticks'"):
        NodeConfig(id=1, cluster=CLUSTER, election_ticks=2, heartbeat_ticks=2)
    with pytest.raises(ConfigError, match="'cluster' must be a list"):
        NodeConfig(id=1, cluster="http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="'id' must be an integer"):
        NodeConfig(id=True, cluster=CLUSTER)


def test_names() -> None:
    assert env_name("state_machine") == "RAFTDB_STATE_MACHINE"
    assert flag_name("state_machine") == "--state-machine"
    assert check_peer_url("http://[::1]:5/") == "http://[::1]:5"
    assert unknown_environment({"RAFTDB_ID": "1", "RAFTDB_CONFIG": "x", "RAFTDB_IDD": "1"}) == [
        "RAFTDB_IDD"
    ]


def test_config_keys_read_the_fields() -> None:
    keys = config_keys()
    assert (
        tuple(key.name for key in keys) == KEYS == tuple(spec.name for spec in fields(NodeConfig))
    )
    config = NodeConfig(id=3, cluster=CLUSTER)
    for key in keys:
        assert key.help.strip(), key.name
        assert key.default_text.strip(), key.name
        assert (key.env, key.flag) == (env_name(key.name), flag_name(key.name))
        assert key.is_bool == (key.type == "bool")
        if key.name == "data_dir":
            assert key.default_text == "raftdb-<id>"
            assert config.data_dir == Path("raftdb-3")
        elif not key.required:
            assert getattr(config, key.name) == key.default, key.name
    required = {key.name for key in keys if key.required}
    assert required == {"id", "cluster"}
    by_name = {key.name: key for key in keys}
    assert by_name["sync"].default_text == "on"
    assert by_name["join"].default_text == "off"
    assert by_name["request_timeout_s"].default_text == "5"
    assert by_name["max_value_bytes"].default_text == str(
        NodeConfig(id=1, cluster=CLUSTER).max_value_bytes
    )


def _docs_table() -> dict[str, list[str]]:
    """``docs/configuration.md``'s key table: key → its cells (the link, the meaning)."""
    text = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    section = text.split("\n## Keys\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| [`")]
    cells = [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]
    return {row[0].split("`")[1]: row for row in cells}


def test_docs_table_names_every_key() -> None:
    # Types, defaults, variables and flags are on the generated reference page
    # (docs/hooks/refpages/configuration.py); the guide says what each key is for.
    table = _docs_table()
    assert list(table) == list(KEYS)
    for key in config_keys():
        link, meaning = table[key.name]
        assert link == f"[`{key.name}`](reference/configuration.md#{key.name})", key.name
        assert meaning, key.name


# -- security keys -------------------------------------------------------------------

REMOTE = ["http://10.0.0.1:12379", "http://10.0.0.2:12379", "http://10.0.0.3:12379"]
SECRET = "correct horse battery staple"


def test_a_non_loopback_peer_listener_needs_peer_authentication() -> None:
    with pytest.raises(ConfigError, match="'insecure_peers' is off and the peer listener") as info:
        NodeConfig(id=1, cluster=REMOTE)
    assert "http://10.0.0.1:12379" in str(info.value)
    assert NodeConfig(id=1, cluster=REMOTE, insecure_peers=True).peer_auth == "none"
    assert NodeConfig(id=1, cluster=REMOTE, peer_secret=SECRET).peer_auth == "secret"
    # The listener is what counts: a loopback listen_peer_url behind a proxy is fine.
    local = NodeConfig(id=1, cluster=REMOTE, listen_peer_url="http://127.0.0.1:12379")
    assert local.peer_auth == "none"
    with pytest.raises(ConfigError, match="insecure_peers"):
        NodeConfig(id=1, cluster=CLUSTER, listen_peer_url="http://0.0.0.0:12379")
    with pytest.raises(ConfigError, match="insecure_peers"):
        NodeConfig(id=1, cluster=["http://db1.example:12379"])  # a name may resolve anywhere
    assert NodeConfig(id=1, cluster=["http://localhost:12379"]).peer_auth == "none"
    assert NodeConfig(id=1, cluster=["http://[::1]:12379"]).peer_auth == "none"


def test_the_peer_secret_is_long_enough_and_given_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'peer_secret' must be at least 16 bytes"):
        NodeConfig(id=1, cluster=CLUSTER, peer_secret="short")
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\nignored\n")
    config = NodeConfig(id=1, cluster=CLUSTER, peer_secret_file=str(secret_file))
    assert config.peer_secret_bytes() == SECRET.encode()
    with pytest.raises(ConfigError, match="both set"):
        NodeConfig(id=1, cluster=CLUSTER, peer_secret=SECRET, peer_secret_file=str(secret_file))
    secret_file.write_text("tiny\n")
    with pytest.raises(ConfigError, match="'peer_secret_file' must hold a secret of at least"):
        NodeConfig(id=1, cluster=CLUSTER, peer_secret_file=str(secret_file))
    with pytest.raises(ConfigError, match="'peer_secret_file' cannot be read"):
        NodeConfig(id=1, cluster=CLUSTER, peer_secret_file=str(tmp_path / "missing"))


def test_the_peer_secret_is_never_shown() -> None:
    config = NodeConfig(id=1, cluster=CLUSTER, peer_secret=SECRET)
    assert SECRET not in repr(config)
    toml = config.to_toml()
    assert SECRET not in toml
    assert "# peer_secret is set (not shown)" in toml
    assert 'peer_secret = ""' in NodeConfig(id=1, cluster=CLUSTER).to_toml()


def test_tls_keys_come_in_complete_sets(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match="'peer_key_file' is required with 'peer_cert_file'"):
        NodeConfig(id=1, cluster=CLUSTER, peer_cert_file=str(pem))
    tls = NodeConfig(
        id=1, cluster=REMOTE, peer_cert_file=str(pem), peer_key_file=str(pem), peer_ca_file=str(pem)
    )
    assert tls.peer_auth == "tls"
    with pytest.raises(ConfigError, match="both set"):
        dataclasses.replace(tls, peer_secret=SECRET)
    with pytest.raises(ConfigError, match="'tls_key_file' is required"):
        NodeConfig(id=1, cluster=CLUSTER, tls_cert_file=str(pem))
    with pytest.raises(ConfigError, match="'tls_client_ca_file' needs 'tls_cert_file'"):
        NodeConfig(id=1, cluster=CLUSTER, tls_client_ca_file=str(pem))
    with pytest.raises(ConfigError, match="'tokens_file' names .* not a readable file"):
        NodeConfig(id=1, cluster=CLUSTER, tokens_file=str(tmp_path / "nope.toml"))


def test_security_keys_from_the_environment(tmp_path: Path) -> None:
    environ = {
        "RAFTDB_ID": "1",
        "RAFTDB_CLUSTER": ",".join(REMOTE),
        "RAFTDB_PEER_SECRET": SECRET,
        "RAFTDB_MAX_PENDING_REQUESTS": "50",
        "RAFTDB_PUBLIC_STATUS": "false",
    }
    config = load_config(environ=environ, check_plugins=False)
    assert (config.peer_auth, config.max_pending_requests, config.public_status) == (
        "secret",
        50,
        False,
    )
    with pytest.raises(ConfigError, match=r"'body_timeout_s' \(from RAFTDB_BODY_TIMEOUT_S\)"):
        load_config(environ={**environ, "RAFTDB_BODY_TIMEOUT_S": "0"}, check_plugins=False)
