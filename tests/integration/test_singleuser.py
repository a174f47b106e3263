"""jupyterhub-singleuser as the server command: JupyterHub 6.1.1 with JupyterLab 4 from PyPI
(tests/infra/pypi-tools.sh, unmodified), spawned by our hub with JupyterHub's environment.

In Chromium: log in, start the server, and land in Lab through the server's own OAuth login to
the hub (/user/<name>/lab -> /hub/api/oauth2/authorize -> /user/<name>/oauth_callback, no
confirmation page for one's own server), make a notebook and run a cell over the proxied
kernel websocket; the server's activity reports reach the hub.
"""

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
)
from selenium.webdriver.common.keys import Keys

from appliance import units

from .browser import Browser
from .chromium import Page
from .conftest import cli
from .test_ui import chromium, log_in  # noqa: F401 (chromium: a fixture)

TOOLS = os.environ.get("APPLIANCE_PYPI_TOOLS", "")
SINGLEUSER = Path(TOOLS) / "singleuser/bin/jupyterhub-singleuser"
SPAWN_TIMEOUT = 180

pytestmark = pytest.mark.skipif(
    not TOOLS or not SINGLEUSER.exists(),
    reason="no jupyterhub-singleuser in APPLIANCE_PYPI_TOOLS: run tests/run, which builds it "
           "with tests/infra/pypi-tools.sh")


def journal(unit: str) -> str:
    """The server's own log, for a failure's message."""
    return subprocess.run(["journalctl", "--no-pager", "-o", "cat", "-n", "60", "-u", unit],
                          capture_output=True, text=True).stdout


def start_and_land_in_lab(page: Page, name: str) -> list[str]:
    """From home: start, and through the OAuth dance into Lab; the paths the tab passed."""
    page.open("/hub/home")
    page.wait_for_path("/hub/home")
    seen = []
    page.button("Start my server").click()
    # Every path the tab shows on the way (the OAuth redirects pass too fast to watch, so
    # the hub's and the server's records prove the dance below).
    page.wait_for(lambda p: seen.append(p.path) or p.path.startswith(f"/user/{name}/lab"),
                  timeout=SPAWN_TIMEOUT, what="JupyterLab")
    page.wait_for(lambda p: p.all(".jp-LauncherCard"), timeout=60, what="Lab's launcher")
    return seen


def clicked(element) -> bool:
    """Click element once it can be (Lab lays itself out after the page loads)."""
    try:
        element.click()
        return True
    except (ElementNotInteractableException, ElementClickInterceptedException):
        return False


def run_a_cell(page: Page) -> str:
    """A new notebook from the launcher, 6*7 typed and run; the output's text."""
    page.wait_for(lambda p: any(clicked(c) for c in p.all(
        ".jp-LauncherCard[data-category='Notebook']")), timeout=30, what="the Notebook card")
    page.wait_for(lambda p: p.all(".jp-NotebookPanel .jp-Cell .cm-content"), timeout=60,
                  what="a notebook")
    # The kernel's websocket is up once the status bar says so (the notebook's own
    # indicator may say idle before).
    page.wait_for(lambda p: "| Idle" in p.text("#jp-main-statusbar"), timeout=90,
                  what="an idle kernel")
    editor = page.find(".jp-NotebookPanel .jp-Cell .cm-content")
    page.wait_for(lambda p: clicked(editor), timeout=30, what="the cell's editor")
    editor.send_keys("6*7")
    editor.send_keys(Keys.SHIFT, Keys.ENTER)
    page.wait_for(lambda p: p.text(".jp-OutputArea-output"), timeout=60, what="the output")
    return page.text(".jp-OutputArea-output")


