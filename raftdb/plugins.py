"""Finding Storage and StateMachine plugins by name.

A plugin is a factory: a class or function called as ``factory(path,
sync=True)``, ``path`` being a directory the plugin owns and ``sync`` whether
its writes reach stable storage before they are acknowledged. It is named in
one of three ways (as uvicorn names its protocol implementations):

- an entry-point name in the group ``raftdb.storage`` or
  ``raftdb.state_machine`` (``memory``, ``leveldb``, ``sqlite``, or any
  installed package's), registered in that package's ``pyproject.toml``;
- ``"package.module:attr"`` (``attr`` may be dotted);
- the factory object itself.

A state machine factory may also take ``watch_history`` (how many changes its
watch history retains, the node's ``watch_history`` key); the node passes it
when the factory does (see :func:`open_state_machine`).

An unknown name fails at start with one line that lists the known names.
Plugins are loaded at start, once: the node never imports at request time.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from raftdb.kv.changes import DEFAULT_WATCH_HISTORY
from raftdb.kv.state_machine import StateMachine
from raftdb.raft.errors import RaftError
from raftdb.storage.protocol import Storage

__all__ = [
    "STATE_MACHINE_GROUP",
    "STORAGE_GROUP",
    "PluginError",
    "StateMachineFactory",
    "StorageFactory",
    "known_plugins",
    "load_state_machine",
    "load_storage",
    "open_state_machine",
    "open_storage",
    "plugin_reference",
]

STORAGE_GROUP: Final = "raftdb.storage"
STATE_MACHINE_GROUP: Final = "raftdb.state_machine"
Group = Literal["raftdb.storage", "raftdb.state_machine"]
_KIND = {STORAGE_GROUP: "storage", STATE_MACHINE_GROUP: "state machine"}


class PluginError(RaftError):
    """A plugin could not be found, loaded or made; the message says which and why."""


class StorageFactory(Protocol):
    """Makes a :class:`~raftdb.storage.protocol.Storage` over the directory ``path``."""

    def __call__(self, path: Path, *, sync: bool = True) -> Storage: ...


class StateMachineFactory(Protocol):
    """Makes a :class:`~raftdb.state_machine.StateMachine` over the directory ``path``."""

    def __call__(self, path: Path, *, sync: bool = True) -> StateMachine: ...


def _entry_points(group: Group) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def known_plugins(group: Group) -> list[str]:
    """The entry-point names installed in ``group``, sorted."""
    return sorted(_entry_points(group))


def _import(reference: str, group: Group) -> Any:
    module_name, _, attrs = reference.partition(":")
    kind = _KIND[group]
    if not module_name or not attrs:
        raise PluginError(f"{kind} plugin {reference!r}: expected 'package.module:attr'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(
            f"{kind} plugin {reference!r}: cannot import {module_name}: {exc}"
        ) from exc
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise PluginError(
                f"{kind} plugin {reference!r}: {module_name} has no attribute {attrs}"
            ) from None
    return obj


def _load(name: str | Callable[..., Any], group: Group) -> Callable[..., Any]:
    kind = _KIND[group]
    if callable(name):
        return name
    if ":" in name:
        obj = _import(name, group)
    else:
        found = _entry_points(group)
        if name not in found:
            known = ", ".join(sorted(found)) or "none installed"
            raise PluginError(
                f"unknown {kind} plugin {name!r}; known: {known} (or give 'package.module:attr')"
            )
        try:
            obj = found[name].load()
        except Exception as exc:  # a broken plugin package fails in many ways
            raise PluginError(f"{kind} plugin {name!r} failed to load: {exc}") from exc
    if not callable(obj):
        raise PluginError(f"{kind} plugin {name!r} is {type(obj).__name__}, not a factory")
    factory: Callable[..., Any] = obj
    return factory


def load_storage(name: str | StorageFactory) -> StorageFactory:
    """The storage factory ``name`` refers to (see the module docstring).

    Raises:
        PluginError: unknown name, import failure, or not callable.
    """
    factory: StorageFactory = _load(name, STORAGE_GROUP)
    return factory


def load_state_machine(name: str | StateMachineFactory) -> StateMachineFactory:
    """The state machine factory ``name`` refers to (see the module docstring).

    Raises:
        PluginError: unknown name, import failure, or not callable.
    """
    factory: StateMachineFactory = _load(name, STATE_MACHINE_GROUP)
    return factory


def _missing(obj: object, protocol: type) -> list[str]:
    wanted = [name for name in dir(protocol) if not name.startswith("_")]
    return [name for name in wanted if not hasattr(obj, name)]


def open_storage(name: str | StorageFactory, path: Path, *, sync: bool = True) -> Storage:
    """Load the plugin ``name`` and open a storage over ``path``.

    Raises:
        PluginError: the plugin cannot be loaded, or what it made is not a Storage.
        CorruptionError, OSError: from the plugin, about what is on disk.
    """
    storage: object = load_storage(name)(Path(path), sync=sync)
    if not isinstance(storage, Storage):
        missing = ", ".join(_missing(storage, Storage))
        raise PluginError(
            f"storage plugin {name!r} made a {type(storage).__name__} without {missing}"
        )
    return storage


def open_state_machine(
    name: str | StateMachineFactory,
    path: Path,
    *,
    sync: bool = True,
    watch_history: int | None = None,
) -> StateMachine:
    """Load the plugin ``name`` and open a state machine over ``path``.

    Args:
        name: the plugin (see the module docstring).
        path: the directory it owns.
        sync: whether its writes are durable before they are acknowledged.
        watch_history: how many changes its watch history retains (the
            ``watch_history`` key), passed as the factory's ``watch_history``
            keyword; ``None`` leaves the plugin's default. A factory without
            that keyword (a plugin older than watches) is called without it
            when the value is the default, :data:`DEFAULT_WATCH_HISTORY`,
            which is what its Applier keeps anyway; any other value is refused,
            rather than silently not applied.

    Raises:
        PluginError: the plugin cannot be loaded, what it made is not a
            StateMachine, or it cannot take a ``watch_history`` other than the default.
        CorruptionError, OSError: from the plugin, about what is on disk.
    """
    factory = load_state_machine(name)
    kwargs: dict[str, Any] = {"sync": sync}
    if watch_history is not None:
        if _takes_keyword(factory, "watch_history"):
            kwargs["watch_history"] = watch_history
        elif watch_history != DEFAULT_WATCH_HISTORY:
            raise PluginError(
                f"state machine plugin {name!r} takes no watch_history, so it cannot keep "
                f"{watch_history} changes: leave watch_history at {DEFAULT_WATCH_HISTORY} "
                "or use a plugin that takes it"
            )
    machine: object = factory(Path(path), **kwargs)
    if not isinstance(machine, StateMachine):
        missing = ", ".join(_missing(machine, StateMachine))
        raise PluginError(
            f"state machine plugin {name!r} made a {type(machine).__name__} without {missing}"
        )
    return machine


def _takes_keyword(factory: Callable[..., Any], name: str) -> bool:
    """Whether ``factory`` accepts the keyword argument ``name`` (or any, ``**kwargs``)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): assume not
        return False
    return any(
        (p.name == name and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        or p.kind == p.VAR_KEYWORD
        for p in parameters
    )


def plugin_reference(factory: Callable[..., Any]) -> str | None:
    """``"module:qualname"`` that imports back to ``factory``, or ``None``.

    Crash tests use it to rebuild a plugin in a child process. Lambdas,
    closures and ``functools.partial`` objects have no such reference.
    """
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    reference = f"{module}:{qualname}"
    try:
        found = _import(reference, STORAGE_GROUP)
    except PluginError:
        return None
    return reference if found is factory else None
