"""Login throttling: after a number of failures a key is locked out, for a time that doubles
up to a cap; a success forgets the key.

Pure bookkeeping with an injected clock (time.monotonic in the hub, a fake in the tests):
no I/O, no asyncio, so every rule here is unit-tested without waiting.
"""

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass
class _Entry:
    """What is known about one key: failures so far, attempts in flight, the lockout."""

    failures: int = 0
    pending: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class Throttle:
    """Counts failures per key; after max_failures, each failure locks the key for
    lockout * 2**(failures - max_failures) seconds, at most lockout_max.

    With count_pending, attempts still in flight count as failures until they end, so
    many at once cannot all slip past the limit before the first answer comes back.
    A key is forgotten lockout_max after its last failure or lockout ended.
    """

    #: Above this many keys, forgotten ones are swept out (bounded memory under a flood).
    SWEEP_ABOVE = 10_000

    def __init__(self, max_failures: int, lockout: float, lockout_max: float, *,
                 count_pending: bool, clock: Callable[[], float] = time.monotonic):
        self.max_failures = max_failures
        self.lockout = lockout
        self.lockout_max = lockout_max
        self.count_pending = count_pending
        self.clock = clock
        self._entries: dict[Hashable, _Entry] = {}

    def retry_after(self, key: Hashable) -> float:
        """Seconds before key may try again; 0 when it may try now."""
        entry = self._live(key)
        if entry is None:
            return 0.0
        now = self.clock()
        if entry.locked_until > now:
            return entry.locked_until - now
        in_flight = entry.pending if self.count_pending else 0
        if entry.failures >= self.max_failures:
            # Past the limit, one attempt at a time: its failure sets the next lockout.
            return self._next_lockout(entry.failures + 1) if in_flight else 0.0
        if entry.failures + in_flight >= self.max_failures:
            return self._next_lockout(self.max_failures)
        return 0.0

    def begin(self, key: Hashable) -> None:
        """An attempt for key starts (after retry_after said 0)."""
        self._entries.setdefault(key, _Entry()).pending += 1

    def failed(self, key: Hashable) -> None:
        """The attempt failed: count it, and lock the key once past the limit."""
        entry = self._end(key)
        now = self.clock()
        entry.failures += 1
        entry.last_failure = now
        if entry.failures >= self.max_failures:
            entry.locked_until = now + self._next_lockout(entry.failures)

    def succeeded(self, key: Hashable) -> None:
        """The attempt succeeded: forget everything about key."""
        self._entries.pop(key, None)

    def abandoned(self, key: Hashable) -> None:
        """The attempt ended without a verdict (e.g. the PAM queue was full)."""
        entry = self._end(key)
        if not entry.failures and not entry.pending:
            self._entries.pop(key, None)

    def _next_lockout(self, failures: int) -> float:
        """Lockout after the given failure count: doubling from lockout, capped."""
        doublings = min(failures - self.max_failures, 32)
        return min(self.lockout * 2 ** doublings, self.lockout_max)

    def _end(self, key: Hashable) -> _Entry:
        """The entry of an attempt that ends, with its in-flight count taken back."""
        entry = self._entries.setdefault(key, _Entry())
        entry.pending = max(entry.pending - 1, 0)
        return entry

    def _live(self, key: Hashable) -> _Entry | None:
        """key's entry, unless it is forgotten (then dropped, with a sweep when many)."""
        if len(self._entries) > self.SWEEP_ABOVE:
            self._sweep()
        entry = self._entries.get(key)
        if entry is not None and self._forgotten(entry):
            del self._entries[key]
            return None
        return entry

    def _forgotten(self, entry: _Entry) -> bool:
        """Nothing in flight, and lockout_max passed since the last failure or lockout."""
        quiet_since = max(entry.locked_until, entry.last_failure)
        return not entry.pending and quiet_since + self.lockout_max <= self.clock()

    def _sweep(self) -> None:
        """Drop every forgotten entry."""
        for key in [k for k, e in self._entries.items() if self._forgotten(e)]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


class LoginThrottle:
    """The two throttles of a login: per (client address, user name) and per address.

    A success forgets the (address, name) pair but not the address: otherwise an attacker
    with an account of their own could clear their address's count between guesses. The
    address throttle does not count attempts in flight, so a classroom behind one address
    may log in all at once; the PAM queue bounds how many guesses can be in flight.
    """

    def __init__(self, max_failures: int, max_failures_per_address: int, lockout: float,
                 lockout_max: float, clock: Callable[[], float] = time.monotonic):
        self.pairs = Throttle(max_failures, lockout, lockout_max, count_pending=True,
                              clock=clock)
        self.addresses = Throttle(max_failures_per_address, lockout, lockout_max,
                                  count_pending=False, clock=clock)

    def retry_after(self, address: str, name: str) -> float:
        """Seconds before this address may try this name again; 0 for now."""
        return max(self.pairs.retry_after((address, name)), self.addresses.retry_after(address))

    def begin(self, address: str, name: str) -> None:
        """An attempt starts."""
        self.pairs.begin((address, name))
        self.addresses.begin(address)

    def failed(self, address: str, name: str) -> None:
        """The attempt failed (wrong password, refused account)."""
        self.pairs.failed((address, name))
        self.addresses.failed(address)

    def succeeded(self, address: str, name: str) -> None:
        """The attempt logged in."""
        self.pairs.succeeded((address, name))
        self.addresses.abandoned(address)

    def abandoned(self, address: str, name: str) -> None:
        """The attempt ended without a verdict."""
        self.pairs.abandoned((address, name))
        self.addresses.abandoned(address)


def in_words(seconds: float) -> str:
    """A wait for people: 'a few seconds', '1 minute', '2 minutes', '15 minutes'."""
    if seconds < 50:
        return "a few seconds" if seconds < 10 else f"{round(seconds, -1):.0f} seconds"
    minutes = max(round(seconds / 60), 1)
    return "1 minute" if minutes == 1 else f"{minutes} minutes"
