"""A node's configuration: the keys, their defaults, and where they come from.

Every key can be set in three places, each overriding the one before:

1. a TOML file (flat ``key = value`` lines), named by ``RAFTDB_CONFIG`` or ``--config``;
2. ``RAFTDB_<KEY>`` environment variables (``RAFTDB_ID=1``,
   ``RAFTDB_CLUSTER=http://a:1,http://b:2``, ``RAFTDB_JOIN=true``);
3. command-line flags (``--id 1``, ``--election-ticks 10``, ``--join``).

A wrong setting raises :class:`ConfigError`, whose message is one line naming
the key, what is wrong with it and where the value came from. The API's
address (``--host``/``--port``) is the web server's business, not the node's.
The reference is ``docs/configuration.md``.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from raftdb.kv.changes import DEFAULT_WATCH_HISTORY
from raftdb.transport.address import parse_peer_url
from raftdb.transport.handshake import MIN_SECRET_BYTES

__all__ = [
    "CLIENT_ENVIRONMENT",
    "CONFIG_ENV",
    "ENV_PREFIX",
    "KEYS",
    "MIN_PEER_SECRET_BYTES",
    "ConfigError",
    "ConfigKey",
    "NodeConfig",
    "PeerAuth",
    "check_peer_url",
    "config_keys",
    "env_name",
    "flag_name",
    "load_config",
    "setting",
    "unknown_environment",
]

#: The environment variable naming the TOML file.
CONFIG_ENV: Final = "RAFTDB_CONFIG"
#: Prefix of the environment variables, one per key: ``RAFTDB_<KEY>``.
ENV_PREFIX: Final = "RAFTDB_"
#: The ``RAFTDB_*`` variables of the client commands (``raftdb get`` …, see
#: ``raftdb.cli.common``): not node settings, and not typos either.
CLIENT_ENVIRONMENT: Final = frozenset(
    {
        "RAFTDB_ENDPOINTS",
        "RAFTDB_TOKEN",
        "RAFTDB_CACERT",
        "RAFTDB_CERT",
        "RAFTDB_KEY",
        "RAFTDB_OUTPUT",
        "RAFTDB_TIMEOUT",
        "RAFTDB_CLIENT_CONFIG",
    }
)

KiB: Final = 1024
MiB: Final = 1024 * KiB

# The peer handshake's limit (raftdb.transport.frames.MAX_TOKEN_LENGTH), checked here so a
# long token is a configuration error rather than a failure to start.
_MAX_TOKEN_CHARS: Final = 256

# ``data_dir``'s default depends on ``id``; this sentinel (a path no file system
# accepts, it holds a NUL) stands for "not given" so the field can stay a Path.
_AUTO_DATA_DIR: Final = Path("\0raftdb-<id>")


class ConfigError(ValueError):
    """A setting is missing or wrong. ``str(error)`` is one line naming the key and why.

    Attributes:
        key: the offending key (``""`` for errors about the file as a whole).
        why: what is wrong with it (``""`` when the message says it all).
    """

    def __init__(self, message: str, key: str = "", why: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.why = why


def _error(key: str, why: str, origin: str = "") -> ConfigError:
    where = f" ({origin})" if origin else ""
    return ConfigError(f"raftdb: config key {key!r}{where} {why}", key, why)


def check_peer_url(url: str, key: str = "cluster") -> str:
    """Check a peer URL (``http://host:port``) and return it without a trailing ``/``.

    Raises:
        ConfigError: naming ``key``, if it is not ``http://host:port``.
    """
    try:
        return parse_peer_url(url).url
    except ValueError as exc:
        raise _error(key, f"has a {exc}") from None


_T = TypeVar("_T")


def _about(
    help: str, metavar: str = "", shown: str = "", required: bool = False, secret: bool = False
) -> dict[str, Any]:
    """A field's metadata: what :func:`config_keys` reads back (see :class:`ConfigKey`)."""
    return {
        "help": help,
        "metavar": metavar,
        "shown": shown,
        "required": required,
        "secret": secret,
    }


def setting(
    default: _T,
    *,
    help: str,
    metavar: str = "",
    shown: str = "",
    required: bool = False,
    secret: bool = False,
) -> _T:
    """Declare a :class:`NodeConfig` key: its default and what the CLI and docs say of it.

    Args:
        default: the value when no source sets the key.
        help: one line for ``--help`` (lower case, no final period, no default).
        metavar: the flag's value placeholder; default ``N`` for numbers.
        shown: how the default reads when the value itself would not say it
            (``data_dir``'s depends on ``id``).
        required: the default is refused: some source must set the key.
        secret: the value is never shown: not in ``repr()``, not by
            :meth:`NodeConfig.to_toml` (``raftdb config``), not in an error.

    Returns:
        A dataclass field (typed as the default, so the declaration reads as one).
    """
    about = _about(help, metavar, shown, required, secret)
    return field(default=default, metadata=about, repr=not secret)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """One node's settings. See ``docs/configuration.md`` for each key.

    Each field declares its default and help text (:func:`setting`), which
    :func:`config_keys` reads for the CLI's flags and ``--help``.

    ``__post_init__`` checks every value (cheaply: plugin names are checked by
    :meth:`check_plugins`, which :func:`load_config` calls) and raises
    :class:`ConfigError` naming the first wrong key.
    """

    # Each key's default and help (see setting()); ``id`` has no default, so a plain
    # field(), which mypy, like the dataclass, reads as required.
    id: int = field(metadata=_about("this node's id (≥ 1); member i has the peer URL cluster[i-1]"))
    cluster: Sequence[str] = setting(
        (),
        help="comma-separated peer URLs of all members in id order, http://host:port,...",
        metavar="URLS",
        required=True,
    )
    join: bool = setting(
        False, help="join a running cluster (that has added this node) instead of bootstrapping"
    )
    data_dir: Path = setting(
        _AUTO_DATA_DIR,
        help="directory for the log, snapshots and state",
        metavar="DIR",
        shown="raftdb-<id>",
    )
    storage: str = setting(
        "leveldb", help="storage plugin name or package.module:attr", metavar="PLUGIN"
    )
    state_machine: str = setting(
        "leveldb", help="state machine plugin name or package.module:attr", metavar="PLUGIN"
    )
    snapshot_entries: int = setting(
        10_000, help="snapshot (and compact the log) every N applied entries"
    )
    snapshot_keep_entries: int = setting(
        5_000, help="entries kept after compaction, so slow followers need no snapshot"
    )
    tick_ms: int = setting(100, help="milliseconds per Raft tick")
    election_ticks: int = setting(10, help="election timeout in ticks, randomised in [n, 2n)")
    heartbeat_ticks: int = setting(1, help="heartbeat interval in ticks")
    sync: bool = setting(True, help="fsync before acknowledging writes")
    state_sync_interval_ms: int = setting(
        100,
        help="make the state machine durable at most every N ms; the Raft log, "
        "fsynced before every answer, replays what a power cut took",
    )
    commit_notice_delay_ms: int = setting(
        2,
        help="a leader holds a commit-only notice to an idle follower up to N ms "
        "for the next append to carry; 0 sends it at once",
    )
    request_timeout_s: float = setting(
        5.0, help="longest wait for a leader, commit or read index", metavar="SECONDS"
    )
    max_key_bytes: int = setting(4 * KiB, help="longest key in bytes; 413 beyond")
    max_value_bytes: int = setting(1 * MiB, help="longest value in bytes; 413 beyond")
    max_request_bytes: int = setting(3 * MiB // 2, help="largest request body in bytes; 413 beyond")
    cluster_token: str = setting(
        "raftdb",
        help="shared by one cluster's members; peers with another token are refused",
        metavar="TOKEN",
    )
    listen_peer_url: str = setting(
        "",
        help="where to listen for peers, as behind a proxy or NAT",
        metavar="URL",
        shown="this node's 'cluster' entry",
    )
    # -- security (docs/security.md) --------------------------------------------------
    insecure_peers: bool = setting(
        False,
        help="let a peer listener on a non-loopback address run without peer authentication",
    )
    peer_secret: str = setting(
        "",
        help="secret the members prove to each other (HMAC challenge-response), never sent",
        metavar="SECRET",
        shown="none",
        secret=True,
    )
    peer_secret_file: str = setting(
        "", help="file holding peer_secret (its first line)", metavar="FILE", shown="none"
    )
    peer_cert_file: str = setting(
        "",
        help="this member's certificate for mutual TLS between members (PEM)",
        metavar="FILE",
        shown="none",
    )
    peer_key_file: str = setting(
        "", help="the private key of peer_cert_file (PEM)", metavar="FILE", shown="none"
    )
    peer_ca_file: str = setting(
        "",
        help="the CA that signs every member's peer certificate (PEM)",
        metavar="FILE",
        shown="none",
    )
    tls_cert_file: str = setting(
        "",
        help="certificate for HTTPS on the client API (raftdb serve; PEM)",
        metavar="FILE",
        shown="none",
    )
    tls_key_file: str = setting(
        "", help="the private key of tls_cert_file (PEM)", metavar="FILE", shown="none"
    )
    tls_client_ca_file: str = setting(
        "",
        help="require client certificates signed by this CA on the client API (PEM)",
        metavar="FILE",
        shown="none",
    )
    tokens_file: str = setting(
        "",
        help="bearer tokens (TOML, hashes only) with roles; without it the API is open",
        metavar="FILE",
        shown="none",
    )
    public_status: bool = setting(
        True,
        help="with tokens_file, /v1/status, /v1/cluster/status and /metrics still answer "
        "without a token",
    )
    # -- admission control ------------------------------------------------------------
    max_pending_requests: int = setting(
        10_000, help="writes and reads one node holds waiting at once; 429 beyond"
    )
    max_connections: int = setting(1_000, help="open client connections (raftdb serve); 503 beyond")
    header_timeout_s: float = setting(
        10.0, help="longest time a client may take to send a request's headers", metavar="SECONDS"
    )
    body_timeout_s: float = setting(
        30.0, help="longest time a client may take to send a request's body", metavar="SECONDS"
    )
    max_list_bytes: int = setting(
        4 * MiB, help="largest listing answer in bytes; the page ends early beyond it"
    )
    # -- watch (docs/api.md#watch) ----------------------------------------------------
    watch_history: int = setting(
        DEFAULT_WATCH_HISTORY,
        help="changes the watch history retains, so watchers resume; 410 before them",
    )
    max_watchers: int = setting(10_000, help="watch streams one node serves at once; 429 beyond")
    watch_buffer: int = setting(
        1_000, help="events buffered per watcher; a watcher further behind is closed"
    )
    watch_progress_s: float = setting(
        5.0, help="an idle watch stream gets a progress event this often", metavar="SECONDS"
    )

    def __post_init__(self) -> None:
        _check_int("id", self.id, minimum=1)
        if isinstance(self.cluster, str):
            raise _error("cluster", "must be a list of peer URLs, not one string")
        urls = tuple(check_peer_url(str(url)) for url in self.cluster)
        object.__setattr__(self, "cluster", urls)
        seen: dict[str, int] = {}
        for number, url in enumerate(urls, start=1):
            if url in seen:
                raise _error("cluster", f"lists {url} twice (members {seen[url]} and {number})")
            seen[url] = number
        _check_bool("join", self.join)
        if not urls:
            raise _error(
                "cluster", "is required: the peer URLs of all members (member i is entry i-1)"
            )
        if self.id > len(urls):
            # A joining node lists its own URL too (as raftexample does): it is
            # where the node listens for its peers.
            raise _error(
                "id",
                f"must index into 'cluster', also with 'join' (got id {self.id}, but "
                f"'cluster' lists {len(urls)} peer URL{'' if len(urls) == 1 else 's'})",
            )
        data_dir = self.data_dir
        if data_dir == _AUTO_DATA_DIR:
            data_dir = Path(f"raftdb-{self.id}")
        if not isinstance(data_dir, str | os.PathLike) or not str(data_dir).strip():
            raise _error("data_dir", "must be a non-empty path")
        object.__setattr__(self, "data_dir", Path(data_dir))
        if not isinstance(self.listen_peer_url, str):
            raise _error("listen_peer_url", "must be a peer URL or empty")
        if self.listen_peer_url:
            object.__setattr__(
                self, "listen_peer_url", check_peer_url(self.listen_peer_url, "listen_peer_url")
            )
        for key in ("storage", "state_machine", "cluster_token"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise _error(key, f"must be a non-empty string (got {value!r})")
        if len(self.cluster_token) > _MAX_TOKEN_CHARS:
            raise _error(
                "cluster_token",
                f"must be at most {_MAX_TOKEN_CHARS} characters (got {len(self.cluster_token)})",
            )
        _check_int("snapshot_entries", self.snapshot_entries, minimum=1)
        _check_int("snapshot_keep_entries", self.snapshot_keep_entries, minimum=0)
        _check_int("tick_ms", self.tick_ms, minimum=1)
        _check_int("heartbeat_ticks", self.heartbeat_ticks, minimum=1)
        _check_int("election_ticks", self.election_ticks, minimum=1)
        if self.election_ticks <= self.heartbeat_ticks:
            raise _error(
                "election_ticks",
                f"must be greater than 'heartbeat_ticks' "
                f"(got {self.election_ticks} ≤ {self.heartbeat_ticks})",
            )
        _check_bool("sync", self.sync)
        _check_int("state_sync_interval_ms", self.state_sync_interval_ms, minimum=1)
        _check_int("commit_notice_delay_ms", self.commit_notice_delay_ms, minimum=0)
        object.__setattr__(
            self, "request_timeout_s", _seconds("request_timeout_s", self.request_timeout_s)
        )
        for key in ("max_key_bytes", "max_value_bytes", "max_request_bytes"):
            _check_int(key, getattr(self, key), minimum=1)
        for key in ("max_key_bytes", "max_value_bytes"):
            if getattr(self, key) > self.max_request_bytes:
                raise _error(
                    key,
                    f"must be at most 'max_request_bytes' "
                    f"(got {getattr(self, key)} > {self.max_request_bytes})",
                )
        _check_security(self)
        for key in ("max_pending_requests", "max_connections", "max_list_bytes"):
            _check_int(key, getattr(self, key), minimum=1)
        for key in ("header_timeout_s", "body_timeout_s", "watch_progress_s"):
            object.__setattr__(self, key, _seconds(key, getattr(self, key)))
        for key in ("watch_history", "max_watchers", "watch_buffer"):
            _check_int(key, getattr(self, key), minimum=1)

    # -- derived values --------------------------------------------------------------

    @property
    def peer_url(self) -> str | None:
        """This node's own peer URL (``cluster[id - 1]``), or ``None`` if the list is shorter."""
        return self.cluster[self.id - 1] if self.id <= len(self.cluster) else None

    @property
    def peers(self) -> dict[int, str]:
        """Member id → peer URL, as ``cluster`` lists them (this node included)."""
        return {number: url for number, url in enumerate(self.cluster, start=1)}

    @property
    def tick_s(self) -> float:
        """Seconds per tick."""
        return self.tick_ms / 1000.0

    @property
    def election_timeout_s(self) -> float:
        """The election timeout in seconds (``election_ticks × tick_ms``; the core
        randomises it in [1, 2) times this)."""
        return self.election_ticks * self.tick_ms / 1000.0

    @property
    def min_lease_ttl(self) -> int:
        """The shortest lease TTL the API grants, in seconds: ``max(2, ⌈2 × election
        timeout⌉)`` (2 with the defaults).

        Twice the election timeout covers its randomised upper end: a lease
        outlives the election that follows the loss of its leader, so that a
        new leader's fresh TTL (``raftdb.node.leases``) is what decides, never
        the gap without one.
        """
        return max(2, math.ceil(2 * self.election_timeout_s))

    @property
    def listen_url(self) -> str:
        """Where the peer listener binds: ``listen_peer_url``, else this node's own entry."""
        return self.listen_peer_url or self.peer_url or ""

    @property
    def peer_auth(self) -> PeerAuth:
        """How members prove who they are: ``"tls"``, ``"secret"`` or ``"none"``."""
        if self.peer_cert_file:
            return "tls"
        if self.peer_secret or self.peer_secret_file:
            return "secret"
        return "none"

    def peer_secret_bytes(self) -> bytes:
        """The peer secret (from ``peer_secret`` or the first line of ``peer_secret_file``).

        Raises:
            ConfigError: the file cannot be read or holds a secret too short.
        """
        if self.peer_secret:
            return self.peer_secret.encode("utf-8")
        return _read_secret(self.peer_secret_file)

    def check_plugins(self) -> None:
        """Check that ``storage`` and ``state_machine`` name loadable plugins.

        Raises:
            ConfigError: one line naming the key and listing the known plugin names.
        """
        from raftdb.plugins import PluginError, load_state_machine, load_storage

        checks: tuple[tuple[str, Callable[[str], object]], ...] = (
            ("storage", load_storage),
            ("state_machine", load_state_machine),
        )
        for key, load in checks:
            try:
                load(getattr(self, key))
            except PluginError as exc:
                raise _error(key, f"is wrong: {exc}") from None

    def to_toml(self) -> str:
        """The settings as a TOML file that :func:`load_config` reads back."""
        lines = []
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.metadata.get("secret") and value:
                lines.append(f"# {spec.name} is set (not shown)")
                continue
            lines.append(f"{spec.name} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _check_int(key: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _error(key, f"must be an integer (got {value!r})")
    if value < minimum:
        raise _error(key, f"must be at least {minimum} (got {value})")


def _check_bool(key: str, value: object) -> None:
    if not isinstance(value, bool):
        raise _error(key, f"must be true or false (got {value!r})")


def _seconds(key: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise _error(key, f"must be a number of seconds > 0 (got {value!r})")
    return float(value)


#: The shortest peer secret accepted, in bytes (the transport's handshake refuses shorter).
MIN_PEER_SECRET_BYTES: Final = MIN_SECRET_BYTES

PeerAuth = Literal["tls", "secret", "none"]


def _read_secret(path: str) -> bytes:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise _error("peer_secret_file", f"cannot be read: {reason}") from None
    lines = text.splitlines()
    secret = (lines[0] if lines else "").strip().encode("utf-8")
    if len(secret) < MIN_PEER_SECRET_BYTES:
        raise _error(
            "peer_secret_file",
            f"must hold a secret of at least {MIN_PEER_SECRET_BYTES} bytes on its first line",
        )
    return secret


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost: it may resolve anywhere


def _check_security(config: NodeConfig) -> None:
    """The security keys: complete pairs, readable files, and no open peer port by mistake."""
    for key in (
        "peer_secret",
        "peer_secret_file",
        "peer_cert_file",
        "peer_key_file",
        "peer_ca_file",
        "tls_cert_file",
        "tls_key_file",
        "tls_client_ca_file",
        "tokens_file",
    ):
        if not isinstance(getattr(config, key), str):
            shown = "(not shown)" if key == "peer_secret" else repr(getattr(config, key))
            raise _error(key, f"must be a string {shown}")
    _check_bool("insecure_peers", config.insecure_peers)
    _check_bool("public_status", config.public_status)
    if config.peer_secret and config.peer_secret_file:
        raise _error("peer_secret_file", "and 'peer_secret' are both set: give one of them")
    if config.peer_secret and len(config.peer_secret.encode("utf-8")) < MIN_PEER_SECRET_BYTES:
        raise _error("peer_secret", f"must be at least {MIN_PEER_SECRET_BYTES} bytes long")
    if config.peer_secret_file:
        config.peer_secret_bytes()  # readable, long enough
    peer_tls = ("peer_cert_file", "peer_key_file", "peer_ca_file")
    given = [key for key in peer_tls if getattr(config, key)]
    if given and len(given) != len(peer_tls):
        missing = [key for key in peer_tls if key not in given]
        raise _error(missing[0], f"is required with {', '.join(repr(k) for k in given)}")
    if given and (config.peer_secret or config.peer_secret_file):
        raise _error(
            "peer_secret", "and peer TLS are both set: give one way of peer authentication"
        )
    if bool(config.tls_cert_file) != bool(config.tls_key_file):
        key = "tls_key_file" if config.tls_cert_file else "tls_cert_file"
        raise _error(key, "is required with the other of 'tls_cert_file'/'tls_key_file'")
    if config.tls_client_ca_file and not config.tls_cert_file:
        raise _error("tls_client_ca_file", "needs 'tls_cert_file' and 'tls_key_file' (HTTPS)")
    for key in (*peer_tls, "tls_cert_file", "tls_key_file", "tls_client_ca_file", "tokens_file"):
        path = getattr(config, key)
        if path and not Path(path).is_file():
            raise _error(key, f"names {path!r}, which is not a readable file")
    listen = config.listen_url
    if listen and config.peer_auth == "none" and not config.insecure_peers:
        host = parse_peer_url(listen).host
        if not _is_loopback(host):
            raise _error(
                "insecure_peers",
                f"is off and the peer listener {listen} is not on a loopback address: set "
                "'peer_secret' (or 'peer_secret_file') or 'peer_cert_file', 'peer_key_file' "
                "and 'peer_ca_file', or insecure_peers = true to run without peer authentication",
            )


# -- loading -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """One key as :class:`NodeConfig` declares it, for the CLI and the docs.

    Attributes:
        name: the key (``election_ticks``), as in the TOML file.
        type: the field's annotation (``"int"``, ``"bool"``, ``"Sequence[str]"``, ``"Path"``).
        default: the declared default, or ``None`` when ``required`` (``data_dir``'s
            is a placeholder for ``raftdb-<id>``: show ``default_text``).
        required: no default: the file, the environment or a flag must set it.
        help: one line saying what it is, without the default.
        default_text: how the default reads (``"10000"``, ``"on"``, ``"raftdb-<id>"``,
            ``"required"``).
        env: its environment variable (``RAFTDB_ELECTION_TICKS``).
        flag: its flag (``--election-ticks``; a bool also has ``--no-election-ticks``).
        metavar: the flag's value placeholder (``""`` for a bool).
    """

    name: str
    type: str
    default: object
    required: bool
    help: str
    default_text: str
    env: str
    flag: str
    metavar: str

    @property
    def is_bool(self) -> bool:
        """Whether it is a switch: ``--key`` / ``--no-key``, ``true``/``false``."""
        return self.type == "bool"


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value) or "none"
    return str(value) if value != "" else '""'


def _config_key(spec: Field[Any]) -> ConfigKey:
    about = spec.metadata
    kind = str(spec.type)
    required = spec.default is MISSING or bool(about.get("required"))
    default = None if required else spec.default
    metavar = about.get("metavar") or ("" if kind == "bool" else "N")
    return ConfigKey(
        name=spec.name,
        type=kind,
        default=default,
        required=required,
        help=about["help"],
        default_text="required" if required else about.get("shown") or _shown(default),
        env=env_name(spec.name),
        flag=flag_name(spec.name),
        metavar=metavar,
    )


def config_keys() -> tuple[ConfigKey, ...]:
    """Every key of :class:`NodeConfig`, in declaration order, read from its fields."""
    return _CONFIG_KEYS


def env_name(key: str) -> str:
    """The environment variable for ``key``: ``RAFTDB_<KEY>``."""
    return ENV_PREFIX + key.upper()


def flag_name(key: str) -> str:
    """The command-line flag for ``key``: ``--key-with-dashes``."""
    return "--" + key.replace("_", "-")


_CONFIG_KEYS: Final = tuple(_config_key(spec) for spec in fields(NodeConfig))
#: Every key's name, in declaration order.
KEYS: Final = tuple(key.name for key in _CONFIG_KEYS)
_TYPES: Final = {key.name: key.type for key in _CONFIG_KEYS}

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _from_text(key: str, text: str, origin: str) -> Any:
    """Parse a string setting (environment or flag) into the key's type."""
    kind = _TYPES[key]
    stripped = text.strip()
    if kind == "int":
        try:
            return int(stripped.replace("_", ""))
        except ValueError:
            raise _error(key, f"must be an integer (got {text!r})", origin) from None
    if kind == "float":
        try:
            return float(stripped)
        except ValueError:
            raise _error(key, f"must be a number (got {text!r})", origin) from None
    if kind == "bool":
        lowered = stripped.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise _error(key, f"must be true or false (got {text!r})", origin)
    if key == "cluster":
        return [url for url in (part.strip() for part in stripped.split(",")) if url]
    return stripped


def _from_toml(key: str, value: Any, origin: str) -> Any:
    """Check a TOML value's type for ``key`` (TOML is typed, so no parsing)."""
    kind = _TYPES[key]
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        want = "an integer"
    elif kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        want = "a number"
    elif kind == "bool":
        ok = isinstance(value, bool)
        want = "true or false"
    elif key == "cluster":
        if isinstance(value, str):  # also accept "url,url" as the environment does
            return _from_text(key, value, origin)
        ok = isinstance(value, list) and all(isinstance(url, str) for url in value)
        want = "a list of peer URL strings"
    else:
        ok = isinstance(value, str)
        want = "a string"
    if not ok:
        raise _error(key, f"must be {want} (got {value!r})", origin)
    return value


def _read_toml(path: Path, origin: str) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"raftdb: config file {str(path)!r} ({origin}) cannot be read: {reason}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"raftdb: config file {str(path)!r} is not valid TOML: {exc}") from None
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _TYPES:
            hint = difflib.get_close_matches(key, KEYS, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(
                f"raftdb: unknown config key {key!r} in {str(path)!r}{suggestion} "
                f"(known: {', '.join(KEYS)})",
                key,
            )
        settings[key] = _from_toml(key, value, f"from {path}")
    return settings


def load_config(
    flags: Mapping[str, object | None] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    check_plugins: bool = True,
) -> NodeConfig:
    """Build the configuration: TOML file < ``RAFTDB_*`` environment < ``flags``.

    Args:
        flags: settings from the command line, by key; ``None`` values are
            "not given". Strings are parsed like environment values; other
            values are used as they are.
        environ: the environment (default ``os.environ``).
        config_file: the TOML file; default ``environ["RAFTDB_CONFIG"]``, if set.
        check_plugins: also check that the plugin names load (see
            :meth:`NodeConfig.check_plugins`).

    Returns:
        The checked configuration.

    Raises:
        ConfigError: one line naming the wrong key (or file) and why.
    """
    env = os.environ if environ is None else environ
    settings: dict[str, Any] = {}
    origins: dict[str, str] = {}

    path_text = os.fspath(config_file) if config_file is not None else env.get(CONFIG_ENV, "")
    if path_text:
        origin = "from --config" if config_file is not None else f"from {CONFIG_ENV}"
        path = Path(path_text)
        for key, value in _read_toml(path, origin).items():
            settings[key] = value
            origins[key] = f"from {path}"

    for key in KEYS:
        text = env.get(env_name(key), "")
        if text.strip():
            origin = f"from {env_name(key)}"
            settings[key] = _from_text(key, text, origin)
            origins[key] = origin

    for key, value in (flags or {}).items():
        if key not in _TYPES:
            raise ConfigError(f"raftdb: unknown config key {key!r}", key)
        if value is None:
            continue
        origin = f"from {flag_name(key)}"
        settings[key] = _from_text(key, value, origin) if isinstance(value, str) else value
        origins[key] = origin

    if "id" not in settings:
        raise _error(
            "id", f"is required: set it in the config file, {env_name('id')} or {flag_name('id')}"
        )
    try:
        config = NodeConfig(**settings)
        if check_plugins:
            config.check_plugins()
    except ConfigError as exc:
        if exc.why and exc.key in origins:
            raise _error(exc.key, exc.why, origins[exc.key]) from None
        raise
    return config


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """``RAFTDB_*`` variables that name no key (likely typos), sorted."""
    env = os.environ if environ is None else environ
    known = {env_name(key) for key in KEYS} | {CONFIG_ENV} | CLIENT_ENVIRONMENT
    return sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in known)
