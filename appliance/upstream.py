"""A user's notebook server as the hub reaches it: over its UNIX socket, with its token.

The proxy relays through an Upstream's pooled session; the spawner probes the same socket to
tell when a server is ready (it answers HTTP, not merely "the unit is active").
"""

import asyncio
from pathlib import Path

import aiohttp
from aiohttp import hdrs


class Upstream:
    """One user's notebook server reached over its UNIX socket; holds a pooled ClientSession."""

    def __init__(self, socket_path: str, token: str):
        self.socket_path = socket_path
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled session, created on first use so it binds to the running loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # limit=0: kernel websockets hold a connection each; the default cap of 100
                # would make the 101st wait for ever.
                connector=aiohttp.UnixConnector(path=self.socket_path, limit=0),
                # Bodies pass through as encoded; the browser decodes them.
                auto_decompress=False,
                # No total/read timeout: downloads and kernel sockets live long.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                # The browser's headers go through as sent; add none of our own.
                skip_auto_headers=(hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.USER_AGENT,
                                   hdrs.CONTENT_TYPE),
                # Never keep one browser's cookies to send with another's requests.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def get_json(self, path: str, timeout: float = 10.0) -> object:
        """GET a path of the server's own API with its token; the decoded JSON body."""
        async with self.session.get(f"http://notebook{path}",
                                    headers={"Authorization": f"token {self.token}"},
                                    timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            r.raise_for_status()
            return await r.json(content_type=None)

    async def close(self) -> None:
        """Close the pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


async def probe(socket: Path, path: str, token: str) -> bool:
    """True if an HTTP GET of path over the UNIX socket answers 200."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(socket))
    except OSError:
        return False
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: token {token}"
                     "\r\nConnection: close\r\n\r\n".encode())
        status = await asyncio.wait_for(reader.readline(), timeout=5)
        return status.split(b" ")[1:2] == [b"200"]
    except (OSError, asyncio.TimeoutError, IndexError):
        return False
    finally:
        writer.close()
