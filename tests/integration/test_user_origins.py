"""Per-user origins (issue 8, part 2: hub.user_domain): each user's servers answer on a host
of their own, reached with a one-time code, and a script there can read nothing of the hub's.
Names under .localhost: Chromium resolves every *.localhost to loopback."""

import asyncio
import json
import socket
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver

from appliance.identity import HUB_COOKIES
from appliance.origins import dns_label

from .browser import Browser
from .chromium import Page, missing
from .conftest import cli
from .test_ui import log_in

pytestmark = [pytest.mark.systemd, pytest.mark.pam]

#: Run on a page of alice's own host: what can it reach?
PROBE = """
var done = arguments[arguments.length - 1];
function status(url, opts) {
  return fetch(url, opts).then(function (r) { return r.text().then(function (t) {
    return r.status + " " + t.slice(0, 200); }); }, function () { return "blocked"; });
}
Promise.all([
  status("%(hub)s/hub/api/user", {credentials: "include"}),
  status("/hub/api/user", {credentials: "include"}),
  status("/hub/home", {credentials: "include"}),
  status("/user/%(bob)s/api/status", {credentials: "include"}),
  status("/user/%(alice)s/api/status", {credentials: "include"}),
]).then(done);
"""


class Loopback(AbstractResolver):
    """*.localhost is loopback, as Chromium (and nss-myhostname, not installed here) says."""

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list:
        assert host == "localhost" or host.endswith(".localhost"), host
        return [{"hostname": host, "host": "127.0.0.1", "port": port,
                 "family": socket.AF_INET, "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass


def client(**kw) -> aiohttp.ClientSession:
    """A cookie-keeping client that reaches *.localhost."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                 connector=aiohttp.TCPConnector(resolver=Loopback()), **kw)


async def user_origins_hub(start_hub, hub_config):
    """A hub at http://localhost:<port>, users at http://<user>.localhost:<port>."""
    cfg = hub_config(hub={"user_domain": "localhost"})
    hub = await start_hub(cfg)
    return cfg, hub, f"http://localhost:{hub.port}"


async def start_server(cfg, base: str, name: str) -> None:
    """Start a user's server with their token and wait until it is ready."""
    async with Browser(base, token=cli(cfg, "token", name)) as api:
        async with api.request("POST", f"/hub/api/users/{name}/server") as r:
            assert r.status in (201, 202), await r.text()
        assert (await api.progress(name))[-1]["ready"]


def visit(page: Page, alice, bob_name: str) -> tuple[str, list[str], set[str]]:
    """Log in on the hub, open the server, probe from its page: (url, answers, cookies)."""
    page.open("/hub/login")
    log_in(page, alice)
    page.wait_for_path("/hub/home")
    page.open(f"/user/{alice.name}/tree")
    own = f"http://{dns_label(alice.name)}.localhost:"
    page.wait_for(lambda p: p.driver.current_url.startswith(own) and "/tree" in
                  p.driver.current_url and p.ready(), timeout=30, what="alice's own host")
    page.driver.set_script_timeout(30)
    answers = page.driver.execute_async_script(
        PROBE % {"hub": page.base, "alice": alice.name, "bob": bob_name})
    cookies = {c["name"] for c in page.driver.get_cookies()}
    return page.driver.current_url, answers, cookies


async def test_a_script_on_a_users_host_cannot_read_the_hub(start_hub, hub_config, make_user,
                                                            tmp_path):
    if why := missing():
        pytest.skip(why)
    alice, bob = make_user(), make_user()
    cfg, hub, base = await user_origins_hub(start_hub, hub_config)
    await start_server(cfg, base, alice.name)
    await start_server(cfg, base, bob.name)
    page = Page(base, tmp_path / "profile")
    try:
        url, answers, cookies = await asyncio.to_thread(visit, page, alice, bob.name)
    finally:
        page.quit()
    print(url, json.dumps(answers, indent=1), cookies)
    hub_api, own_api, own_home, bobs, alices = answers
    assert hub_api == "blocked", "a script on alice's host read the hub's API"
    assert own_api.startswith("404") and own_home.startswith("404")
    assert bobs.startswith("404")
    assert alices.startswith("200") and "started" in alices
    # The hub's cookies never came to alice's host; only that host's own session did (the
    # notebook's own cookies are its business).
    assert cookies & HUB_COOKIES == {"appliance-server-session"}, cookies


async def test_codes_are_single_use_and_for_one_host_only(start_hub, hub_config, make_user):
    alice, bob = make_user(), make_user()
    cfg, hub, base = await user_origins_hub(start_hub, hub_config)
    await start_server(cfg, base, alice.name)
    async with Browser(base) as a:
        await a.login(alice.name, alice.password)
        async with a.request("GET", f"/user/{alice.name}/api/status",
                             headers={"Accept": "text/html"}) as r:
            assert r.status == 302
            target = urlsplit(r.headers["Location"])
        assert target.hostname == f"{dns_label(alice.name)}.localhost"
        assert target.path == "/hub/user-login"
        code = parse_qs(target.query)["code"][0]
        # Writes and websockets do not go to a server through the hub's origin any more.
        async with a.request("POST", f"/user/{alice.name}/api/kernels", json={},
                             headers={"Origin": base}) as r:
            assert r.status == 403
    bobs_host = f"http://{dns_label(bob.name)}.localhost:{hub.port}"
    alices_host = f"http://{dns_label(alice.name)}.localhost:{hub.port}"
    async with client() as s:
        # alice's code does not open bob's host...
        async with s.get(f"{bobs_host}/hub/user-login?code={code}", allow_redirects=False) as r:
            assert r.status == 404
        # ...and was spent there; a fresh one works once on alice's host, then never again.
    async with Browser(base) as a:
        await a.login(alice.name, alice.password)
        async with a.request("GET", f"/user/{alice.name}/api/status",
                             headers={"Accept": "text/html"}) as r:
            code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    async with client() as s:
        exchange = f"{alices_host}/hub/user-login?code={code}&next=/user/{bob.name}/"
        async with s.get(exchange, allow_redirects=False) as r:
            assert r.status == 302
            assert r.headers["Location"] == f"/user/{alice.name}/", "next left alice's prefix"
        async with s.get(f"{alices_host}/user/{alice.name}/api/status") as r:
            assert r.status == 200 and "started" in await r.text()
        async with s.get(f"{alices_host}/hub/api/user") as r:
            assert r.status == 404
        async with s.get(exchange, allow_redirects=False) as r:
            assert r.status == 400, "a code worked twice"
    # Without a session, alice's host sends the browser to the hub, which logs it in.
    async with client() as s:
        async with s.get(f"{alices_host}/user/{alice.name}/tree", allow_redirects=False,
                         headers={"Accept": "text/html"}) as r:
            assert r.status == 302
            assert r.headers["Location"] == f"{base}/user/{alice.name}/tree"
