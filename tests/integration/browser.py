"""A scripted HTTP client that behaves like a browser (cookies, forms) or an API tool."""

import json
import ssl
import uuid

import aiohttp
from aiohttp.test_utils import TestServer

from appliance.identity import HOST_PREFIX, XSRF_COOKIE


class Browser:
    """One person's cookie jar against a running hub."""

    def __init__(self, hub: TestServer | str, token: str = "",
                 tls: ssl.SSLContext | None = None):
        self.base = hub if isinstance(hub, str) else str(hub.make_url(""))
        headers = {"Authorization": f"token {token}"} if token else {}
        # unsafe=True: keep cookies for an IP-address host (127.0.0.1).
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                             headers=headers,
                                             connector=aiohttp.TCPConnector(ssl=tls))

    async def __aenter__(self) -> "Browser":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    def url(self, path: str) -> str:
        """Absolute URL of a hub path."""
        return self.base.rstrip("/") + path

    def request(self, method: str, path: str, **kw):
        """Like aiohttp's request, relative to the hub, no redirects followed by default."""
        kw.setdefault("allow_redirects", False)
        return self.session.request(method, self.url(path), **kw)

    @property
    def xsrf(self) -> str:
        """The hub's CSRF cookie value, as a page's hidden field would carry it."""
        for cookie in self.session.cookie_jar:
            if cookie.key in (XSRF_COOKIE, HOST_PREFIX + XSRF_COOKIE):
                return cookie.value
        return ""

    async def login(self, name: str, password: str) -> aiohttp.ClientResponse:
        """Fill in and submit the login form."""
        async with self.request("GET", "/hub/login") as r:
            assert r.status == 200
        async with self.request("POST", "/hub/login", data={
                "_xsrf": self.xsrf, "username": name, "password": password,
                "next": "/hub/home"}) as r:
            await r.read()
            return r

    async def progress(self, name: str, server: str = "") -> list[dict]:
        """Follow the server-sent progress stream (of a named server too) to its end."""
        events = []
        resource = f"servers/{server}" if server else "server"
        async with self.request("GET", f"/hub/api/users/{name}/{resource}/progress",
                                timeout=aiohttp.ClientTimeout(total=180)) as r:
            assert r.status == 200, await r.text()
            async for line in r.content:
                if line.startswith(b"data: "):
                    events.append(json.loads(line[6:]))
        return events

    async def execute(self, name: str, code: str, server: str = "") -> str:
        """Start a kernel through the hub, run code over the kernel websocket, return text/plain."""
        base = f"/user/{name}/{server + '/' if server else ''}"
        async with self.request("POST", f"{base}api/kernels", json={}) as r:
            assert r.status == 201, await r.text()
            kernel = await r.json()
        try:
            return await self.run_on_kernel(base, kernel["id"], code)
        finally:
            async with self.request("DELETE", f"{base}api/kernels/{kernel['id']}"):
                pass

    async def run_on_kernel(self, base: str, kernel_id: str, code: str,
                            headers: dict | None = None) -> str:
        """Run code on a running kernel of the server at base over its websocket; the
        result's text/plain (headers: e.g. an X-XSRFToken a jupyter_server 2 may want)."""
        msg_id = uuid.uuid4().hex
        async with self.session.ws_connect(
                self.url(f"{base}api/kernels/{kernel_id}/channels"),
                max_msg_size=0, headers=headers or {}) as ws:
            await ws.send_json(execute_request(msg_id, code))
            async for msg in ws:
                reply = json.loads(msg.data)
                if reply.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if reply["msg_type"] == "execute_result":
                    return reply["content"]["data"]["text/plain"]
                if reply["msg_type"] == "error":
                    raise AssertionError(reply["content"])
        raise AssertionError("kernel websocket closed without a result")


def execute_request(msg_id: str, code: str) -> dict:
    """A Jupyter messaging protocol 5.3 execute_request on the shell channel."""
    return {
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                   "msg_type": "execute_request", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }
