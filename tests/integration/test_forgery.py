"""Forged requests into a user's server, in a real browser: a page that a student serves on
another port of the same host (the same *site* to a browser) makes the victim's Chromium send
a cookie-carrying form POST and a websocket to the victim's kernel. Both must be refused
before they reach the server; the hub's own pages keep working."""

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from aiohttp import web
from yarl import URL

from tests.ports import free_port

from .browser import Browser, execute_request
from .chromium import Page
from .conftest import cli
from .test_ui import SPAWN_TIMEOUT, chromium, log_in  # noqa: F401 (chromium: a fixture)

pytestmark = [pytest.mark.systemd, pytest.mark.pam]

ATTACK = """<!doctype html><title>attack</title>
<form id="f" method="post" enctype="text/plain" action="{hub}/user/{user}/api/kernels">
<input name='{{"name": "python3", "x": "' value='"}}'></form>
<script>
var ws = new WebSocket("{ws}/user/{user}/api/kernels/{kernel}/channels");
ws.onopen = function () {{ document.title = "ws-open"; ws.send({execute}); }};
ws.onclose = function () {{ if (document.title != "ws-open") document.title = "ws-refused"; }};
setTimeout(function () {{ document.getElementById("f").submit(); }}, 1500);
</script>"""


async def serve_attack_page(html: str) -> tuple[web.AppRunner, int]:
    """The student's page, served on another port of the same host."""
    async def attack(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/attack.html", attack)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def visit_attack_page(page: Page, user, url: str) -> str:
    """Log the victim in, then let them open the student's page; the websocket's fate."""
    page.open("/hub/login")
    log_in(page, user)
    page.wait_for_path("/hub/home")
    page.driver.get(url)
    page.wait_for(lambda p: p.driver.title in ("ws-open", "ws-refused"), timeout=15,
                  what="the websocket's outcome")
    outcome = page.driver.title
    # The form submits itself; the browser lands on the hub's answer to it.
    page.wait_for(lambda p: p.driver.current_url.startswith(page.base), timeout=15,
                  what="the forged form's answer")
    return outcome


def own_page_posts(page: Page, user: str) -> int:
    """From the hub's own origin, the same POST (as Jupyter's own pages make it) works."""
    page.open("/hub/home")
    return page.driver.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        f"fetch('/user/{user}/api/kernels', {{method: 'POST', body: '{{}}'}})"
        ".then(function (r) { done(r.status); });")


async def test_a_page_on_another_port_cannot_drive_the_victims_server(
        start_hub, hub_config, make_user, chromium, tmp_path):  # noqa: F811
    victim = make_user()
    cfg = hub_config()
    hub = await start_hub(cfg)
    base = str(hub.make_url("")).rstrip("/")
    marker = Path(f"/home/{victim.name}/forged")
    async with Browser(hub, token=cli(cfg, "token", victim.name)) as api:
        async with api.request("POST", f"/hub/api/users/{victim.name}/server") as r:
            assert r.status in (201, 202)
        assert (await api.progress(victim.name))[-1].get("ready")
        async with api.request("POST", f"/user/{victim.name}/api/kernels", json={}) as r:
            kernel = (await r.json())["id"]
        execute = json.dumps(json.dumps(execute_request(
            uuid.uuid4().hex, f"open({str(marker)!r}, 'w').write('x')")))
        html = ATTACK.format(hub=base, ws=base.replace("http:", "ws:", 1), user=victim.name,
                             kernel=kernel, execute=execute)
        runner, port = await serve_attack_page(html)
        try:
            page = await asyncio.to_thread(chromium, hub)
            outcome = await asyncio.to_thread(
                visit_attack_page, page, victim, f"http://127.0.0.1:{port}/attack.html")
            assert outcome == "ws-refused"
            assert "refused" in await asyncio.to_thread(page.text, "p.error")
            await asyncio.sleep(1)
            assert not marker.exists()
            async with api.request("GET", f"/user/{victim.name}/api/kernels") as r:
                assert [k["id"] for k in await r.json()] == [kernel]  # no forged kernel
            assert await asyncio.to_thread(own_page_posts, page, victim.name) == 201
        finally:
            await runner.cleanup()


async def test_a_planted_csrf_cookie_does_not_pass_the_check(start_hub, make_user):
    """Cookies are shared by every port of a host, so a page on another port can plant the
    hub's CSRF cookie with a value it knows. The token is bound to the victim's session (an
    HMAC of the hub secret), so the planted value, sent as the form field, is refused; with
    the old double-submit check (form field == cookie) it passed."""
    alice = make_user()
    hub = await start_hub()
    async with Browser(hub) as a:
        await a.login(alice.name, alice.password)
        real = a.xsrf
        a.session.cookie_jar.update_cookies({"appliance-xsrf": "planted"},
                                            response_url=URL(a.base))
        assert a.xsrf == "planted"
        # Origin is the hub's: only the token stands between this request and the spawn.
        origin = {"Origin": a.base.rstrip("/")}
        async with a.request("POST", f"/hub/spawn/{alice.name}", data={"_xsrf": "planted"},
                             headers=origin) as r:
            assert r.status == 400 and "expired" in await r.text()
        assert hub.app["spawner"].get(alice.name).state == "stopped"
        async with a.request("POST", f"/hub/api/users/{alice.name}/server",
                             headers={**origin, "X-XSRFToken": "planted"}) as r:
            assert r.status == 400
        assert hub.app["spawner"].get(alice.name).state == "stopped"
        async with a.request("POST", "/hub/logout", data={"_xsrf": real}, headers=origin) as r:
            assert r.status == 302  # the real token, though its cookie was overwritten


async def test_the_csrf_token_changes_at_login_and_logout(start_hub, make_user):
    """The token of the login form, of the session, and after logout are three different
    ones; the session's token is refused once the session has ended."""
    alice = make_user()
    hub = await start_hub()
    async with Browser(hub) as a:
        async with a.request("GET", "/hub/login") as r:
            assert r.status == 200
        before = a.xsrf
        await a.login(alice.name, alice.password)
        during = a.xsrf
        async with a.request("POST", "/hub/logout", data={"_xsrf": before}) as r:
            assert r.status == 400, "the login form's token must not work in the session"
        async with a.request("POST", "/hub/logout", data={"_xsrf": during}) as r:
            assert r.status == 302
        async with a.request("GET", "/hub/login") as r:
            assert r.status == 200
        after = a.xsrf
        assert len({before, during, after}) == 3 and all((before, during, after))
        await a.login(alice.name, alice.password)
        async with a.request("POST", f"/hub/spawn/{alice.name}", data={"_xsrf": during}) as r:
            assert r.status == 400, "an ended session's token must not work in the next one"
