"""What every client command of ``raftdb`` shares: its settings, its client, its output,
and what its exit status means.

The client commands (``put``, ``get``, ``status``, ``snapshot save`` …) talk to a
cluster through :class:`raftdb.client.Client`. Their settings come, each one
from the first source that has it, from a flag, a ``RAFTDB_*`` variable, the
client's TOML file, or the default (etcdctl's ``--endpoints`` /
``ETCDCTL_ENDPOINTS``, with a file as well):

=============  ======================  ===================  ====================
flag           environment             file key             default
=============  ======================  ===================  ====================
--endpoints    RAFTDB_ENDPOINTS        endpoints            http://127.0.0.1:12380
--token        RAFTDB_TOKEN            token                none
--cacert       RAFTDB_CACERT           cacert               the system's CAs
--cert/--key   RAFTDB_CERT/_KEY        cert / key           none
--output, -w   RAFTDB_OUTPUT           output               table
--timeout      RAFTDB_TIMEOUT          timeout              10 (seconds)
=============  ======================  ===================  ====================

The file is ``--client-config FILE``, else ``$RAFTDB_CLIENT_CONFIG``, else
``~/.config/raftdb/client.toml`` when it exists. The flags are accepted before
or after the command's name (``raftdb --endpoints URL get k`` and
``raftdb get k --endpoints URL``), as etcdctl's.

Every failure is one line on stderr, ``raftdb: <what>: <why>``, and an exit
status a script can branch on (:class:`Exit`, docs/cli.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Final, Literal, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from raftdb.client import (
    BadRequestError,
    Client,
    ConditionFailedError,
    EndpointsUnavailableError,
    ForbiddenError,
    HttpsRequiredError,
    LeaseNotFoundError,
    LockNotHeldError,
    MemberNotFoundError,
    NotFoundError,
    NotReadyError,
    OutcomeUnknownError,
    RaftdbError,
    ReservedPathError,
    TooLargeError,
    TooManyOperationsError,
    TooManyRequestsError,
    UnauthorizedError,
    UnavailableError,
)
from raftdb.config import CLIENT_ENVIRONMENT

__all__ = [
    "CLIENT_CONFIG_ENV",
    "CLIENT_ENVIRONMENT",
    "DEFAULT_ENDPOINT",
    "DEFAULT_TIMEOUT",
    "ClientSettings",
    "CommandError",
    "Context",
    "Exit",
    "Output",
    "add_client_flags",
    "client_command",
    "exit_for",
    "load_settings",
    "render_table",
]

DEFAULT_ENDPOINT: Final = "http://127.0.0.1:12380"
#: Seconds a command's calls may take in all (every attempt and failover).
DEFAULT_TIMEOUT: Final = 10.0
CLIENT_CONFIG_ENV: Final = "RAFTDB_CLIENT_CONFIG"
_DEFAULT_FILE: Final = Path("~/.config/raftdb/client.toml")
#: setting -> its environment variable.
_ENV: Final = {
    "endpoints": "RAFTDB_ENDPOINTS",
    "token": "RAFTDB_TOKEN",
    "cacert": "RAFTDB_CACERT",
    "cert": "RAFTDB_CERT",
    "key": "RAFTDB_KEY",
    "output": "RAFTDB_OUTPUT",
    "timeout": "RAFTDB_TIMEOUT",
}
assert {*_ENV.values(), CLIENT_CONFIG_ENV} == CLIENT_ENVIRONMENT, "config.py lists them too"
OutputMode = Literal["table", "json"]


class Exit(IntEnum):
    """The exit status of a client command (docs/cli.md lists them for scripts)."""

    OK = 0
    #: The request failed for a reason not below (an internal error, a full disk …).
    FAILED = 1
    #: Bad flags or input: argparse's own status, and a ``400`` of the API.
    USAGE = 2
    #: The key, lease, member or lock does not exist.
    NOT_FOUND = 3
    #: A condition did not hold: ``--if-match``/``--create-only``, or a
    #: transaction's compares (its ``failure`` branch ran). Nothing else changed.
    CONDITION_FAILED = 4
    #: The outcome is unknown: the write may or may not have been applied.
    OUTCOME_UNKNOWN = 5
    #: No endpoint answered, or no leader or quorum for the whole call; nothing was done.
    UNAVAILABLE = 6
    #: The token is missing or not allowed this request (``401``/``403``).
    DENIED = 7


_EXIT_OF: Final[tuple[tuple[type[RaftdbError], Exit], ...]] = (
    (OutcomeUnknownError, Exit.OUTCOME_UNKNOWN),
    (ConditionFailedError, Exit.CONDITION_FAILED),
    (LeaseNotFoundError, Exit.NOT_FOUND),
    (LockNotHeldError, Exit.NOT_FOUND),
    (MemberNotFoundError, Exit.NOT_FOUND),
    (NotFoundError, Exit.NOT_FOUND),
    (EndpointsUnavailableError, Exit.UNAVAILABLE),
    (UnavailableError, Exit.UNAVAILABLE),
    (NotReadyError, Exit.UNAVAILABLE),
    (TooManyRequestsError, Exit.UNAVAILABLE),
    (UnauthorizedError, Exit.DENIED),
    (ForbiddenError, Exit.DENIED),
    (BadRequestError, Exit.USAGE),
    (ReservedPathError, Exit.USAGE),
    (HttpsRequiredError, Exit.USAGE),
    (TooLargeError, Exit.USAGE),
    (TooManyOperationsError, Exit.USAGE),
)


def exit_for(error: RaftdbError) -> Exit:
    """The exit status for an error the client raised."""
    for kind, status in _EXIT_OF:
        if isinstance(error, kind):
            return status
    return Exit.FAILED


class CommandError(Exception):
    """A command's own failure (a bad file, a missing key): one line and ``status``."""

    def __init__(self, message: str, status: Exit = Exit.FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Where and how a client command talks to the cluster (see the module docstring)."""

    endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    token: str | None = None
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    output: OutputMode = "table"
    timeout: float = DEFAULT_TIMEOUT

    def client(self) -> Client:
        """A :class:`~raftdb.client.Client` with these settings (close it when done)."""
        return Client(
            list(self.endpoints),
            timeout=self.timeout,
            token=self.token,
            ca_file=self.cacert,
            cert_file=self.cert,
            key_file=self.key,
        )


def add_client_flags(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """The client flags, on the ``raftdb`` parser (``top``) and on each client command.

    On a command they default to "not given" (``SUPPRESS``), so a flag given
    before the command's name is not reset by the command's parser.
    """
    none: Any = None if top else argparse.SUPPRESS
    group = parser.add_argument_group("connection", "each overrides its RAFTDB_* variable")
    group.add_argument(
        "--endpoints",
        metavar="URLS",
        default=none,
        help=f"comma-separated API URLs of members (default {DEFAULT_ENDPOINT}) [RAFTDB_ENDPOINTS]",
    )
    group.add_argument("--token", metavar="TOKEN", default=none, help="bearer token [RAFTDB_TOKEN]")
    group.add_argument(
        "--cacert", metavar="FILE", default=none, help="CA bundle for https:// [RAFTDB_CACERT]"
    )
    group.add_argument(
        "--cert", metavar="FILE", default=none, help="client certificate [RAFTDB_CERT]"
    )
    group.add_argument(
        "--key", metavar="FILE", default=none, help="the client certificate's key [RAFTDB_KEY]"
    )
    group.add_argument(
        "-w",
        "--output",
        choices=["table", "json"],
        default=none,
        help="table (for people, the default) or json (one object per line) [RAFTDB_OUTPUT]",
    )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        default=none,
        help=f"longest a call may take, failovers included (default {DEFAULT_TIMEOUT:g}) "
        "[RAFTDB_TIMEOUT]",
    )
    group.add_argument(
        "--client-config",
        metavar="FILE",
        default=none,
        help=f"TOML file with these settings [{CLIENT_CONFIG_ENV}; "
        f"default {_DEFAULT_FILE} when it exists]",
    )


def load_settings(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> ClientSettings:
    """The settings the flags, ``RAFTDB_*`` and the TOML file add up to.

    Raises:
        CommandError: a setting is invalid (status :attr:`Exit.USAGE`), naming its source.
    """
    env = os.environ if environ is None else environ
    path_text = getattr(args, "client_config", None) or env.get(CLIENT_CONFIG_ENV)
    from_file: dict[str, Any] = {}
    if path_text:
        from_file = _read_file(Path(path_text), required=True)
    else:
        from_file = _read_file(_DEFAULT_FILE.expanduser(), required=False)
    values: dict[str, tuple[Any, str]] = {}
    for name, var in _ENV.items():
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = (flag, f"--{name}")
        elif env.get(var):
            values[name] = (env[var], var)
        elif name in from_file:
            values[name] = (from_file[name], f"{name} in the client config file")
    return _settings(values)


def _read_file(path: Path, *, required: bool) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise CommandError(f"client config file {path} does not exist", Exit.USAGE) from None
        return {}
    except OSError as e:
        raise CommandError(f"cannot read client config file {path}: {e}", Exit.USAGE) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CommandError(f"client config file {path}: {e}", Exit.USAGE) from None
    unknown = sorted(set(data) - set(_ENV))
    if unknown:
        raise CommandError(
            f"client config file {path}: unknown setting {unknown[0]!r} (known: {', '.join(_ENV)})",
            Exit.USAGE,
        )
    return data


def _settings(values: Mapping[str, tuple[Any, str]]) -> ClientSettings:
    def bad(name: str, why: str) -> CommandError:
        return CommandError(f"{values[name][1]}: {why}", Exit.USAGE)

    out: dict[str, Any] = {}
    if "endpoints" in values:
        raw = values["endpoints"][0]
        items = raw if isinstance(raw, list) else str(raw).split(",")
        endpoints = tuple(str(e).strip().rstrip("/") for e in items if str(e).strip())
        if not endpoints:
            raise bad("endpoints", "no endpoint given")
        for e in endpoints:
            if not e.startswith(("http://", "https://")):
                raise bad("endpoints", f"{e!r} is not an http:// or https:// URL")
        out["endpoints"] = endpoints
    for name in ("token", "cacert", "cert", "key"):
        if name in values:
            text = values[name][0]
            if not isinstance(text, str) or not text:
                raise bad(name, "must be a non-empty string")
            out[name] = text
    if "output" in values:
        mode = values["output"][0]
        if mode not in ("table", "json"):
            raise bad("output", f"must be table or json, got {mode!r}")
        out["output"] = mode
    if "timeout" in values:
        try:
            timeout = float(values["timeout"][0])
        except (TypeError, ValueError):
            raise bad(
                "timeout", f"must be a number of seconds, got {values['timeout'][0]!r}"
            ) from None
        if not timeout > 0:
            raise bad("timeout", f"must be positive, got {timeout:g}")
        out["timeout"] = timeout
    if "key" in out and "cert" not in out:
        raise bad("key", "a client key needs its certificate (--cert)")
    return ClientSettings(**out)


#: The width of a table written to a pipe or a file (as wide as its rows need).
_PIPED_WIDTH: Final = 1000


@dataclass
class Output:
    """Where a command writes: results to stdout (a rich table, or JSON lines with
    ``json``), messages and progress bars to stderr."""

    mode: OutputMode = "table"
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)

    def __post_init__(self) -> None:
        self.console = Console(file=self.stdout, highlight=False, soft_wrap=True)
        if not self.console.is_terminal and "COLUMNS" not in os.environ:
            # Piped into a file or a pager, a table keeps its rows whole: rich would
            # otherwise wrap it to 80 columns (COLUMNS still rules when it is set).
            self.console.width = _PIPED_WIDTH
        self.err = Console(file=self.stderr, highlight=False, soft_wrap=True)

    @property
    def json(self) -> bool:
        """Whether results are JSON."""
        return self.mode == "json"

    def data(self, value: Any) -> None:
        """One JSON value on a line of its own (``--output json``)."""
        self.stdout.write(json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n")
        self.stdout.flush()

    def text(self, line: str) -> None:
        """One line of plain text on stdout, as is (no markup)."""
        self.stdout.write(line + "\n")
        self.stdout.flush()

    def raw(self, data: bytes) -> None:
        """Bytes on stdout, as they are (a value printed by ``get``)."""
        buffer = getattr(self.stdout, "buffer", None)
        if buffer is not None:
            self.stdout.flush()
            buffer.write(data)
            buffer.flush()
        else:
            self.stdout.write(data.decode("utf-8", errors="replace"))

    def table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        title: str | None = None,
        records: Any = None,
    ) -> None:
        """Rows as a table, or with ``json`` ``records`` (default: one object per row)."""
        if self.json:
            if records is None:
                records = [dict(zip(columns, row, strict=True)) for row in rows]
            self.data(records)
            return
        self.console.print(render_table(columns, rows, title=title))

    def note(self, message: str) -> None:
        """A message for the person at the terminal (stderr, so stdout stays data)."""
        self.err.print(message, markup=False)

    @contextmanager
    def progress(
        self, description: str, total: float | None, *, bytes_: bool = False
    ) -> Iterator[Callable[[float], None]]:
        """A progress bar on stderr; yields ``advance(amount)``. ``bytes_``: the
        amounts are bytes (shown as sizes and a transfer rate); else a count."""
        columns: list[Any] = [TextColumn("{task.description}"), BarColumn()]
        if bytes_:
            columns += [DownloadColumn(), TransferSpeedColumn()]
        else:
            columns += [MofNCompleteColumn(), TaskProgressColumn()]
        columns += [TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=self.err, transient=False) as bar:
            task = bar.add_task(description, total=total)
            yield lambda amount: bar.advance(task, amount)


def render_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None
) -> Table:
    """The rich table :meth:`Output.table` prints (a caller that refreshes a table in
    place, such as ``status --watch``, renders it itself)."""
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        # Text, not str: a cell is data (a key may hold "[b]"), never rich markup.
        table.add_row(*(Text("" if v is None else str(v)) for v in row))
    return table


@dataclass
class Context:
    """What a client command's handler gets: its arguments, settings and output,
    and a client made on first use (closed by :func:`client_command`)."""

    args: argparse.Namespace
    settings: ClientSettings
    out: Output
    _client: Client | None = None

    @property
    def client(self) -> Client:
        """The command's :class:`~raftdb.client.Client`."""
        if self._client is None:
            self._client = self.settings.client()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


Handler = Callable[[Context], "Exit | int | None"]


def client_command(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """Wrap a client command's handler: settings, output, one-line errors, exit status.

    ``handler(ctx)`` returns an exit status (``None``: :attr:`Exit.OK`) or
    raises: a :class:`~raftdb.client.RaftdbError` is ``raftdb: <code>: <message>``
    and :func:`exit_for`'s status; a :class:`CommandError` its own; an
    ``OSError`` (a file) :attr:`Exit.FAILED`; Ctrl-C 130.
    """

    def run(args: argparse.Namespace) -> int:
        err = sys.stderr
        try:
            settings = load_settings(args)
        except CommandError as e:
            print(f"raftdb: {e.message}", file=err)
            return int(e.status)
        ctx = Context(args, settings, Output(settings.output))
        try:
            status = handler(ctx)
        except RaftdbError as e:
            # The client's messages start with the code already; say it once.
            message = e.message.removeprefix(f"{e.code}: ")
            print(f"raftdb: {e.code}: {_one_line(message)}", file=err)
            return int(exit_for(e))
        except CommandError as e:
            print(f"raftdb: {_one_line(e.message)}", file=err)
            return int(e.status)
        except OSError as e:
            print(f"raftdb: {_one_line(str(e))}", file=err)
            return int(Exit.FAILED)
        except KeyboardInterrupt:
            return 130
        finally:
            ctx.close()
        return int(Exit.OK if status is None else status)

    run.__doc__ = handler.__doc__
    return run


def _one_line(text: str) -> str:
    return " ".join(text.split())
