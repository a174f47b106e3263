"""The real jupyterhub-idle-culler (PyPI, unmodified: tests/infra/pypi-tools.sh builds its
venv with the host's pip, tests/run binds it in) as a managed service (issue 9), configured
as a sysadmin would (README "Works with"): [services.idle-culler] with its command and a role
with only its documented scopes. The hub runs it as a unit with its own token; it culls an
idle server, leaves an active one, removes an idle user from the hub with --cull-users (never
from the machine), and its token cannot open a student's server, even though the admin
(with auth.admin_access) could."""

import asyncio
import json
import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest

from appliance import serviceunits

from .browser import Browser
from .conftest import cli
from .test_hub import wait_for
from .test_restapi import refused

pytestmark = [pytest.mark.systemd, pytest.mark.pam]

#: The venv with jupyterhub-idle-culler 2.0.0 (what issue 9 was tried with).
TOOLS = os.environ.get("APPLIANCE_PYPI_TOOLS", "")
#: Its README's scopes, and admin:users for --cull-users.
SCOPES = ("list:users", "read:users:activity", "read:servers", "delete:servers",
          "admin:users")
TIMEOUT = 10
#: The service's name, as the README's example has it.
CULLER = "idle-culler"


async def start(api: Browser, name: str) -> None:
    """Start name's server and follow it to ready."""
    async with api.request("POST", f"/hub/api/users/{name}/server") as r:
        assert r.status in (201, 202), await r.text()
    assert (await api.progress(name))[-1]["ready"]


async def keep_busy(api: Browser, name: str) -> None:
    """Use one's server through the hub, a request a second, until cancelled."""
    while True:
        async with api.request("GET", f"/user/{name}/api/status") as r:
            assert r.status == 200, await r.text()
        await asyncio.sleep(1)


def culler_config(python: Path) -> str:
    """What the README tells a sysadmin to add: the service, and a role with its scopes."""
    argv = [str(python), "-m", "jupyterhub_idle_culler", f"--timeout={TIMEOUT}",
            "--cull-every=2", "--cull-users=true", "--cull-admin-users=false"]
    return (f"[services.{CULLER}]\ncommand = {json.dumps(argv)}\n"
            f"[roles.{CULLER}]\nscopes = {json.dumps(list(SCOPES))}\n"
            f'services = ["{CULLER}"]\n')


@pytest.mark.skipif(not TOOLS, reason="no APPLIANCE_PYPI_TOOLS: run tests/run, which builds "
                    "them with tests/infra/pypi-tools.sh")
async def test_the_real_idle_culler_as_a_managed_service(start_hub, hub_config, make_user):
    teacher, idle, busy = make_user(), make_user(), make_user()
    python = Path(TOOLS) / "venv" / "bin" / "python"
    unit = serviceunits.unit_name(CULLER)
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    cfg = hub_config(auth={"admin_users": [teacher.name], "admin_access": True},
                     culler={"enabled": False},  # ours is off: theirs does the work
                     extra_toml=culler_config(python))
    # The unit starts with the hub; its servers start after it, so it is idle at first.
    hub = await start_hub(cfg)
    store, spawner = hub.app["store"], hub.app["spawner"]
    assert systemctl("is-active", unit) == "active"
    async with Browser(hub, token=cli(cfg, "token", teacher.name)) as admin, \
            Browser(hub, token=cli(cfg, "token", busy.name)) as student:
        await asyncio.gather(start(admin, idle.name), start(admin, busy.name))
        working = asyncio.create_task(keep_busy(student, busy.name))
        try:
            async def idle_gone():
                assert systemctl("is-active", unit) == "active", "the culler stopped:\n" + (
                    journal_since(unit, since))
                return await store.get_user(idle.name) is None
            try:
                await wait_for(idle_gone, timeout=TIMEOUT + 60)
            except AssertionError:
                raise AssertionError("the idle user was not culled; the culler said:\n"
                                     + journal_since(unit, since)) from None
            await asyncio.sleep(2 * 2)  # two more rounds: the busy one must survive them
            assert not working.done(), working.exception()  # it used its server throughout
        finally:
            working.cancel()
        culled_log = journal_since(unit, since)
        assert spawner.get(idle.name).state == "stopped"
        assert spawner.get(busy.name).ready, culled_log
        assert await store.get_user(busy.name) is not None, culled_log
        assert await store.get_user(teacher.name) is not None, "--cull-admin-users=false"
        assert f"Culling server {idle.name}" in culled_log
        assert f"Culling user {idle.name}" in culled_log
        assert "Error processing" not in culled_log and "Traceback" not in culled_log, culled_log
        assert pwd.getpwnam(idle.name), "the OS account went with the hub user"

        # The culler's token (the hub made it; only root and the unit can read it) holds its
        # role's scopes and nothing more: it cannot open a student's server; the admin can.
        token = hub.app["services"].token_file(CULLER).read_text()
        assert token not in culled_log and token not in systemctl("show", unit)
        async with Browser(hub, token=token) as culler:
            async with culler.request("GET", "/hub/api/user") as r:
                me = await r.json()
            assert (me["kind"], me["name"]) == ("service", CULLER)
            assert "list:users" in me["scopes"] and "access:servers" not in me["scopes"]
            async with culler.request("GET", f"/user/{busy.name}/api/status") as r:
                assert r.status == 403
                assert (await r.json())["message"] == refused("access:servers")
        async with admin.request("GET", f"/user/{busy.name}/api/status") as r:
            assert r.status == 200


def systemctl(*args: str) -> str:
    """systemctl's answer, stripped (the test may; the hub never does)."""
    return subprocess.run(["systemctl", *args], capture_output=True, text=True).stdout.strip()


def journal_since(unit: str, since: str) -> str:
    """What unit wrote to the journal since this test began."""
    subprocess.run(["journalctl", "--sync"], capture_output=True)
    return subprocess.run(["journalctl", "-u", unit, "-o", "cat", "--no-pager",
                           "--since", since], capture_output=True, text=True).stdout
