"""The fair spawn queue: who starts next when a classroom presses Start in the same minute.

At most `slots` servers launch at once (a launch is CPU-bound: more at once only makes every
one of them slower); the rest wait in arrival order and are told their place. A start also
waits while the memory the servers hold, plus its own limit, would pass the cap (the servers'
slice's MemoryMax): by default what running servers use now ("usage"), or their limits
("limits"). In "usage", servers started since the last reading (their use is not in it yet)
count at what a running server has been seen to use, at most their limit: a classroom's
servers are alike, and counting each of the last starters of a burst at a full limit held a
tenth of a 220-student class back on a machine that had room for all of them. When memory
frees up, waiting starts go in order. A start that could never fit fails at once. Nobody is
refused for being the 101st.
"""

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from appliance.config import format_size
from appliance.errors import SpawnError

log = logging.getLogger(__name__)

#: Until launches have been timed, assume one takes this long (seconds) for the estimate.
FIRST_GUESS_SECONDS = 2.0
#: Weight of the newest launch time in the moving average.
SMOOTHING = 0.2

#: While the head of the line waits for memory, look at the memory again this often.
MEMORY_POLL_SECONDS = 1.0

#: Told to a waiting start whenever its place or reason changes: (position, words).
PlaceCallback = Callable[[int, str], None]


@dataclass(frozen=True)
class Memory:
    """What the servers may use together, and what the running ones use now (bytes).

    cap None: no cap. in_use None: count each running server at its limit instead.
    machine_wide: in_use is the whole machine's (the OS and the hub too), where the servers'
    own cannot be read; the queue then counts only what it grew by since no server ran.
    """

    cap: int | None
    in_use: int | None = None
    machine_wide: bool = False


#: Reads the memory picture afresh (capacity.py: the slice's MemoryMax and MemoryCurrent).
MemoryFunction = Callable[[], Awaitable[Memory]]


@dataclass(eq=False)
class Ticket:
    """One start waiting for its turn."""

    key: str
    memory: int
    tell: PlaceCallback
    admitted: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop()
                                     .create_future())
    told: tuple[int, str] = (0, "")


