"""The configuration reference page, from :func:`raftdb.config.config_keys`.

``NodeConfig``'s fields are the one source of every key's type, default, help,
environment variable and flag (the CLI's ``--help`` reads the same metadata), so
this page cannot drift from the code. ``docs/configuration.md`` is the guide.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftdb.config import CONFIG_ENV, ConfigKey, config_keys
from refpages.md import cell, code, table, text

__all__ = ["PATH", "page"]

#: Where the page is in the site.
PATH = "reference/configuration.md"

_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def _size(value: int) -> str:
    """A byte count as people read it (``1 MiB``, ``1.5 MiB``), or ``""`` when small."""
    for unit, size in _UNITS:
        if value >= size:
            return f"{value / size:g} {unit}"
    return ""


def _default(key: ConfigKey) -> str:
    if key.required:
        return "**required**"
    shown = code(key.default_text)
    if key.name.endswith("_bytes") and isinstance(key.default, int) and _size(key.default):
        shown += f" ({_size(key.default)})"
    return shown


def _flag(key: ConfigKey) -> str:
    if key.is_bool:
        return f"{code(key.flag)} / {code('--no-' + key.flag[2:])}"
    return code(f"{key.flag} {key.metavar}".strip())


def _row(key: ConfigKey) -> list[str]:
    # Four columns, not six: a reference table wider than the page scrolls sideways.
    return [
        f"{code(key.name)}{{ #{key.name} }}<br><small>{code(key.type)}</small>",
        _default(key),
        f"{code(key.env)}<br>{_flag(key)}",
        cell(text(key.help)),
    ]


def page(keys: Sequence[ConfigKey] | None = None) -> str:
    """The page's Markdown: one row per key, each with an anchor named after the key."""
    keys = config_keys() if keys is None else keys
    header = ["key and type", "default", "environment variable and flag", "what it is"]
    return "\n".join(
        [
            "# Configuration reference",
            "",
            "Every key a node takes, generated when the site is built from the fields of "
            "`raftdb.config.NodeConfig` (the same metadata `raftdb serve --help` prints). "
            "The [configuration guide](../configuration.md) says where settings come from, "
            "how they combine and what each key is for in more words.",
            "",
            f"A key is set in a TOML file (`key = value`, the file named by {code(CONFIG_ENV)} "
            "or `--config`), by its environment variable, or by its flag, each overriding the "
            "one before. Each key's row has an anchor named after it: "
            "`reference/configuration.md#sync`.",
            "",
            f"{len(keys)} keys, in the order `NodeConfig` declares them:",
            "",
            table(header, (_row(key) for key in keys)),
            "Booleans in the environment and flags read `true`/`false`, `1`/`0`, `yes`/`no` "
            "or `on`/`off`; integers may hold `_` separators. A list (`cluster`) is "
            "comma-separated in the environment and flags, a TOML list (or one "
            "comma-separated string) in the file.",
            "",
        ]
    )