async def test_lab_through_the_oauth_dance_runs_a_cell_and_reports_activity(
        start_hub, hub_config, make_user, chromium):  # noqa: F811
    alice = make_user()
    cfg = hub_config(spawner={"command": [str(SINGLEUSER)], "default_url": "/lab"},
                     # Activity reported every 2 s instead of JupyterHub's 300.
                     **{"spawner.environment": {"JUPYTERHUB_ACTIVITY_INTERVAL": "2"}})
    hub = await start_hub(cfg)
    unit = units.unit_name(alice.name)
    page = await asyncio.to_thread(chromium, hub)
    await asyncio.to_thread(page.open, "/hub/login")
    await asyncio.to_thread(log_in, page, alice)
    await asyncio.to_thread(page.wait_for_path, "/hub/home")
    try:
        seen = await asyncio.to_thread(start_and_land_in_lab, page, alice.name)
        before_cell = time.time()
        output = await asyncio.to_thread(run_a_cell, page)
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- journal of {unit}:\n{journal(unit)}") from None
    assert output == "42", output
    # The server logged its browser in itself: its OAuth client got a code and issued a
    # token to alice, and its cookie is set for its own path only.
    tokens = await hub.app["store"].list_tokens(alice.name)
    assert "jupyterhub-user-" + alice.name in {t.client for t in tokens}, (tokens, seen)
    cookies = await asyncio.to_thread(page.driver.get_cookies)
    ours = [c for c in cookies if c["name"] == f"jupyterhub-user-{alice.name}"]
    assert ours and ours[0]["path"] == f"/user/{alice.name}/", cookies
    # The server's own token is an API token with the server role's scopes only.
    server = hub.app["spawner"].get(alice.name)
    async with Browser(hub, token=server.token) as api:
        async with api.request("GET", "/hub/api/user") as r:
            model = await r.json()
        assert model["name"] == alice.name
        assert set(model["scopes"]) == {
            f"users:activity!user={alice.name}", f"read:users:activity!user={alice.name}",
            f"access:servers!server={alice.name}/",
            f"read:users:name!user={alice.name}", f"read:users:groups!user={alice.name}"}
        async with api.request("GET", "/hub/api/users") as r:
            assert r.status == 403
    # Activity: with the browser gone nothing is relayed; the hub forgets what the proxy
    # saw, and only the server's own report (JUPYTERHUB_ACTIVITY_URL) can bring the time
    # of the cell back.
    await asyncio.to_thread(page.driver.get, "about:blank")
    server.last_activity = None
    record = None
    for _ in range(100):  # the report comes every 2 s (the last relayed frame may come first)
        record = await hub.app["store"].get_user(alice.name)
        if server.last_activity and (record.last_activity or 0) >= before_cell - 1:
            break
        await asyncio.sleep(0.1)
    assert server.last_activity and server.last_activity >= before_cell - 1, journal(unit)
    assert record.last_activity >= before_cell - 1, journal(unit)
    async with Browser(hub, token=cli(cfg, "token", alice.name)) as api:
        async with api.request("GET", f"/hub/api/users/{alice.name}") as r:
            assert (await r.json())["servers"][""]["last_activity"] is not None


async def test_a_profiles_named_singleuser_server_beside_a_plain_notebook(
        start_hub, hub_config, make_user):
    """A profile's command (the default stays jupyter-notebook): a named jupyterhub-singleuser
    server is the client jupyterhub-user-<name>-<server> and logs its browser in itself,
    while the user's default jupyter-notebook is still reached with the hub's token."""
    alice = make_user()
    cfg = hub_config(spawner={"named_servers_limit": 1},
                     **{"profiles.classic": {"description": "Notebook", "default": True},
                        "profiles.lab": {"description": "Lab", "command": [str(SINGLEUSER)],
                                         "default_url": "/lab"}})
    hub = await start_hub(cfg)
    async with Browser(hub) as b:
        await b.login(alice.name, alice.password)
        for path, body in ((f"/hub/api/users/{alice.name}/server", {}),
                           (f"/hub/api/users/{alice.name}/servers/work", {"profile": "lab"})):
            async with b.request("POST", path, json=body,
                                 headers={"X-XSRFToken": b.xsrf}) as r:
                assert r.status in (201, 202), await r.text()
        for server in ("", "work"):
            events = await b.progress(alice.name, server)
            assert events[-1].get("ready"), (server, events,
                                             journal(units.unit_name(alice.name, server)))
        # The plain notebook: the hub hands it its token, no login of its own.
        assert await b.execute(alice.name, "6*7") == "42"
        seen, path = [], f"/user/{alice.name}/work/lab"
        for _ in range(10):
            seen.append(path)
            async with b.request("GET", path) as r:
                await r.read()
                if r.status != 302:
                    break
                path = r.headers["Location"]
        assert r.status == 200 and "JupyterLab" in await r.text(), (r.status, seen)
        assert seen[1].startswith("/hub/api/oauth2/authorize?client_id=jupyterhub-user-"
                                  f"{alice.name}-work&"), seen
        assert seen[2].startswith(f"/user/{alice.name}/work/oauth_callback?code="), seen
    clients = {t.client for t in await hub.app["store"].list_tokens(alice.name)}
    assert f"jupyterhub-user-{alice.name}-work" in clients, clients
    await hub.close()

    # A restarted hub whose config no longer has the lab profile adopts both servers as they
    # were started (read back from their units): the singleuser one still logs its browser
    # in itself, the notebook still gets the hub's token.
    hub = await start_hub(hub_config(spawner={"named_servers_limit": 1}))
    assert hub.app["spawner"].find(alice.name, "work").hub_oauth
    assert not hub.app["spawner"].find(alice.name).hub_oauth
    async with Browser(hub) as b:
        await b.login(alice.name, alice.password)
        assert await b.execute(alice.name, "6*7") == "42"
        async with b.request("GET", f"/user/{alice.name}/work/api/status") as r:
            assert r.status == 403, await r.text()  # no hub token handed to it: its own login
