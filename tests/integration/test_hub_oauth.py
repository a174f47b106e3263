"""The hub as JupyterHub's OAuth provider, for a real HubOAuth service: JupyterHub's own
whoami-oauth example (jupyterhub_examples/, unmodified) with JupyterHub 6.1.1 from PyPI
(tests/infra/pypi-tools.sh), run by the hub as a managed service with `oauth = true`, as a
sysadmin would configure it (README "Works with"): the hub makes it the OAuth client
`service-whoami` with its token as the secret, and relays /services/whoami/ to it. Users go
through the OAuth dance in Chromium, and as a browser does with aiohttp, following redirects.
"""

import asyncio
import json
import os
import re
import socket
import subprocess
from html import unescape
from pathlib import Path

import pytest

from appliance import serviceunits

from .browser import Browser
from .test_ui import chromium, log_in  # noqa: F401 (chromium: a fixture)

TOOLS = os.environ.get("APPLIANCE_PYPI_TOOLS", "")
PYTHON = Path(TOOLS) / "hub/bin/python"
WHOAMI = Path(__file__).with_name("jupyterhub_examples") / "whoami-oauth.py"
PREFIX = "/services/whoami/"

pytestmark = [pytest.mark.systemd, pytest.mark.pam, pytest.mark.skipif(
    not TOOLS or not PYTHON.exists(),
    reason="no JupyterHub venv in APPLIANCE_PYPI_TOOLS: run tests/run, which builds it with "
           "tests/infra/pypi-tools.sh")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def whoami_config(port: int, users: list[str]) -> dict:
    """The README's two tables: the service, and a role that lets users reach it."""
    return {"services.whoami": {"command": [str(PYTHON), str(WHOAMI)],
                                "url": f"http://127.0.0.1:{port}", "oauth": True},
            "roles.whoami-users": {"scopes": ["access:services!service=whoami"],
                                   "users": users}}


@pytest.fixture
async def hub_with_whoami(start_hub, hub_config, make_user):
    """A hub running whoami-oauth as a managed service; yields (hub, alice, bob, carol, the
    service's token): alice and bob may use it, carol may not."""
    alice, bob, carol = make_user(), make_user(), make_user()
    port = free_port()
    hub = await start_hub(hub_config(**whoami_config(port, [alice.name, bob.name])))
    unit = serviceunits.unit_name("whoami")
    try:
        await wait_listening(port, unit)
        yield hub, alice, bob, carol, hub.app["services"].token_file("whoami").read_text()
    finally:
        print(f"whoami-oauth's journal:\n{journal(unit)}")


def journal(unit: str) -> str:
    return subprocess.run(["journalctl", "-u", unit, "--no-pager", "-o", "cat"],
                          capture_output=True, text=True).stdout


async def wait_listening(port: int, unit: str) -> None:
    for _ in range(300):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"whoami-oauth did not listen:\n{journal(unit)}")


async def follow(browser: Browser, path: str, seen: list[str]) -> tuple[int, str]:
    """GET path and follow redirects as a browser does, noting each URL; the last answer's
    status and body."""
    for _ in range(10):
        seen.append(path)
        async with browser.request("GET", path) as r:
            body = (await r.read()).decode()
            if r.status not in (301, 302, 303, 307):
                return r.status, body
            path = r.headers["Location"]
            assert path.startswith("/"), f"redirected off the hub: {path}"
    raise AssertionError(f"redirect loop: {seen}")


async def visit(browser: Browser, confirm: bool,
                start: str = PREFIX) -> tuple[int, str, list[str]]:
    """Open the service (or start there); press Authorize on the confirmation page when it
    shows (it must show exactly when confirm); the final status, body and the URLs passed."""
    seen: list[str] = []
    status, body = await follow(browser, start, seen)
    if 'id="oauth-authorize"' in body:
        assert confirm, f"asked to confirm again: {seen}"
        action = unescape(re.search(r'action="([^"]+)" id="oauth-authorize"', body).group(1))
        assert action.startswith("/hub/api/oauth2/authorize?")
        async with browser.request("POST", action, data={"_xsrf": browser.xsrf}) as p:
            assert p.status == 302, await p.text()
            location = p.headers["Location"]
        status, body = await follow(browser, location, seen)
    else:
        assert not confirm or status != 200, f"no confirmation page: {seen}"
    return status, body, seen


async def test_whoami_oauth_knows_each_user_and_refuses_one_not_allowed(hub_with_whoami):
    hub, alice, bob, carol, _ = hub_with_whoami
    for user in (alice, bob):
        async with Browser(hub) as b:
            await b.login(user.name, user.password)
            status, body, seen = await visit(b, confirm=True)
            assert status == 200, (status, body, seen)
            model = json.loads(body)
            assert model["name"] == user.name, model
            assert "access:services!service=whoami" in model["scopes"]
            assert any(u.startswith("/hub/api/oauth2/authorize?") for u in seen), seen
            assert any(u.startswith(PREFIX + "oauth_callback?code=") for u in seen), seen
            # Logged in to the service now (its own cookie): no dance, no confirmation.
            status, body, seen = await visit(b, confirm=False)
            assert status == 200 and json.loads(body)["name"] == user.name
            assert len(seen) == 1, seen
    async with Browser(hub) as c:
        await c.login(carol.name, carol.password)
        status, body, seen = await visit(c, confirm=False)
        assert status == 403, (status, body, seen)
        assert "You do not have permission to access Service whoami" in body


