"""Connection floods: a deadline for a connection's request headers, a cap per client address.

aiohttp has no timer for a connection that never completes its first request's headers (a
silent or slowloris connection held one descriptor for ever: 1,100 of them made the hub
unreachable). Its keepalive_timeout covers the time after an answer (serve() sets it to the
same hub.header_timeout; aiohttp 3.11's own default is an hour). A ConnectionGuard stands
between each accepted transport and aiohttp's protocol, starts that timer, and counts
connections per client address.
"""

import asyncio
import ipaddress
import logging
from collections import Counter
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger(__name__)

#: At most one log line per address and reason this often, and then one with the count.
LOG_EVERY = 60.0


def address_key(host: str) -> str:
    """Whose connection it is: its IP; every loopback address (a local user may send from
    any of 127.0.0.0/8) as one, and an IPv6 /64 (one host's usual share) as one."""
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class ConnectionGuard:
    """Closes connections that send no request headers in time and caps them per address."""

    def __init__(self, header_timeout: float, max_per_address: int) -> None:
        self.header_timeout = header_timeout
        self.max_per_address = max_per_address
        self.open: Counter[str] = Counter()
        self.deadlines: dict[asyncio.BaseTransport, asyncio.TimerHandle] = {}
        #: (address, what) logged in the last LOG_EVERY seconds -> how often since.
        self.quiet: dict[tuple[str, str], int] = {}

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for loop.create_server that guards inner's protocols."""
        return lambda: _Guarded(self, inner())

    def admit(self, transport: asyncio.BaseTransport, key: str, host: str) -> bool:
        """Count a new connection and start its header timer; False if over the cap."""
        if self.open[key] >= self.max_per_address:
            self.note(key, host, f"connection closed at once: {self.max_per_address} already open "
                      "(hub.max_connections_per_address)")
            return False
        self.open[key] += 1
        loop = asyncio.get_running_loop()
        self.deadlines[transport] = loop.call_later(self.header_timeout, self.expire,
                                                    transport, key, host)
        return True

    def release(self, transport: asyncio.BaseTransport, key: str) -> None:
        """Forget a closed connection."""
        handle = self.deadlines.pop(transport, None)
        if handle is not None:
            handle.cancel()
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]

    def expire(self, transport: asyncio.BaseTransport, key: str, host: str) -> None:
        """Close a connection that sent no complete request headers in time."""
        self.deadlines.pop(transport, None)
        self.note(key, host, "connection closed: no request headers within "
                  f"{self.header_timeout:g}s (hub.header_timeout)")
        transport.close()

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        """The request's headers are in: its connection is no longer on the clock."""
        handle = self.deadlines.pop(request.transport, None)
        if handle is not None:
            handle.cancel()
        return await handler(request)

    def note(self, key: str, host: str, what: str) -> None:
        """Log what happened to an address once, and a minute later how often it happened
        since (a flood is millions of events, never millions of lines)."""
        if (key, what) in self.quiet:
            self.quiet[(key, what)] += 1
            return
        self.quiet[(key, what)] = 0
        label = host if host == key else f"{host} (as {key})"
        log.warning("client %s: %s", label, what)
        asyncio.get_running_loop().call_later(LOG_EVERY, self.summary, key, what, label)

    def summary(self, key: str, what: str, label: str) -> None:
        """How many more times it happened in the minute after its line."""
        count = self.quiet.pop((key, what), 0)
        if count:
            log.warning("client %s: %d more in the last %gs: %s", label, count, LOG_EVERY, what)


class _Guarded(asyncio.Protocol):
    """One connection's protocol: checks in with the guard, then passes everything to aiohttp."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.BaseTransport | None = None
        self.key = self.host = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        """Admit (aiohttp takes it over) or close at once, unread and unanswered."""
        peer = transport.get_extra_info("peername")
        self.host = str(peer[0] if isinstance(peer, tuple) and peer else peer or "")
        self.key = address_key(self.host)
        if not self.guard.admit(transport, self.key, self.host):
            transport.close()
            return
        self.transport = transport
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """Passed on, and counted."""
        if self.transport is not None:
            self.guard.release(self.transport, self.key)
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Passed on."""
        if self.transport is not None:
            self.inner.data_received(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        """Passed on."""
        return self.inner.eof_received() if self.transport is not None else None  # type: ignore

    def pause_writing(self) -> None:
        """Passed on: aiohttp's flow control."""
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        """Passed on: aiohttp's flow control."""
        self.inner.resume_writing()
