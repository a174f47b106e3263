"""A user's notebook server as the hub reaches it: over its UNIX socket, with its token.

The proxy relays through an Upstream's pooled session; the spawner probes the same socket to
tell when a server is ready (it answers HTTP, not merely "the unit is active").
"""

import asyncio
import socket
from pathlib import Path

import aiohttp
from aiohttp import hdrs
from aiohttp.abc import AbstractResolver

from appliance.config import ProxyConfig, defaults
from appliance.framelimit import FrameLimit

#: How long a request waits for a free connection to its server before it fails (a 502 page):
#: aiohttp's connect timeout covers the wait for the pool (ClientTimeout docs).
POOL_WAIT = 30.0


class Upstream:
    """One user's notebook server reached over its UNIX socket; holds pooled ClientSessions."""

    def __init__(self, socket_path: str, token: str | None, proxy: ProxyConfig | None = None,
                 *, tcp: tuple[str, int] | None = None, label: str = "notebook server",
                 relay_authorization: bool = False):
        proxy = proxy or defaults().proxy
        self.socket_path = socket_path
        #: A loopback (address, port) instead of the socket (a service's url).
        self.tcp = tcp
        #: The hub's own requests (the culler's, the probe) carry it; None for a service.
        self.token = token
        #: Relayed requests carry the client's own Authorization instead of the token: a
        #: service, and jupyterhub-singleuser, check credentials with the hub themselves (and
        #: log browsers in through OAuth), as behind JupyterHub's proxy.
        self.relay_authorization = relay_authorization or token is None
        #: What it is, in log lines and error pages.
        self.label = label
        self.connections = proxy.upstream_connections
        #: proxy.max_message_size: the relay holds websocket messages to it both ways.
        self.max_message_size = proxy.max_message_size
        self._session: aiohttp.ClientSession | None = None
        self._ws_session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled session for HTTP, created on first use so it binds to the running loop."""
        if self._session is None:
            # Bounded (and ws_session too): one user's browsers cannot make the hub hold more
            # than this many descriptors toward their server; further requests wait for one.
            self._session = self._new_session(self._connector(limit=self.connections))
        return self._session

    @property
    def ws_session(self) -> aiohttp.ClientSession:
        """The session for kernel websockets: one fresh connection each, frames watched."""
        if self._ws_session is None:
            self._ws_session = self._new_session(self._connector(
                self.max_message_size, limit=self.connections, force_close=True))
        return self._ws_session

    @property
    def where(self) -> str:
        """Its address, for log lines: the socket's path or host:port."""
        return f"{self.tcp[0]}:{self.tcp[1]}" if self.tcp else self.socket_path

    def _connector(self, max_message_size: int | None = None,
                   **kwargs) -> aiohttp.BaseConnector:
        """A connector to it; with max_message_size, one that watches websocket frames."""
        if self.tcp is None:
            if max_message_size is None:
                return aiohttp.UnixConnector(path=self.socket_path, **kwargs)
            return _WebsocketConnector(max_message_size, path=self.socket_path, **kwargs)
        # Every request's URL names the host "notebook" (proxy.relay): the resolver sends it
        # to the service's address and port, with no DNS involved.
        resolver = _FixedResolver(*self.tcp)
        if max_message_size is None:
            return aiohttp.TCPConnector(resolver=resolver, **kwargs)
        return _TcpWebsocketConnector(max_message_size, resolver=resolver, **kwargs)

    def _new_session(self, connector: aiohttp.BaseConnector) -> aiohttp.ClientSession:
        """A session over connector that passes requests through as the browser sent them."""
        return aiohttp.ClientSession(
            connector=connector,
            # Bodies pass through as encoded; the browser decodes them.
            auto_decompress=False,
            # No total/read timeout: downloads and kernel sockets live long.
            timeout=aiohttp.ClientTimeout(total=None, connect=POOL_WAIT, sock_connect=10),
            # The browser's headers go through as sent; add none of our own.
            skip_auto_headers=(hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.USER_AGENT,
                               hdrs.CONTENT_TYPE),
            # Never keep one browser's cookies to send with another's requests.
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def get_json(self, path: str, timeout: float = 10.0) -> object:
        """GET a path of the server's own API with its token; the decoded JSON body."""
        async with self.session.get(f"http://notebook{path}",
                                    headers={"Authorization": f"token {self.token}"},
                                    timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            r.raise_for_status()
            return await r.json(content_type=None)

    async def close(self) -> None:
        """Close the pooled connections."""
        for session in (self._session, self._ws_session):
            if session is not None:
                await session.close()
        self._session = self._ws_session = None


class _FrameLimited:
    """Puts a FrameLimit on each new connection before its first byte is read, so it sees the
    handshake's answer and every frame after it (force_close: one handshake per connection).

    _create_connection is aiohttp's own hook (same signature in 3.8.4 and 3.11); after the
    fact would be too late: aiohttp hands bytes read with the 101 straight to its parser.
    """

    def __init__(self, max_message_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_message_size = max_message_size

    async def _create_connection(self, req, traces, timeout):
        proto = await super()._create_connection(req, traces, timeout)
        FrameLimit.install(proto.transport, self.max_message_size, client=True,
                           after_head=True)
        return proto


class _WebsocketConnector(_FrameLimited, aiohttp.UnixConnector):
    """A UNIX socket connector whose connections are frame-limited."""


class _TcpWebsocketConnector(_FrameLimited, aiohttp.TCPConnector):
    """A TCP connector whose connections are frame-limited."""


class _FixedResolver(AbstractResolver):
    """Resolves every name to one address and port (a service's loopback url)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def resolve(self, host: str, port: int = 0,
                      family: int = socket.AF_INET) -> list[dict]:
        """The one address, numeric (aiohttp's resolver result shape)."""
        return [{"hostname": host, "host": self.host, "port": self.port,
                 "family": socket.AF_INET6 if ":" in self.host else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        """Nothing to close."""


async def probe(socket: Path, path: str, token: str | None) -> bool:
    """True if an HTTP GET of path over the UNIX socket (with the token, if any) answers
    200."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(socket))
    except OSError:
        return False
    try:
        auth = f"Authorization: token {token}\r\n" if token else ""
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}"
                     "Connection: close\r\n\r\n".encode())
        status = await asyncio.wait_for(reader.readline(), timeout=5)
        return status.split(b" ")[1:2] == [b"200"]
    except (OSError, asyncio.TimeoutError, IndexError):
        return False
    finally:
        writer.close()