async def test_a_second_login_skips_the_confirmation_and_logout_ends_the_token(
        hub_with_whoami):
    hub, alice, _, _, _ = hub_with_whoami
    async with Browser(hub) as b:
        await b.login(alice.name, alice.password)
        assert (await visit(b, confirm=True))[0] == 200
    async with Browser(hub) as b:  # another browser: the service has no cookie of hers
        await b.login(alice.name, alice.password)
        status, _, seen = await visit(b, confirm=False)  # authorized before
        assert status == 200 and any("oauth_callback?code=" in u for u in seen)
        tokens = await hub.app["store"].list_tokens(alice.name)
        assert [t.client for t in tokens] == ["service-whoami", "service-whoami"]
        async with b.request("GET", f"/hub/api/users/{alice.name}/tokens") as r:
            listed = (await r.json())["api_tokens"]
        assert [t["oauth_client"] for t in listed] == ["Service whoami"] * 2
        assert all("access:services!service=whoami" in t["scopes"] for t in listed)
        async with b.request("GET", "/hub/token") as r:  # the token page says whose they are
            assert (await r.text()).count("OAuth login to Service whoami") == 2
        async with b.request("POST", "/hub/logout", data={"_xsrf": b.xsrf}) as r:
            assert r.status in (200, 302, 303)
        # The token issued in that session is revoked with it; the first browser's stays.
        tokens = await hub.app["store"].list_tokens(alice.name)
        assert len(tokens) == 1


async def test_the_token_endpoint_refuses_a_wrong_secret_and_a_replayed_code(
        hub_with_whoami):
    hub, alice, _, _, secret = hub_with_whoami
    async with Browser(hub) as b:
        await b.login(alice.name, alice.password)
        await visit(b, confirm=True)  # authorized: the next authorization needs no page
        authorize = ("/hub/api/oauth2/authorize?client_id=service-whoami&response_type=code"
                     f"&redirect_uri={PREFIX}oauth_callback&state=xyz")
        async with b.request("GET", authorize) as r:
            assert r.status == 302
            target = r.headers["Location"]
        assert target.startswith(PREFIX + "oauth_callback?code=") and "state=xyz" in target
        code = re.search(r"code=([^&]+)", target).group(1)
        form = {"grant_type": "authorization_code", "code": code, "client_id": "service-whoami",
                "redirect_uri": PREFIX + "oauth_callback"}
        async with b.request("POST", "/hub/api/oauth2/token",
                             data={**form, "client_secret": "wrong"}) as r:
            assert r.status == 401 and (await r.json())["error"] == "invalid_client"
        async with b.request("POST", "/hub/api/oauth2/token",
                             data={**form, "client_secret": secret}) as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
        assert answer["token_type"] == "Bearer" and r.headers["Cache-Control"] == "no-store"
        async with b.session.get(b.url("/hub/api/user"), headers={
                "Authorization": f"token {answer['access_token']}"}) as r:
            assert (await r.json())["name"] == alice.name
        async with b.request("POST", "/hub/api/oauth2/token",
                             data={**form, "client_secret": secret}) as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid_grant"
        # A code whose login has ended meanwhile gets no token.
        async with b.request("GET", authorize) as r:
            code = re.search(r"code=([^&]+)", r.headers["Location"]).group(1)
        async with b.request("POST", "/hub/logout", data={"_xsrf": b.xsrf}) as r:
            assert r.status in (200, 302, 303)
        async with b.request("POST", "/hub/api/oauth2/token",
                             data={**form, "code": code, "client_secret": secret}) as r:
            assert r.status == 400 and (await r.json())["error"] == "invalid_grant"
        await b.login(alice.name, alice.password)
        # A wrong redirect URI on the authorization is shown by the hub, never followed.
        async with b.request("GET", authorize.replace("oauth_callback", "elsewhere")) as r:
            assert r.status == 400
        # An unknown client is refused the same way.
        async with b.request("GET", authorize.replace("service-whoami", "service-x")) as r:
            assert r.status == 400


async def test_a_visitor_logs_in_on_the_way_and_lands_on_the_service(hub_with_whoami):
    hub, alice, _, _, _ = hub_with_whoami
    async with Browser(hub) as b:
        seen: list[str] = []
        status, body = await follow(b, PREFIX, seen)
        assert status == 200 and seen[-1].startswith("/hub/login?next="), seen
        target = unescape(re.search(r'name="next" value="([^"]*)"', body).group(1))
        assert target.startswith("/hub/api/oauth2/authorize?client_id=service-whoami")
        async with b.request("POST", "/hub/login", data={
                "_xsrf": b.xsrf, "username": alice.name, "password": alice.password,
                "next": target}) as r:
            assert r.status == 302 and r.headers["Location"] == target
        status, body, seen = await visit(b, confirm=True, start=target)
        assert status == 200 and json.loads(body)["name"] == alice.name
        assert seen[-1] == PREFIX, seen  # back where the visit began (the state's next)


def chromium_visit(page, user) -> dict:
    """In Chromium: log in to the hub, open the service, authorize it on the hub's
    confirmation page, and read what the service says of the visitor."""
    page.open("/hub/login")
    log_in(page, user)
    page.wait_for_path("/hub/home")
    page.open(PREFIX)
    page.wait_for(lambda p: p.path.startswith("/hub/api/oauth2/authorize"), timeout=20,
                  what="the hub's authorization page")
    page.button("Authorize").click()
    page.wait_for(lambda p: p.path == PREFIX and '"name"' in p.text("body"),
                  timeout=20, what="the service's answer")
    return json.loads(page.text("body"))


async def test_in_chromium_each_user_sees_their_own_name(hub_with_whoami, chromium):  # noqa: F811
    hub, alice, bob, _, _ = hub_with_whoami
    for user in (alice, bob):
        page = await asyncio.to_thread(chromium, hub)
        model = await asyncio.to_thread(chromium_visit, page, user)
        assert model["name"] == user.name, model
        assert model["kind"] == "user"
