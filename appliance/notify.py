"""Talking to systemd as a Type=notify service: READY=1, STATUS= and watchdog pings.

The only module that imports sdnotify. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

import asyncio
import logging
import os

import sdnotify

log = logging.getLogger(__name__)


class Notifier:
    """sd_notify(3) messages for the hub's own unit."""

    def __init__(self) -> None:
        self._enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._sd = sdnotify.SystemdNotifier() if self._enabled else None

    def send(self, message: str) -> None:
        """Send one notification (no-op outside systemd)."""
        if self._sd is not None:
            self._sd.notify(message)

    def ready(self, status: str) -> None:
        """READY=1 with a first status line."""
        self.send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        """Update the line `systemctl status` shows."""
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        """STOPPING=1: shutdown has begun."""
        self.send("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """Half of WatchdogSec= in seconds (sd_watchdog_enabled(3)), or None if not asked."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and int(pid) != os.getpid()):
            return None
        return int(usec) / 2e6

    async def watchdog(self) -> None:
        """Ping WATCHDOG=1 from the event loop: a blocked loop misses pings and gets restarted."""
        interval = self.watchdog_interval()
        if interval is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval)
