"""A spawn's progress feed: JupyterHub-shaped events, and watchers that follow them.

The spawner and the queue emit; the progress API and the spawn page follow. A feed ends with
an event marked ready or failed, or when closed (the spawn was cancelled).
"""

import asyncio
from collections.abc import AsyncIterator


class Progress:
    """The events of one spawn so far, and a way to wait for the next."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.closed = False
        self._news = asyncio.Event()

    def restart(self) -> None:
        """Forget the last spawn's events: a new spawn begins."""
        self.events, self.closed = [], False

    def emit(self, progress: int, message: str, **extra) -> None:
        """Append an event ({"progress", "message", ...}) and wake the watchers."""
        self.events.append({"progress": progress, "message": message, **extra})
        self._wake()

    def close(self) -> None:
        """No more events for this spawn: watchers stop after what they have seen."""
        self.closed = True
        self._wake()

    @property
    def finished(self) -> bool:
        """True once the feed has its last event, or was closed."""
        return self.closed or bool(self.events and _is_last(self.events[-1]))

    async def follow(self) -> AsyncIterator[dict]:
        """Yield every event from the first, waiting for new ones, until the feed ends."""
        index = 0
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                yield event
                if _is_last(event):
                    return
            if self.closed:
                return
            await self._news.wait()

    def _wake(self) -> None:
        """Release everyone waiting; the next wait is on a fresh event."""
        self._news.set()
        self._news = asyncio.Event()


def _is_last(event: dict) -> bool:
    return bool(event.get("ready") or event.get("failed"))
