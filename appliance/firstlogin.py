"""Password changes under way: after PAM says a password has expired, the login form asks for
a new one. The current password waits here, in the hub's memory only, under a random id
that the change form carries: never in a page, a cookie or the store.
"""

import secrets
import time
from dataclasses import dataclass

#: How long the change form stays valid after the expired login.
TTL = 300.0
#: Tries (weak or mismatched new passwords) before the user must log in again.
MAX_TRIES = 5
#: Changes under way at once; the oldest is dropped past this (a flood cannot fill memory).
MAX_PENDING = 1000


@dataclass
class Pending:
    """A user who logged in with an expired password and has yet to choose a new one."""

    name: str
    current: str
    client: str
    expires: float
    tries: int = 0


class FirstLogins:
    """The pending password changes, by random id; each used at most MAX_TRIES times."""

    def __init__(self, clock=time.monotonic):
        self._pending: dict[str, Pending] = {}
        self._clock = clock

    def begin(self, name: str, current: str, client: str) -> str:
        """Keep the current password for a change; the id the form carries."""
        self._drop_expired()
        while len(self._pending) >= MAX_PENDING:
            self._pending.pop(next(iter(self._pending)))
        change_id = secrets.token_urlsafe(24)
        self._pending[change_id] = Pending(name, current, client, self._clock() + TTL)
        return change_id

    def take_turn(self, change_id: str, client: str) -> Pending | None:
        """The change for this id from this client, counting a try; None if unknown, expired,
        from another address or out of tries."""
        self._drop_expired()
        pending = self._pending.get(change_id)
        if pending is None or pending.client != client:
            return None
        pending.tries += 1
        if pending.tries > MAX_TRIES:
            self.finish(change_id)
            return None
        return pending

    def finish(self, change_id: str) -> None:
        """Forget a change (done, or given up)."""
        self._pending.pop(change_id, None)

    def _drop_expired(self) -> None:
        """Forget changes past their TTL."""
        now = self._clock()
        for change_id in [k for k, p in self._pending.items() if p.expires <= now]:
            del self._pending[change_id]
