"""The hub's pages in a real browser: headless Debian Chromium against a real hub and PAM.

Each browser runs in a worker thread (its calls block) while the hub serves on the test's
event loop. Screenshots go to $APPLIANCE_SCREENSHOT_DIR, else $APPLIANCE_ARTIFACTS (which
tests/infra/nspawn.sh sets to a writable bind mount), else the test's tmp_path:

    APPLIANCE_ARTIFACTS=$PWD/docs tests/run tests/integration/test_ui.py

refreshes docs/screenshot-home.png (and the others: profiles, named, tokens).
"""

import asyncio
import calendar
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("selenium", reason="python3-selenium is missing (see "
                    "tests/infra/rootfs-packages.txt)")

from appliance import units  # noqa: E402

from .browser import Browser  # noqa: E402
from .chromium import Page, missing  # noqa: E402
from .conftest import OSUser  # noqa: E402

pytestmark = [pytest.mark.systemd, pytest.mark.pam]

SPAWN_TIMEOUT = 120


@pytest.fixture
def shots(tmp_path) -> Path:
    """Where screenshots go (see the module docstring)."""
    where = os.environ.get("APPLIANCE_SCREENSHOT_DIR") or os.environ.get("APPLIANCE_ARTIFACTS")
    return Path(where) if where else tmp_path


@pytest.fixture
def chromium(tmp_path):
    """Factory: chromium(hub) -> a Page with a fresh profile; every browser quits at the end."""
    if why := missing():
        pytest.skip(why)
    pages = []

    def _open(hub) -> Page:
        page = Page(str(hub.make_url("")), tmp_path / f"profile-{len(pages)}")
        pages.append(page)
        return page

    yield _open
    for page in pages:
        page.quit()


def log_in(page: Page, user: OSUser, password: str | None = None) -> None:
    """Fill in and submit the login form on the current page."""
    page.fill("#username", user.name)
    page.fill("#password", password or user.password)
    page.button("Log in").click()


def wrong_password_keeps_the_username(page: Page, user: OSUser) -> None:
    """(a) /hub/home sends a stranger to the login form, which refuses a bad password kindly."""
    page.open("/hub/home")
    assert page.wait_for_path("/hub/login") == "/hub/login?next=/hub/home"
    log_in(page, user, password="not-" + user.password)
    # PAM's fail delay: a refusal takes seconds.
    page.wait_for(lambda p: p.text("p.error"), timeout=15, what="login error")
    assert page.text("p.error") == "Invalid username or password."
    assert page.find("#username").get_attribute("value") == user.name
    assert page.find("#password").get_attribute("value") == ""
    assert page.driver.switch_to.active_element.get_attribute("id") == "password"


def home_shows_stopped_and_limits(page: Page, user: OSUser) -> None:
    """(b) The right password leads home: stopped, with the memory limit."""
    log_in(page, user)
    page.wait_for_path("/hub/home")
    assert page.text(".facts dd.state") == "stopped"
    assert "768 MiB" in page.text(".facts")
    assert page.text("nav .who") == user.name


def start_and_land_on_the_tree(page: Page, user: OSUser) -> list[float]:
    """(c) Start: the pending page's bar moves, then the browser is in Jupyter's tree."""
    page.button("Start my server").click()
    page.wait_for(lambda p: p.path.startswith(f"/hub/spawn-pending/{user.name}")
                  or p.path.startswith(f"/user/{user.name}/"), what="spawn-pending page")
    page.wait_for_path(f"/user/{user.name}/tree", timeout=SPAWN_TIMEOUT)
    assert page.driver.title == "Home Page - Select or create a notebook"
    assert page.all("#ipython-main-app") and page.all("#new-buttons")
    # Jupyter's own script lists the (fresh, only dotfiles) home over its API, via the proxy.
    page.wait_for(lambda p: p.all("#notebook_list .list_item"), what="Jupyter's file list")
    assert "The notebook list is empty." in page.text("#notebook_list")
    return page.progress_seen()


def home_running_then_stop(page: Page, user: OSUser, shots: Path) -> None:
    """(d) Home says running and links the server; stopping leads back to stopped."""
    page.open("/hub/home")
    page.wait_for_path("/hub/home")
    assert page.text(".facts dd.state") == "running"
    open_link, stop = page.link("Open my server"), page.button("Stop my server")
    assert open_link.get_attribute("href").endswith(f"/user/{user.name}/")
    assert open_link.size["height"] == stop.size["height"], "side-by-side buttons differ"
    page.screenshot(shots / "screenshot-home.png")
    stop.click()
    page.wait_for(lambda p: p.text(".facts dd.state") == "stopped", timeout=30,
                  what="state stopped")
    assert page.button("Start my server")


