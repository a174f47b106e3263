"""Profiles and named servers on a booted systemd, through the API, the proxy and a restart."""

import asyncio

import pytest

from appliance import units
from appliance.systemd import SERVICE

from .browser import Browser
from .conftest import cli

pytestmark = [pytest.mark.systemd, pytest.mark.pam]

GIB = 2**30


def two_profiles(group: str) -> dict:
    """A small default open to everyone and a large one for one group."""
    return {"profiles.small": {"description": "Small", "memory": "768M", "default": True},
            "profiles.large": {"description": "Large", "memory": "1G", "cpu": 1.5,
                               "groups": [group]}}


async def start(api: Browser, name: str, options=None, server: str = "") -> tuple[int, dict]:
    """POST the server with user_options; follow progress when accepted."""
    resource = f"servers/{server}" if server else "server"
    kw = {"json": options} if options is not None else {}
    async with api.request("POST", f"/hub/api/users/{name}/{resource}", **kw) as r:
        status, body = r.status, await r.json()
    if status in (201, 202):
        events = await api.progress(name, server)
        assert events[-1].get("ready"), events
    return status, body


async def model(api: Browser, name: str) -> dict:
    async with api.request("GET", f"/hub/api/users/{name}") as r:
        assert r.status == 200
        return await r.json()


async def test_profiles_by_group_through_the_api_and_across_a_restart(
        start_hub, hub_config, make_user, make_group):
    research = make_group()
    alice, bob = make_user(groups=research), make_user()
    cfg = hub_config(**two_profiles(research))
    hub = await start_hub(cfg)
    systemd = hub.app["spawner"].systemd
    async with Browser(hub, token=cli(cfg, "token", bob.name)) as b:
        status, body = await start(b, bob.name, {"profile": "large"})
        assert status == 403 and "'large'" in body["message"], body
        status, body = await start(b, bob.name, {"profile": "huge"})
        assert status == 400 and "small" in body["message"], body
        assert (await start(b, bob.name, {}))[0] in (201, 202)  # no choice: the default
        assert await systemd.unit_property(units.unit_name(bob.name), SERVICE,
                                           "MemoryMax") == 768 * 2**20
    token = cli(cfg, "token", alice.name)
    async with Browser(hub, token=token) as a:
        assert (await start(a, alice.name, {"profile": "large"}))[0] in (201, 202)
        unit = units.unit_name(alice.name)
        assert await systemd.unit_property(unit, SERVICE, "MemoryMax") == GIB
        assert await systemd.unit_property(unit, SERVICE, "CPUQuotaPerSecUSec") == 1_500_000
        assert (await model(a, alice.name))["servers"][""]["user_options"] == {
            "profile": "large"}
    await hub.close()

    hub2 = await start_hub(cfg)  # the profile is kept across the restart
    async with Browser(hub2, token=token) as a:
        assert (await model(a, alice.name))["servers"][""]["user_options"] == {
            "profile": "large"}
        async with a.request("GET", "/hub/home", headers={"Accept": "text/html"}) as r:
            assert r.status in (200, 302)


async def test_named_servers_start_proxy_limit_adopt_and_remove(start_hub, hub_config,
                                                                make_user):
    alice = make_user()
    cfg = hub_config(spawner={"named_servers_limit": 1})
    hub = await start_hub(cfg)
    token = cli(cfg, "token", alice.name)
    async with Browser(hub, token=token) as a:
        status, body = await start(a, alice.name, server="project")
        assert status in (201, 202), body
        # Its own unit, its own URL; the default server is a different one and not running.
        assert (await hub.app["spawner"].systemd.state(
            units.unit_name(alice.name, "project"))).active_state == "active"
        assert await a.execute(alice.name, "6*7", server="project") == "42"
        async with a.request("GET", f"/user/{alice.name}/api/status") as r:
            assert r.status == 424
        # A token for one server opens that one only (JupyterHub's !server= filter).
        for scope, status in ((f"access:servers!server={alice.name}/", 403),
                              (f"access:servers!server={alice.name}/project", 200)):
            async with a.request("POST", f"/hub/api/users/{alice.name}/tokens",
                                 json={"scopes": [scope]}) as r:
                narrow = (await r.json())["token"]
            async with Browser(hub, token=narrow) as n:
                async with n.request("GET", f"/user/{alice.name}/project/api/status") as r:
                    assert r.status == status, (scope, await r.text())
        servers = (await model(a, alice.name))["servers"]
        assert set(servers) == {"project"}
        assert servers["project"]["url"] == f"/user/{alice.name}/project/"
        assert servers["project"]["progress_url"].endswith("/servers/project/progress")

        status, body = await start(a, alice.name, server="second")
        assert status == 400 and "at most 1" in body["message"], body
        status, body = await start(a, alice.name, server="api")
        assert status == 400 and "cannot be a server's name" in body["message"], body
    await hub.close()

    hub2 = await start_hub(cfg)  # adopted after a restart, per server
    async with Browser(hub2, token=token) as a:
        assert await a.execute(alice.name, "6*7", server="project") == "42"
        async with a.request("DELETE", f"/hub/api/users/{alice.name}/servers/project",
                             json={"remove": True}) as r:
            assert r.status == 204
        assert (await model(a, alice.name))["servers"] == {}
        assert hub2.app["spawner"].find(alice.name, "project") is None
        async with a.request("GET", f"/hub/api/users/{alice.name}/servers/project/progress") as r:
            assert r.status == 404


async def test_named_servers_are_off_by_default(start_hub, hub_config, make_user):
    alice = make_user()
    cfg = hub_config()
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", alice.name)) as a:
        status, body = await start(a, alice.name, server="project")
        assert status == 400 and "not enabled" in body["message"], body


async def test_a_named_server_does_not_block_another_users_path(start_hub, hub_config,
                                                                make_user):
    """/user/bob/project/... is bob's default server unless bob has a server named so."""
    alice, bob = make_user(), make_user()
    cfg = hub_config(spawner={"named_servers_limit": 2})
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", alice.name)) as a, \
            Browser(hub, token=cli(cfg, "token", bob.name)) as b:
        await asyncio.gather(start(a, alice.name, server="project"), start(b, bob.name))
        async with b.request("GET", f"/user/{bob.name}/project/api/status") as r:
            assert r.status == 404  # reached bob's own Jupyter, which has no such page
        async with a.request("GET", f"/user/{bob.name}/project/api/status") as r:
            assert r.status == 403
