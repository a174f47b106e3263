"""The real jupyterhub-idle-culler (PyPI, unmodified: tests/infra/pypi-tools.sh builds its
venv with the host's pip, tests/run binds it in) against a hub with real servers (issue 9):
with a token holding only its documented scopes it culls an idle server, leaves an active
one, removes an idle user from the hub with --cull-users (never from the machine), and that
token cannot open a student's server, even though its owner, an admin with
auth.admin_access, could."""

import asyncio
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from .browser import Browser
from .conftest import cli
from .test_hub import wait_for
from .test_restapi import new_token, refused

pytestmark = [pytest.mark.systemd, pytest.mark.pam]

#: The venv with jupyterhub-idle-culler 2.0.0 (what issue 9 was tried with).
TOOLS = os.environ.get("APPLIANCE_PYPI_TOOLS", "")
#: Its README's scopes, and admin:users for --cull-users.
SCOPES = ("list:users", "read:users:activity", "read:servers", "delete:servers",
          "admin:users")
TIMEOUT = 10


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


@pytest.mark.skipif(not TOOLS, reason="no APPLIANCE_PYPI_TOOLS: run tests/run, which builds "
                    "them with tests/infra/pypi-tools.sh")
async def test_the_real_idle_culler_with_only_its_scopes(start_hub, hub_config, make_user,
                                                        tmp_path):
    teacher, idle, busy = make_user(), make_user(), make_user()
    cfg = hub_config(auth={"admin_users": [teacher.name], "admin_access": True},
                     culler={"enabled": False})  # ours is off: theirs does the work
    loop = asyncio.get_running_loop()
    python = Path(TOOLS) / "venv" / "bin" / "python"
    hub = await start_hub(cfg)
    store, spawner = hub.app["store"], hub.app["spawner"]
    log_path = tmp_path / "culler.log"
    async with Browser(hub, token=cli(cfg, "token", teacher.name)) as admin, \
            Browser(hub, token=cli(cfg, "token", busy.name)) as student:
        await asyncio.gather(start(admin, idle.name), start(admin, busy.name))
        working = asyncio.create_task(keep_busy(student, busy.name))
        token = await new_token(admin, teacher.name, *SCOPES)
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [str(python), "-m", "jupyterhub_idle_culler", f"--url={hub.make_url('/hub/api')}",
                 f"--timeout={TIMEOUT}", "--cull-every=2", "--cull-users=true",
                 "--cull-admin-users=false"],
                env={"PATH": os.environ["PATH"], "JUPYTERHUB_API_TOKEN": token},
                cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        try:
            async def idle_gone():
                assert proc.poll() is None, "the culler exited:\n" + log_path.read_text()
                return await store.get_user(idle.name) is None
            try:
                await wait_for(idle_gone, timeout=TIMEOUT + 60)
            except AssertionError:
                raise AssertionError("the idle user was not culled; the culler said:\n"
                                     + log_path.read_text()) from None
            await asyncio.sleep(2 * 2)  # two more rounds: the busy one must survive them
            assert not working.done(), working.exception()  # it used its server throughout
        finally:
            proc.terminate()
            await loop.run_in_executor(None, proc.wait, 30)
            working.cancel()
        culled_log = log_path.read_text()
        assert spawner.get(idle.name).state == "stopped"
        assert spawner.get(busy.name).ready, culled_log
        assert await store.get_user(busy.name) is not None, culled_log
        assert await store.get_user(teacher.name) is not None, "--cull-admin-users=false"
        assert f"Culling server {idle.name}" in culled_log
        assert f"Culling user {idle.name}" in culled_log
        assert "Error processing" not in culled_log and "Traceback" not in culled_log, culled_log
        assert pwd.getpwnam(idle.name), "the OS account went with the hub user"

        # The culler's token cannot open a student's server; its owner's own token can.
        async with Browser(hub, token=token) as culler:
            async with culler.request("GET", f"/user/{busy.name}/api/status") as r:
                assert r.status == 403
                assert (await r.json())["message"] == refused("access:servers")
        async with admin.request("GET", f"/user/{busy.name}/api/status") as r:
            assert r.status == 200
