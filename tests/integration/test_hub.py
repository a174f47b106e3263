"""The whole path on a booted systemd: PAM login, spawn as a unit, proxy, isolation, adopt."""

import asyncio
import os
import pwd
import signal
import subprocess
from urllib.parse import quote

import pytest

from appliance import units
from appliance.systemd import SERVICE, UNIT

from .browser import Browser
from .conftest import cli

pytestmark = [pytest.mark.systemd, pytest.mark.pam]


async def spawn_via_form(browser: Browser, name: str) -> list[dict]:
    """Press 'Start my server' and follow the progress stream."""
    async with browser.request("POST", f"/hub/spawn/{name}", data={"_xsrf": browser.xsrf}) as r:
        assert r.status == 302, await r.text()
        assert r.headers["Location"].startswith(f"/hub/spawn-pending/{quote(name)}")
    return await browser.progress(name)


async def wait_for(predicate, timeout: float = 30.0) -> None:
    """Poll an async or plain predicate until true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_login_spawn_run_code_isolation_and_stop(start_hub, make_user):
    alice, bob = make_user(), make_user()
    hub = await start_hub()
    systemd = hub.app["spawner"].systemd
    unit = units.unit_name(alice.name)
    async with Browser(hub) as a, Browser(hub) as b:
        r = await a.login(alice.name, alice.password)
        assert r.status == 302 and r.headers["Location"] == "/hub/home"
        events = await spawn_via_form(a, alice.name)
        assert events[-1]["ready"] is True, events
        assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)

        # The unit runs as alice with the configured limits, in the appliance's slice.
        uid = str(pwd.getpwnam(alice.name).pw_uid)  # User= holds the uid, see units.py
        assert await systemd.unit_property(unit, SERVICE, "User") == uid
        assert await systemd.unit_property(unit, SERVICE, "MemoryMax") == 768 * 2**20
        assert await systemd.unit_property(unit, SERVICE, "MemorySwapMax") == 0
        assert await systemd.unit_property(unit, SERVICE, "CPUQuotaPerSecUSec") == 500_000
        assert await systemd.unit_property(unit, SERVICE, "TasksMax") == 200
        assert await systemd.unit_property(unit, SERVICE, "OOMPolicy") == "continue"
        assert await systemd.unit_property(unit, SERVICE, "Slice") == "notebook-appliance.slice"

        assert await a.execute(alice.name, "6*7") == "42"
        # The kernel and its server speak over UNIX sockets in the unit's own /tmp (no TCP
        # port for another user to reach, none to race for), and the kernel runs at nice 5.
        facts = ("import json, os; from ipykernel.connect import get_connection_file as f; "
                 "(json.load(open(f()))['transport'], os.path.dirname(f()), os.nice(0))")
        assert await a.execute(alice.name, facts) == repr(
            ("ipc", units.KERNEL_RUNTIME_DIR, units.SERVER_NICE))

        await b.login(bob.name, bob.password)
        async with b.request("GET", f"/user/{alice.name}/api/kernels") as r:
            assert r.status == 403
            assert b"kernel" not in await r.read()
        async with b.request("GET", f"/user/{alice.name}/tree",
                             headers={"Accept": "text/html"}) as r:
            assert r.status == 403

        async with a.request("POST", f"/hub/stop/{alice.name}", data={"_xsrf": a.xsrf}) as r:
            assert r.status == 302
        assert (await systemd.state(unit)).active_state == "inactive"
        async with a.request("GET", f"/user/{alice.name}/api/kernels") as r:
            assert r.status == 424
        async with a.request("GET", f"/user/{alice.name}/tree",
                             headers={"Accept": "text/html"}) as r:
            assert r.status == 302
            assert r.headers["Location"].startswith(f"/hub/spawn/{alice.name}")


async def test_server_secret_is_not_visible_to_other_users(start_hub, make_user):
    alice, bob = make_user(), make_user()
    hub = await start_hub()
    async with Browser(hub) as a:
        await a.login(alice.name, alice.password)
        assert (await spawn_via_form(a, alice.name))[-1]["ready"]
    server = hub.app["spawner"].get(alice.name)
    show = subprocess.run(["systemctl", "show", server.unit], capture_output=True, text=True)
    assert server.token not in show.stdout
    pid = await hub.app["spawner"].systemd.unit_property(server.unit, SERVICE, "MainPID")
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert server.token.encode() not in f.read()
    # The server has it as $JUPYTERHUB_API_TOKEN (JupyterHub's tools read it there, put by
    # secretenv.py from the file), which only alice (and root) can read in /proc.
    with open(f"/proc/{pid}/environ", "rb") as f:
        assert f"JUPYTERHUB_API_TOKEN={server.token}".encode() in f.read()
    # bob can neither read the token file nor alice's server's environment, nor connect to
    # alice's socket.
    probe = ("import socket,sys; s=socket.socket(socket.AF_UNIX);"
             f"s.connect({str(server.paths.socket)!r})")
    for argv in (["cat", str(server.paths.token_file)], ["cat", f"/proc/{pid}/environ"],
                 ["python3", "-c", probe]):
        denied = subprocess.run(["runuser", "-u", bob.name, "--", *argv], capture_output=True)
        assert denied.returncode != 0
    assert os.stat(server.paths.directory).st_mode & 0o777 == 0o700


async def test_api_token_spawn_and_restart_adopts_without_respawn(start_hub, hub_config,
                                                                 make_user):
    alice = make_user()
    cfg = hub_config()
    hub1 = await start_hub(cfg)
    token = cli(cfg, "token", alice.name)
    unit = units.unit_name(alice.name)
    async with Browser(hub1, token=token) as api:
        async with api.request("POST", f"/hub/api/users/{alice.name}/server") as r:
            assert r.status in (201, 202), await r.text()
        await api.progress(alice.name)
        async with api.request("GET", f"/hub/api/users/{alice.name}") as r:
            model = await r.json()
        assert model["name"] == alice.name and model["server"] == f"/user/{alice.name}/"
        assert model["servers"][""]["ready"] is True
        await asyncio.sleep(0.1)  # in use a moment after it was ready
        async with api.request("GET", f"/user/{alice.name}/api/status") as r:
            assert r.status == 200
    used = hub1.app["spawner"].get(alice.name).last_activity
    systemd = hub1.app["spawner"].systemd
    pid = await systemd.unit_property(unit, SERVICE, "MainPID")
    invocation = await systemd.unit_property(unit, UNIT, "InvocationID")
    await hub1.close()

    hub2 = await start_hub(cfg)
    # What the proxy saw last before the restart is kept (the culler's idle time).
    assert hub2.app["spawner"].get(alice.name).last_activity == pytest.approx(used, abs=1e-3)
    async with Browser(hub2, token=token) as api:
        async with api.request("GET", f"/user/{alice.name}/api/status") as r:
            assert r.status == 200, await r.text()
        assert await api.execute(alice.name, "6*7") == "42"
    systemd2 = hub2.app["spawner"].systemd
    assert await systemd2.unit_property(unit, SERVICE, "MainPID") == pid
    assert await systemd2.unit_property(unit, UNIT, "InvocationID") == invocation
    # The adopted server is an OAuth client of the new hub again, and its token (derived
    # from the hub's secret: the same one its process holds) still works.
    server = hub2.app["spawner"].get(alice.name)
    assert hub2.app["oauth_clients"].get(f"jupyterhub-user-{alice.name}") is not None
    async with Browser(hub2, token=server.token) as own:
        async with own.request("GET", "/hub/api/user") as r:
            assert (await r.json())["name"] == alice.name
    # Stopped, both are gone.
    await hub2.app["spawner"].stop(alice.name)
    assert hub2.app["oauth_clients"].get(f"jupyterhub-user-{alice.name}") is None
    async with Browser(hub2, token=server.token) as own:
        async with own.request("GET", "/hub/api/user") as r:
            assert r.status == 403


async def test_python_m_jupyter_server_works_as_the_command(start_hub, hub_config, make_user):
    alice = make_user()
    cfg = hub_config(spawner={"command": ["python3", "-m", "jupyter_server"],
                              "default_url": "/api/status"})
    hub = await start_hub(cfg)
    token = cli(cfg, "token", alice.name)
    async with Browser(hub, token=token) as api:
        async with api.request("POST", f"/hub/api/users/{alice.name}/server") as r:
            assert r.status in (201, 202), await r.text()
        events = await api.progress(alice.name)
        assert events[-1].get("ready") is True, events
        assert await api.execute(alice.name, "6*7") == "42"
    argv = await hub.app["spawner"].systemd.unit_property(
        units.unit_name(alice.name), SERVICE, "ExecStart")
    # The command after secretenv.py's "--" (units.SECRETENV puts the token in its env).
    command = argv[0][1][argv[0][1].index("--") + 1:]
    assert command[1:3] == ["-m", "jupyter_server"]


async def test_server_that_dies_is_noticed_and_explained(start_hub, make_user):
    alice = make_user()
    hub = await start_hub()
    spawner = hub.app["spawner"]
    async with Browser(hub) as a:
        await a.login(alice.name, alice.password)
        assert (await spawn_via_form(a, alice.name))[-1]["ready"]
        server = spawner.get(alice.name)
        pid = await spawner.systemd.unit_property(server.unit, SERVICE, "MainPID")
        os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: server.state == "stopped", timeout=10)
        assert "signal 9" in server.message
        async with a.request("GET", "/hub/home") as r:
            assert "signal 9" in await r.text()


async def test_server_that_cannot_start_fails_with_a_reason(start_hub, hub_config, make_user):
    alice = make_user()
    hub = await start_hub(hub_config(spawner={"command": ["python3", "-c", "raise SystemExit(3)"]}))
    async with Browser(hub) as a:
        await a.login(alice.name, alice.password)
        events = await spawn_via_form(a, alice.name)
    assert events[-1]["failed"] is True
    assert "status 3" in events[-1]["message"]
    assert hub.app["spawner"].get(alice.name).state == "stopped"


async def test_hub_stopped_mid_spawn_finishes_the_spawn_after_restart(start_hub, hub_config,
                                                                     make_user):
    alice = make_user()
    cfg = hub_config()
    hub1 = await start_hub(cfg)
    token = cli(cfg, "token", alice.name)
    account = await hub1.app["auth"].account(alice.name)
    spawner = hub1.app["spawner"]
    server = await spawner.start(units.Owner(account.name, account.uid, account.gid,
                                             account.home, account.shell))
    # Stop the hub once the unit runs but before Jupyter answers on its socket.
    await wait_for(lambda: server.progress.events[-1]["progress"] >= 50, timeout=30)
    assert not server.ready
    await hub1.close()
    hub2 = await start_hub(cfg)
    async with Browser(hub2, token=token) as api:
        events = await api.progress(alice.name)
        assert events[-1].get("ready") is True, events
        async with api.request("GET", f"/user/{alice.name}/api/status") as r:
            assert r.status == 200
