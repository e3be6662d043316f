"""What the gateway learns from the rest of the process without importing it (no models: apps may load it early).

- Change listeners: the runtime reloads at once when an upstream changes in this process, rather
  than at its next poll.
- Reserved names: the local tools' names, which no upstream name may shadow (set by mcp_bridge).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

_listeners: list[Callable[[], None]] = []
_reserved: Callable[[], Iterable[str]] = lambda: ()  # noqa: E731


def listen(callback: Callable[[], None]) -> None:
    """Call ``callback`` (from any thread, so it must be thread-safe) whenever an upstream changes."""
    _listeners.append(callback)


def unlisten(callback: Callable[[], None]) -> None:
    if callback in _listeners:
        _listeners.remove(callback)


def announce() -> None:
    for callback in list(_listeners):
        callback()


def set_reserved_names(names: Callable[[], Iterable[str]]) -> None:
    global _reserved
    _reserved = names


def reserved_names() -> frozenset[str]:
    return frozenset(_reserved())
