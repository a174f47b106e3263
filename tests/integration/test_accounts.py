"""Sessions, tokens and servers follow the OS account (issue 8, part 5), on a real hub with
real accounts: `usermod -L -e 1` ends them all within one re-check; tokens expire, are listed
and revoked with the CLI."""

import asyncio
import subprocess

import pytest

from .browser import Browser
from .conftest import cli, run
from .test_hub import spawn_via_form, wait_for

pytestmark = [pytest.mark.systemd, pytest.mark.pam]

RECHECK = "2s"


async def who(browser: Browser) -> int:
    """The status of GET /hub/api/user for this browser's cookie or token."""
    async with browser.request("GET", "/hub/api/user") as r:
        return r.status


def a_session(browser: Browser) -> str:
    """The session cookie's value."""
    return next(c.value for c in browser.session.cookie_jar if c.key == "appliance-session")


async def test_a_locked_expired_account_loses_session_token_and_server(start_hub, hub_config,
                                                                        make_user):
    alice, bob = make_user(), make_user()
    cfg = hub_config(auth={"recheck_every": RECHECK})
    hub = await start_hub(cfg)
    spawner = hub.app["spawner"]
    async with Browser(hub) as a, Browser(hub, token=cli(cfg, "token", alice.name)) as t, \
            Browser(hub) as b:
        await a.login(alice.name, alice.password)
        await b.login(bob.name, bob.password)
        assert (await spawn_via_form(a, alice.name))[-1]["ready"]
        assert await who(a) == 200 and await who(t) == 200 and await who(b) == 200
        unit = spawner.get(alice.name).unit

        run("usermod", "-L", "-e", "1", alice.name)
        loop = asyncio.get_running_loop()
        locked = loop.time()
        await wait_for(lambda: spawner.get(alice.name).state == "stopped", timeout=60)
        print(f"server stopped {loop.time() - locked:.1f} s after usermod -L -e 1")
        assert await who(a) in (401, 403), "the session still works"
        assert await who(t) in (401, 403), "the token still works"
        assert "account was locked" in spawner.get(alice.name).message
        active = subprocess.run(["systemctl", "is-active", f"{unit}"],
                                capture_output=True, text=True).stdout.strip()
        assert active in ("inactive", "unknown"), active
        async with a.request("GET", "/hub/home") as r:
            assert r.status == 302 and r.headers["Location"].startswith("/hub/login")
        assert await hub.app["store"].session_user(a_session(a)) is None, "session kept"
        # Nobody else was touched.
        assert await who(b) == 200


async def test_tokens_expire_and_are_listed_and_revoked_with_the_cli(start_hub, hub_config,
                                                                     make_user):
    carol = make_user()
    cfg = hub_config()
    hub = await start_hub(cfg)
    brief = cli(cfg, "token", carol.name, "--expires-in", "3s", "--note", "for one lesson")
    kept = cli(cfg, "token", carol.name, "--note", "culler")
    listing = cli(cfg, "token", "--list", carol.name)
    print(listing)
    lines = listing.splitlines()
    assert lines[0].split()[:2] == ["ID", "CREATED"] and len(lines) == 3
    assert lines[1].endswith("for one lesson") and lines[2].endswith("culler")
    assert lines[2].split()[-2] == "-", "a token without expiry says so"
    async with Browser(hub, token=brief) as b, Browser(hub, token=kept) as k:
        assert await who(b) == 200
        await asyncio.sleep(3.5)
        hub.app["identities"].forget_user(carol.name)  # no waiting out the identity cache
        assert await who(b) in (401, 403), "an expired token still works"
        assert await who(k) == 200
        kept_id = lines[2].split()[0]
        assert cli(cfg, "token", "--revoke", kept_id).startswith(f"revoked token {kept_id}")
        hub.app["identities"].forget_user(carol.name)
        assert await who(k) in (401, 403), "a revoked token still works"
    bad = subprocess.run(["python3", "-m", "appliance", "--config", cfg.source, "token",
                          "--revoke", "9999"], capture_output=True, text=True)
    assert bad.returncode == 1 and "no token with id 9999" in bad.stderr
    bad = subprocess.run(["python3", "-m", "appliance", "--config", cfg.source, "token",
                          carol.name, "--expires-in", "soon"], capture_output=True, text=True)
    assert bad.returncode == 2 and "duration" in bad.stderr
