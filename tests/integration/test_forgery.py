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