class SpawnQueue:
    """Launch slots and memory reservations, handed out first come, first served."""

    def __init__(self, slots: int, memory: MemoryFunction, cooldown: float = 0.0):
        self.slots = slots
        self._read_memory = memory
        self._memory = Memory(None)
        self._cooldown = cooldown
        self._launching: set[str] = set()
        #: Starting at or admitted since the last reading: their use is not in it yet.
        self._since_reading: set[str] = set()
        self._waiting: deque[Ticket] = deque()
        self._poller: asyncio.Task | None = None
        #: Memory held by each server from its admission until it stops (bytes).
        self.reserved: dict[str, int] = {}
        self._last_start: dict[str, float] = {}
        self._launch_seconds = FIRST_GUESS_SECONDS
        #: What one running server was seen to use at the last reading (bytes), if known.
        self._per_server: int | None = None
        #: The machine's use at the last reading with no server, for machine_wide pictures.
        self._without_servers = 0

    @property
    def waiting(self) -> int:
        """How many starts wait for their turn."""
        return len(self._waiting)

    async def enter(self, key: str, memory: int, tell: PlaceCallback) -> None:
        """Wait until this start may launch; SpawnError at once if it can never fit.

        The caller must call launched(key) when the launch ends and stopped(key) when the
        server stops. Cancelling the wait gives up the place (and anything already granted).
        """
        await self._read()
        cap = self._memory.cap
        if cap is not None and memory > cap:
            raise SpawnError(
                f"a server needs {format_size(memory)} but all servers together may use only "
                f"{format_size(cap)} (the slice's MemoryMax)",
                user_message=f"Your server needs {format_size(memory)} of memory, more than "
                             f"this machine gives all servers together ({format_size(cap)}). "
                             "Ask your administrator.")
        await self._cool_down(key, tell)
        ticket = Ticket(key, memory, tell)
        self._waiting.append(ticket)
        self._pump()
        try:
            await ticket.admitted
        except asyncio.CancelledError:
            self._give_up(ticket)
            raise
        self._last_start[key] = time.monotonic()

    def reserve(self, key: str, memory: int) -> None:
        """Hold memory for a server that runs without having queued (adopted after a restart)."""
        self.reserved[key] = memory

    def launched(self, key: str, seconds: float | None = None) -> None:
        """A launch ended (ready or failed): its slot goes to the next in line."""
        self._launching.discard(key)
        if seconds is not None:
            self._launch_seconds += SMOOTHING * (seconds - self._launch_seconds)
        self._pump()

    def stopped(self, key: str) -> None:
        """A server stopped: its memory is free for the next in line."""
        if self.reserved.pop(key, None) is not None:
            self._pump()

    # -- internals ---------------------------------------------------------------------------

    async def _cool_down(self, key: str, tell: PlaceCallback) -> None:
        """A server started again right after its last start waits out the cool-down first,
        so one person's start-stop loop cannot keep systemd and the journal busy."""
        last = self._last_start.get(key)
        wait = 0.0 if last is None else last + self._cooldown - time.monotonic()
        if wait > 0:
            tell(0, f"Your server was started a moment ago; starting again in "
                    f"{math.ceil(wait)} s")
            await asyncio.sleep(wait)

    def _pump(self) -> None:
        """Admit from the head of the line while a slot and the memory allow; tell the rest."""
        while self._waiting and len(self._launching) < self.slots:
            head = self._waiting[0]
            if head.admitted.done():  # cancelled: its task has not run _give_up yet
                self._waiting.popleft()
                continue
            if not self._fits(head.memory):
                self._poll_memory()
                break
            self._waiting.popleft()
            self._launching.add(head.key)
            self._since_reading.add(head.key)
            self.reserved[head.key] = head.memory
            head.admitted.set_result(None)
        for position, ticket in enumerate(self._waiting, start=1):
            self._tell(ticket, position)

    def held(self) -> int:
        """Memory counted as taken: running servers (their use, or their limits) and those
        still starting or admitted since the last reading (their use has not grown yet, or was
        not seen), each at what a running server uses, at most its limit."""
        if self._memory.in_use is None:
            return sum(self.reserved.values())
        unseen = self._launching | self._since_reading
        return self._servers_use() + sum(self._expected(k) for k in unseen)

    def _servers_use(self) -> int:
        """What the running servers use, from the last reading."""
        in_use = self._memory.in_use or 0
        return max(0, in_use - self._without_servers) if self._memory.machine_wide else in_use

    def _expected(self, key: str) -> int:
        """What a server not in the last reading will use: what the others use, at most its
        limit (its limit until one has been seen)."""
        limit = self.reserved.get(key, 0)
        return limit if self._per_server is None else min(limit, self._per_server)

    async def _read(self) -> None:
        """Read the memory picture afresh; servers still starting are not fully in it."""
        unseen = set(self._launching)
        held_before = set(self.reserved)
        self._memory = memory = await self._read_memory()
        if memory.machine_wide and not held_before and not self.reserved:
            self._without_servers = memory.in_use or 0
        self._since_reading = unseen | (self._since_reading & self._launching)
        seen = len(held_before - unseen)
        if memory.in_use is not None and seen:
            self._per_server = self._servers_use() // seen

    def _fits(self, memory: int) -> bool:
        """True if memory more fits under the cap beside what is held."""
        return self._memory.cap is None or self.held() + memory <= self._memory.cap

    def _poll_memory(self) -> None:
        """While the head waits for memory, read the memory again now and then (servers'
        use shrinks and grows on its own, without an event to tell us)."""
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._memory_poll(), name="spawnqueue-memory")

    async def _memory_poll(self) -> None:
        while self._waiting and len(self._launching) < self.slots:
            await asyncio.sleep(MEMORY_POLL_SECONDS)
            try:
                await self._read()
            except Exception:  # keep the last picture; the next poll tries again
                log.exception("reading the servers' memory failed")
            self._pump()

    def close(self) -> None:
        """Hub shutdown: stop polling."""
        if self._poller is not None:
            self._poller.cancel()

    def _tell(self, ticket: Ticket, position: int) -> None:
        """Tell a waiting start its place, and why it waits, when either changed."""
        if len(self._launching) < self.slots:  # a slot is free, so the head waits for memory
            memory = (f"{format_size(self.held())} of {format_size(self._memory.cap or 0)} in "
                      "use")
            words = (f"Waiting for memory: {memory}; you start as soon as enough is free"
                     if position == 1 else
                     f"You are {ordinal(position)} in line, waiting for memory ({memory})")
        else:
            rounds = math.ceil(position / max(self.slots, 1))
            words = (f"You are {ordinal(position)} in line; about "
                     f"{math.ceil(rounds * self._launch_seconds)} s")
        if ticket.told != (position, words):
            ticket.told = (position, words)
            ticket.tell(position, words)

    def _give_up(self, ticket: Ticket) -> None:
        """A cancelled start leaves the line, or returns what it was granted."""
        if ticket in self._waiting:
            self._waiting.remove(ticket)
        elif ticket.admitted.done():
            self._launching.discard(ticket.key)
            self.reserved.pop(ticket.key, None)
        self._pump()


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, ..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
