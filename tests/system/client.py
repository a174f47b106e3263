"""A person at a browser, from the host, against the hub in the VM (through the forwarded port).

Synchronous on purpose: each `Person` owns an aiohttp session (cookie jar) on one private event
loop shared by the module's tests, and every call runs to completion on it.
"""

import asyncio
import html
import json
import re
import uuid

import aiohttp

XSRF_COOKIE = "appliance-xsrf"
SLOW = aiohttp.ClientTimeout(total=300)


class Loop:
    """One event loop for the whole test module, driven from synchronous tests."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()

    def run(self, coro):
        """Run a coroutine to completion."""
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        """Close the loop."""
        self.loop.close()


class Person:
    """One user's cookie jar against the hub."""

    def __init__(self, loop: Loop, base_url: str, name: str, password: str):
        self.loop = loop
        self.base = base_url.rstrip("/")
        self.name = name
        self.password = password
        self.last_body = ""
        self.last_location = ""
        self.session = loop.run(self._session())

    @staticmethod
    async def _session() -> aiohttp.ClientSession:
        # unsafe=True: keep cookies for an IP-address host (127.0.0.1).
        return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=SLOW)

    def close(self) -> None:
        """Close the session."""
        self.loop.run(self.session.close())

    @property
    def xsrf(self) -> str:
        """The hub's CSRF cookie, as a form's hidden field or X-XSRFToken would carry it."""
        for cookie in self.session.cookie_jar:
            if cookie.key in (XSRF_COOKIE, "__Host-" + XSRF_COOKIE):  # __Host- under TLS
                return cookie.value
        return ""

    def request(self, method: str, path: str, **kw) -> tuple[int, str]:
        """(status, body) of one request; redirects are not followed."""
        return self.loop.run(self._request(method, path, **kw))

    async def _request(self, method: str, path: str, **kw) -> tuple[int, str]:
        kw.setdefault("allow_redirects", False)
        headers = kw.pop("headers", {})
        if method != "GET" and self.xsrf:
            headers = {"X-XSRFToken": self.xsrf, **headers}
        async with self.session.request(method, self.base + path, headers=headers, **kw) as r:
            # Where a redirect points, as a path on the hub (for following it).
            self.last_location = r.headers.get("Location", "").removeprefix(self.base)
            return r.status, await r.text()

    def json(self, method: str, path: str, **kw) -> dict:
        """The JSON body of a request that must succeed."""
        status, body = self.request(method, path, **kw)
        assert 200 <= status < 300, f"{method} {path}: {status} {body[:500]}"
        return json.loads(body)

    def try_login(self) -> int:
        """Submit the login form once; its status (the body is kept in last_body)."""
        status, _ = self.request("GET", "/hub/login")
        assert status == 200, f"GET /hub/login: {status}"
        status, self.last_body = self.request("POST", "/hub/login", data={
            "username": self.name, "password": self.password, "_xsrf": self.xsrf,
            "next": "/hub/home"})
        return status

    def login(self) -> None:
        """Fill in and submit the login form, as a browser would."""
        status, _ = self.request("GET", "/hub/login")
        assert status == 200, f"GET /hub/login: {status}"
        assert self.xsrf, f"no {XSRF_COOKIE} cookie after GET /hub/login"
        status, body = self.request("POST", "/hub/login", data={
            "username": self.name, "password": self.password, "_xsrf": self.xsrf,
            "next": "/hub/home"})
        assert status in (302, 303), f"login as {self.name}: {status} {body[:500]}"

    def start_server(self, timeout: float = SLOW.total) -> list[dict]:
        """Ask for the server and follow the progress stream to its last event (for up to
        timeout seconds: longer than the session's for a slow server)."""
        status, body = self.request("POST", f"/hub/api/users/{self.name}/server")
        assert status in (201, 202), f"start {self.name}: {status} {body[:500]}"
        return self.loop.run(self._progress(timeout))

    async def _progress(self, timeout: float) -> list[dict]:
        events = []
        path = f"/hub/api/users/{self.name}/server/progress"
        async with self.session.get(self.base + path,
                                    timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            assert r.status == 200, await r.text()
            async for line in r.content:
                if line.startswith(b"data: "):
                    events.append(json.loads(line[6:]))
        return events

    def execute(self, code: str, timeout: float = 180, headers: dict | None = None,
                prefix: str = "") -> dict:
        """Start a kernel, run code over the proxied websocket, delete the kernel (headers:
        for every request, e.g. the X-XSRFToken a jupyter_server 2 wants; prefix: the
        server's, "/user/<name>/" by default, or a service's "/services/<name>/").

        Returns {"result": text/plain} or {"error": ename/evalue}, or {"died": state} when
        the kernel dies or restarts, or {"timeout": True} when nothing came back in time.
        """
        headers = headers or {}
        prefix = prefix or f"/user/{self.name}/"
        kernel = self.json("POST", f"{prefix}api/kernels", json={}, headers=headers)
        try:
            return self.loop.run(asyncio.wait_for(
                self._run_on_kernel(prefix, kernel["id"], code, headers), timeout))
        except asyncio.TimeoutError:
            return {"timeout": True}
        finally:
            self.request("DELETE", f"{prefix}api/kernels/{kernel['id']}", headers=headers)

    def cookie(self, name: str) -> str:
        """A cookie's value from the jar ("" when there is none)."""
        return next((c.value for c in self.session.cookie_jar if c.key == name), "")

    async def _run_on_kernel(self, prefix: str, kernel_id: str, code: str,
                             headers: dict) -> dict:
        msg_id = uuid.uuid4().hex
        url = self.base + f"{prefix}api/kernels/{kernel_id}/channels"
        async with self.session.ws_connect(url, max_msg_size=0, headers=headers) as ws:
            await ws.send_json(execute_request(msg_id, code))
            async for msg in ws:
                reply = json.loads(msg.data)
                content = reply.get("content", {})
                # The server's restarter announces a dead kernel on iopub, unparented.
                if reply.get("msg_type") == "status" and content.get(
                        "execution_state") in ("restarting", "dead", "autorestarting"):
                    return {"died": content["execution_state"]}
                if reply.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if reply["msg_type"] == "execute_result":
                    return {"result": content["data"]["text/plain"]}
                if reply["msg_type"] == "error":
                    return {"error": f"{content['ename']}: {content['evalue']}"}
        return {"died": "websocket closed"}


def execute_request(msg_id: str, code: str) -> dict:
    """A Jupyter messaging protocol 5.3 execute_request on the shell channel."""
    return {
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                   "msg_type": "execute_request", "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }


def visit_service(person, path: str) -> tuple[int, str, list[str]]:
    """Open path and follow redirects as a browser does, pressing Authorize on the hub's
    confirmation page when it shows; the last status, body and the paths passed."""
    seen: list[str] = []
    method, data = "GET", None
    for _ in range(12):
        seen.append(path)
        status, body = person.request(method, path, data=data)
        method, data = "GET", None
        if status in (301, 302, 303, 307):
            path = person.last_location
        elif status == 200 and 'id="oauth-authorize"' in body:
            path = html.unescape(re.search(r'action="([^"]+)" id="oauth-authorize"',
                                           body).group(1))
            method, data = "POST", {"_xsrf": person.xsrf}
        else:
            return status, body, seen
    raise AssertionError(f"redirect loop: {seen}")
