"""The servers' lifecycle, told to whoever listens: the status line, the culler, usage history,
the admin page and the metrics subscribe here instead of the spawner calling each of them.

Listeners are plain callables run on the event loop, in order of subscription; one that
raises is logged and the others still hear the event. A listener that needs to do I/O starts
its own task.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

log = logging.getLogger(__name__)


class Kind(StrEnum):
    """What happened to a server."""

    STARTED = "started"  # its spawn began (queued or launching)
    READY = "ready"      # it answers; requests are relayed
    STOPPED = "stopped"  # it is gone, for the cause given
    OOM = "oom"          # the kernel's OOM killer ended a process in it (it lives on)


class Cause(StrEnum):
    """Why a server stopped, as usage history and the admin page say it."""

    USER = "user"
    ADMIN = "admin"
    CULLER = "culler"
    ACCOUNT = "account"  # the account was locked, expired or is no longer allowed
    OOM = "oom"
    CRASH = "crash"      # it exited or was killed on its own
    FAILED = "failed"    # it never became ready
    HUB = "hub"          # it ended while the hub was down


@dataclass(frozen=True)
class Event:
    """One lifecycle event of one server (the live Server object: read it, don't keep it)."""

    kind: Kind
    server: object
    cause: Cause | None = None
    reason: str = ""
    at: float = field(default_factory=time.time)


class Events:
    """The hub-wide fan-out."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[Event], None]] = []

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call listener with every later event; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def emit(self, event: Event) -> None:
        """Tell every listener."""
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("a listener failed on %s of %s", event.kind,
                              getattr(event.server, "label", "?"))