def log_out(page: Page) -> None:
    """(e) Log out leads to the login form, and home needs a login again."""
    page.button("Log out").click()  # a POST: a link elsewhere cannot log anyone out
    page.wait_for_path("/hub/login")
    assert page.all("#username") and not page.all("nav .who")
    page.open("/hub/home")
    assert page.wait_for_path("/hub/login").startswith("/hub/login?next=")


def walk_through(page: Page, user: OSUser, shots: Path) -> list[float]:
    """The whole visit, in the order a person makes it."""
    wrong_password_keeps_the_username(page, user)
    home_shows_stopped_and_limits(page, user)
    progress = start_and_land_on_the_tree(page, user)
    home_running_then_stop(page, user, shots)
    log_out(page)
    return progress


async def test_log_in_start_open_stop_log_out(start_hub, make_user, chromium, shots):
    alice = make_user()
    hub = await start_hub()
    page = await asyncio.to_thread(chromium, hub)
    progress = await asyncio.to_thread(walk_through, page, alice, shots)
    # The bar moved: it took at least one value between empty and full, in order.
    assert any(0 < value < 100 for value in progress), progress
    assert progress == sorted(progress), progress
    assert hub.app["spawner"].get(alice.name).state == "stopped"


def stranger_is_turned_away(page: Page, intruder: OSUser, owner: str) -> None:
    """(f) Another user's server answers with the hub's 403 page, never Jupyter."""
    page.open("/hub/login")
    log_in(page, intruder)
    page.wait_for_path("/hub/home")
    page.open(f"/user/{owner}/tree")
    page.wait_for(lambda p: p.all("p.error"), what="error page")
    assert page.text("p.error") == "This is not your server."
    assert page.text("h1") == "Not allowed"
    assert page.driver.title.startswith("Error 403")
    assert not page.all("#notebook_list") and "Jupyter" not in page.driver.page_source


async def test_other_users_server_shows_the_403_page(start_hub, make_user, chromium):
    alice, bob = make_user(), make_user()
    hub = await start_hub()
    spawner = hub.app["spawner"]
    account = await hub.app["auth"].account(alice.name)
    await hub.app["store"].ensure_user(account.name, account.admin)  # as a login would
    await spawner.start(units.Owner(account.name, account.uid, account.gid, account.home,
                                    account.shell))
    await asyncio.wait_for(wait_ready(spawner.get(alice.name)), SPAWN_TIMEOUT)
    page = await asyncio.to_thread(chromium, hub)
    await asyncio.to_thread(stranger_is_turned_away, page, bob, alice.name)


async def wait_ready(server) -> None:
    """Until the server answers (or fail when it stopped)."""
    while not server.ready:
        assert server.state != "stopped", server.message
        await asyncio.sleep(0.1)


def waits_in_line_then_lands_on_the_tree(page: Page, user: OSUser) -> str:
    """(g) With the only launch slot taken, the pending page says the place in line in
    words; when the slot frees, the browser goes on into Jupyter."""
    page.button("Start my server").click()
    page.wait_for(lambda p: "in line" in p.text("#message"), timeout=20, what="place in line")
    said = page.text("#message")
    page.wait_for_path(f"/user/{user.name}/tree", timeout=SPAWN_TIMEOUT)
    return said


async def test_the_pending_page_shows_the_place_in_line(start_hub, hub_config, make_user,
                                                       chromium):
    alice, bob = make_user(), make_user()
    # One launch at a time, and each launch takes a few seconds: bob waits behind alice.
    slow = ["sh", "-c", 'sleep 4; exec jupyter-notebook "$@"', "sh"]
    hub = await start_hub(hub_config(spawner={"concurrent_spawns": 1, "command": slow}))
    page = await asyncio.to_thread(chromium, hub)
    await asyncio.to_thread(page.open, "/hub/login")
    await asyncio.to_thread(log_in, page, bob)
    await asyncio.to_thread(page.wait_for_path, "/hub/home")
    spawner = hub.app["spawner"]
    account = await hub.app["auth"].account(alice.name)
    await hub.app["store"].ensure_user(account.name, account.admin)
    await spawner.start(units.Owner(account.name, account.uid, account.gid, account.home,
                                    account.shell))
    said = await asyncio.to_thread(waits_in_line_then_lands_on_the_tree, page, bob)
    assert said.startswith("You are 1st in line; about "), said
    assert spawner.get(alice.name).ready and spawner.get(bob.name).ready


def choose_a_profile_then_make_a_named_server(page: Page, user: OSUser, shots: Path) -> None:
    """(h) Two profiles: the spawn page offers both with their sizes; the chosen one shows
    on the home page. Then the home page's form makes and starts a named server."""
    page.open("/hub/login")
    log_in(page, user)
    page.wait_for_path("/hub/home")
    page.link("Choose and start my server").click()
    page.wait_for_path(f"/hub/spawn/{user.name}")
    labels = [" ".join(e.text.split()) for e in page.all("fieldset.profiles label")]
    assert labels == ["Small 768 MiB, 0.5 cores", "Large 1 GiB, 1 core"], labels
    assert page.find("input[value=small]").is_selected()
    page.find("input[value=large]").click()
    page.screenshot(shots / "screenshot-profiles.png")
    page.button("Start server").click()
    page.wait_for_path(f"/user/{user.name}/tree", timeout=SPAWN_TIMEOUT)
    page.open("/hub/home")
    page.wait_for_path("/hub/home")
    assert page.text(".facts dd.profile") == "Large"
    assert "1 GiB" in page.text(".facts")

    page.fill("#server_name", "project")
    page.button("Create and start").click()
    page.wait_for_path(f"/user/{user.name}/project/tree", timeout=SPAWN_TIMEOUT)
    page.open("/hub/home")
    page.wait_for_path("/hub/home")
    assert page.text("tr.named-server[data-name=project] td.state") == "running"
    page.screenshot(shots / "screenshot-named.png")


async def test_profiles_on_the_spawn_page_and_a_named_server_from_home(
        start_hub, hub_config, make_user, make_group, chromium, shots):
    research = make_group()
    alice = make_user(groups=research)
    hub = await start_hub(hub_config(**{
        "spawner": {"named_servers_limit": 1},
        "profiles.small": {"description": "Small", "memory": "768M", "cpu": 0.5,
                           "default": True},
        "profiles.large": {"description": "Large", "memory": "1G", "cpu": 1,
                           "groups": [research]}}))
    page = await asyncio.to_thread(chromium, hub)
    await asyncio.to_thread(choose_a_profile_then_make_a_named_server, page, alice, shots)
    spawner = hub.app["spawner"]
    assert spawner.get(alice.name).profile.name == "large"
    assert spawner.find(alice.name, "project").ready


def request_a_token(page: Page, user: OSUser, note: str, shots: Path) -> tuple[str, str]:
    """(i) From home, the nav's Token page: a note and 1 day give a token shown once, with
    its row in the list; returns the token and its id."""
    page.open("/hub/login")
    log_in(page, user)
    page.wait_for_path("/hub/home")
    page.link("Token").click()
    page.wait_for_path("/hub/token")
    page.fill("#note", note)
    page.find("#expiry option[value='1d']").click()
    page.button("Request new token").click()
    page.wait_for(lambda p: p.all("#token-secret"), what="the new token")
    assert "it will not be shown again" in page.text("#new-token")
    [row] = page.all("tr.token")
    assert row.find_element("css selector", "td.note").text == note
    assert row.find_element("css selector", "td.last-used").text == "never"
    expires = row.find_element("css selector", "td.expires").text
    in_a_day = time.time() + 86400
    shown = calendar.timegm(time.strptime(expires, "%Y-%m-%d %H:%M"))  # the page says UTC
    assert abs(shown - in_a_day) < 600, (expires, in_a_day)
    page.screenshot(shots / "screenshot-tokens.png", whole=True)
    return page.text("#token-secret"), row.get_attribute("data-id")


def reload_then_revoke(page: Page, secret: str, token_id: str, note: str) -> None:
    """(j) Loaded again, the page no longer shows the token but lists it, used; Revoke
    says so in words and the row goes."""
    page.open("/hub/token")
    page.wait_for_path("/hub/token")
    assert not page.all("#token-secret") and secret not in page.driver.page_source
    row = page.find(f"tr.token[data-id='{token_id}']")
    assert row.find_element("css selector", "td.last-used").text != "never"
    row.find_element("css selector", "button").click()
    page.wait_for(lambda p: p.text("#token-message"), what="revocation message")
    assert page.text("#token-message") == f"Revoked the token “{note}”: it no longer works."
    assert not page.all("tr.token") and "You have no tokens." in page.text("#tokens")


async def status_with(hub, token: str) -> int:
    """GET /hub/api/user with the token, from Python: its status (the name on a 200)."""
    async with Browser(hub, token=token) as api:
        async with api.request("GET", "/hub/api/user") as r:
            return (await r.json())["name"] if r.status == 200 else r.status


async def test_a_token_from_the_page_works_once_shown_then_revoked(start_hub, make_user,
                                                                  chromium, shots):
    alice = make_user()
    hub = await start_hub()
    page = await asyncio.to_thread(chromium, hub)
    note = "grading script"
    secret, token_id = await asyncio.to_thread(request_a_token, page, alice, note, shots)
    assert await status_with(hub, secret) == alice.name
    await asyncio.to_thread(reload_then_revoke, page, secret, token_id, note)
    assert await status_with(hub, secret) in (401, 403)
