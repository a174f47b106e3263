"""JupyterHub services (issue 9, part 4) against a booted systemd: managed services run as
transient units with JupyterHub's environment and a token nobody else sees, are reached at
/services/<name>/ (a loopback port or a UNIX socket), are adopted across a hub restart,
restarted when their config changes or they die, stopped when removed; external services'
tokens; the services API."""

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import serviceunits
from appliance.services import listening_uids
from tests.ports import free_port

from .browser import Browser
from .conftest import cli
from .test_hub import wait_for
from .test_restapi import refused

pytestmark = [pytest.mark.systemd, pytest.mark.pam]

ECHO = Path(__file__).with_name("echo_service.py")


def echo_service(name: str, url: str, extra: str = "") -> str:
    """The [services.<name>] table of the echo service at url."""
    return (f'[services.{name}]\ncommand = ["{sys.executable}", "{ECHO}"]\nurl = "{url}"\n'
            f"oauth = true\n{extra}")


def systemctl(*args: str) -> str:
    """systemctl's output (the tests may; the hub never does)."""
    return subprocess.run(["systemctl", *args], capture_output=True, text=True).stdout


def journal(unit: str) -> str:
    """Everything the journal holds for unit, every field."""
    subprocess.run(["journalctl", "--sync"], capture_output=True)
    return subprocess.run(["journalctl", "-u", unit, "-o", "verbose", "--no-pager"],
                          capture_output=True, text=True).stdout


def main_pid(unit: str) -> int:
    return int(systemctl("show", "-P", "MainPID", unit).strip() or 0)


async def echo_env(api: Browser, name: str, **kw) -> dict:
    """The echo service's answer through the hub's proxy, once it answers."""
    answer = {}

    async def answers():
        async with api.request("GET", f"/services/{name}/env", **kw) as r:
            if r.status == 200:
                answer.update(await r.json())
            return r.status == 200
    await wait_for(answers, timeout=60)
    return answer


async def test_a_managed_service_has_jupyterhubs_environment_and_a_secret_token(
        start_hub, hub_config, make_user):
    tcp, sock = f"echo-{secrets.token_hex(3)}", f"echo-{secrets.token_hex(3)}"
    sock_url = f"unix:/run/{serviceunits.UNIT_PREFIX}{sock}/web.sock"
    teacher, student = make_user(), make_user()
    cfg = hub_config(auth={"admin_users": [teacher.name]}, extra_toml=(
        echo_service(tcp, f"http://127.0.0.1:{free_port()}")
        + echo_service(sock, sock_url, 'scopes = ["read:hub"]\n')
        + f'[roles.readers]\nscopes = ["list:users"]\nservices = ["{tcp}"]\n'))
    hub = await start_hub(cfg)
    api_url = str(hub.make_url("/hub/api"))
    async with Browser(hub) as anonymous:
        # Through the hub with no login (JupyterHub's proxy asks none): the service decides.
        seen = await echo_env(anonymous, tcp, headers={
            "Authorization": "token from-the-client", "Cookie": "appliance-session=x; own=1"})
        by_socket = await echo_env(anonymous, sock)
    env = seen["env"]
    assert env == {
        "JUPYTERHUB_API_URL": api_url, "JUPYTERHUB_BASE_URL": "/", "JUPYTERHUB_HOST": "",
        "JUPYTERHUB_CLIENT_ID": f"service-{tcp}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"/services/{tcp}/oauth_callback",
        "JUPYTERHUB_OAUTH_SCOPES": f'["access:services", "access:services!service={tcp}"]',
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES":
            f'["access:services", "access:services!service={tcp}"]',
        "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES": "[]",
        "JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED": "0",
        # The service's `user` (none: JupyterHub's "" for the hub's own account), no server.
        "JUPYTERHUB_USER": "", "JUPYTERHUB_SERVER_NAME": "",
        "JUPYTERHUB_SERVICE_NAME": tcp, "JUPYTERHUB_SERVICE_URL": cfg.services[0][1].url,
        "JUPYTERHUB_SERVICE_PREFIX": f"/services/{tcp}/"}
    assert seen["has_token"] and seen["uid"] != 0  # a DynamicUser=, not root
    assert seen["authorization"] == "token from-the-client"  # the client's, passed on
    assert seen["cookie"] == "own=1"  # never the hub's session
    # Its token is its own: GET /hub/api/user answers with the service's model.
    who = seen["whoami"]
    assert who["kind"] == "service" and who["name"] == tcp, who
    assert "list:users" in who["scopes"] and who["token_id"].startswith("a")
    assert by_socket["whoami"]["name"] == sock and "read:hub" in by_socket["whoami"]["scopes"]
    assert by_socket["env"]["JUPYTERHUB_SERVICE_URL"] == sock_url

    # The token: a 0400 root file the hub wrote, a credential of the unit, nowhere else.
    unit = serviceunits.unit_name(tcp)
    token_file = hub.app["services"].token_file(tcp)
    stat = token_file.stat()
    assert (stat.st_mode & 0o777, stat.st_uid) == (0o400, 0)
    token = token_file.read_text()
    shown = systemctl("show", unit)  # every property (systemd 252 lists no credentials)
    assert "JUPYTERHUB_SERVICE_NAME" in shown  # the environment is there, for all to read
    assert token not in shown and token not in systemctl("status", unit)
    assert token not in journal(unit) and "echo service listening" in journal(unit)
    pid = main_pid(unit)
    assert token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert "notebook_appliance_services.slice" in systemctl("show", "-P", "Slice", unit)

    # The services API: JupyterHub's model for an admin; a student may not list them.
    async with Browser(hub, token=cli(cfg, "token", teacher.name)) as admin, \
            Browser(hub, token=cli(cfg, "token", student.name)) as user:
        async with admin.request("GET", "/hub/api/services") as r:
            models = await r.json()
        assert models[tcp] == {
            "kind": "service", "name": tcp, "roles": ["readers"], "admin": False,
            "url": cfg.services[0][1].url, "prefix": f"/services/{tcp}/",
            "command": [sys.executable, str(ECHO)], "pid": pid, "info": {}, "display": True}
        async with admin.request("GET", f"/hub/api/services/{sock}") as r:
            assert (await r.json())["url"] == sock_url
        async with admin.request("GET", "/hub/api/services/no-such") as r:
            assert r.status == 404
        async with admin.request("GET", "/hub/api/proxy") as r:
            routes = await r.json()
        assert routes[f"/services/{sock}/"] == {"routespec": f"/services/{sock}/",
                                                "target": sock_url, "data": {"service": sock}}
        async with user.request("GET", "/hub/api/services") as r:
            assert r.status == 403
            assert (await r.json())["message"] == refused("list:services")
        async with user.request("GET", f"/hub/api/services/{tcp}") as r:
            assert r.status == 403
    async with Browser(hub) as anonymous:
        async with anonymous.request("GET", "/services/no-such/") as r:
            assert r.status == 404


async def test_services_are_adopted_restarted_and_stopped_with_the_config(
        start_hub, hub_config):
    name = f"echo-{secrets.token_hex(3)}"
    unit = serviceunits.unit_name(name)
    try:
        await adopted_restarted_stopped(start_hub, hub_config, name, unit)
    finally:  # the hubs below are closed without stopping it, as a restarting hub is
        systemctl("stop", unit)


async def adopted_restarted_stopped(start_hub, hub_config, name: str, unit: str) -> None:
    port, hub_port = free_port(), free_port()  # the hub restarts where it was, as in life
    first = hub_config(extra_toml=echo_service(name, f"http://127.0.0.1:{port}"))
    hub = await start_hub(first, hub_port)
    async with Browser(hub) as anonymous:
        before = (await echo_env(anonymous, name))["whoami"]["token_id"]
    pid = main_pid(unit)
    token = hub.app["services"].token_file(name).read_text()
    await hub.close()  # the hub stops; its services go on

    async def whoami(hub, secret: str) -> int:
        async with Browser(hub, token=secret) as api:
            async with api.request("GET", "/hub/api/user") as r:
                return r.status

    # The same config: adopted, not restarted; its token still works.
    hub = await start_hub(first, hub_port)
    assert main_pid(unit) == pid
    assert await whoami(hub, token) == 200
    await hub.close()

    # A changed config: restarted with a fresh token; the old one is refused.
    changed = hub_config(extra_toml=echo_service(name, f"http://127.0.0.1:{port}",
                                                 'environment = { MODE = "two" }\n'))
    hub = await start_hub(changed, hub_port)
    assert main_pid(unit) not in (0, pid)
    assert await whoami(hub, token) == 403  # no such token (any more): JupyterHub's answer
    async with Browser(hub) as anonymous:
        seen = await echo_env(anonymous, name)
    assert seen["whoami"]["token_id"] != before

    # Killed: systemd starts it again (Restart=on-failure), with the same credential.
    pid = main_pid(unit)
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: main_pid(unit) not in (0, pid),
                   timeout=serviceunits.RESTART_SECONDS + 30)
    async with Browser(hub) as anonymous:
        assert (await echo_env(anonymous, name))["whoami"]["name"] == name
    token = hub.app["services"].token_file(name).read_text()
    await hub.close()

    # Taken out of the config: stopped, its token and token file gone.
    hub = await start_hub(hub_config(), hub_port)
    assert systemctl("is-active", unit).strip() in ("inactive", "unknown")
    assert not hub.app["services"].token_file(name).exists()
    assert await whoami(hub, token) == 403  # no such token (any more): JupyterHub's answer


async def test_an_external_services_token_from_the_config(start_hub, hub_config, tmp_path):
    token = secrets.token_hex(32)
    cfg = hub_config(extra_toml=f'[services.stats]\napi_token = "{token}"\n'
                                '[roles.stats]\nscopes = ["read:hub"]\nservices = ["stats"]\n')
    hub = await start_hub(cfg)
    async with Browser(hub, token=token) as stats:
        async with stats.request("GET", "/hub/api/user") as r:
            model = await r.json()
    assert model["kind"] == "service" and model["name"] == "stats"
    assert "read:hub" in model["scopes"]  # its role's
    assert "roles" not in model  # JupyterHub shows them with read:roles:services only
    assert not list(Path(cfg.hub.runtime_dir).glob("services/*"))  # nothing started
    # A config anyone may read is refused, naming the file and the key.
    Path(cfg.source).chmod(0o644)
    check = subprocess.run([sys.executable, "-m", "appliance", "--config", cfg.source,
                            "check-config"], capture_output=True, text=True)
    assert check.returncode != 0
    assert f"{cfg.source}: services.stats.api_token: the file holds a token" in check.stderr


async def test_the_real_serve_tells_a_service_where_it_listens(serve_hub, hub_config):
    """`notebook-appliance serve` (not the test server): the API URL comes from the socket it
    bound, and the service reaches the hub there with its token."""
    name, port = f"echo-{secrets.token_hex(3)}", free_port()
    cfg = hub_config(hub={"port": port},
                     extra_toml=echo_service(name, f"http://127.0.0.1:{free_port()}"))
    unit = serviceunits.unit_name(name)
    try:
        await serve_hub(cfg)
        async with Browser(f"http://127.0.0.1:{port}") as anonymous:
            seen = await echo_env(anonymous, name)
        assert seen["env"]["JUPYTERHUB_API_URL"] == f"http://127.0.0.1:{port}/hub/api"
        assert seen["whoami"]["name"] == name
    finally:
        systemctl("stop", unit)  # the hub leaves its services running when it stops


async def test_a_service_that_bears_a_users_name_is_not_that_user(start_hub, hub_config,
                                                                 make_user):
    """A service may be named like an account: its token is the service's, never the user's,
    and opens none of the hub's pages (they are users')."""
    alice = make_user()
    token = secrets.token_hex(32)
    cfg = hub_config(extra_toml=f'[services.{alice.name}]\napi_token = "{token}"\n'
                                '[roles.viewers]\nscopes = ["read:users"]\n'
                                f'services = ["{alice.name}"]\n')
    hub = await start_hub(cfg)
    async with Browser(hub, token=token) as service, \
            Browser(hub, token=cli(cfg, "token", alice.name)) as user:
        async with service.request("GET", "/hub/api/user") as r:
            assert (await r.json())["kind"] == "service"
        async with user.request("GET", "/hub/api/user") as r:
            assert (await r.json())["kind"] == "user"
        async with service.request("GET", "/hub/home", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"].startswith("/hub/login")
        async with service.request("GET", f"/user/{alice.name}/api/status") as r:
            assert r.status == 403  # read:users is not access:servers, name or no name
        async with service.request("GET", f"/hub/api/users/{alice.name}/server/progress") as r:
            assert r.status == 403


async def test_a_port_taken_by_someone_else_is_not_relayed_to(start_hub, hub_config,
                                                                make_user):
    """A student's process on a managed service's port gets nobody's requests: the hub sees
    the port is not the service's, whether the service runs (listening elsewhere, as one
    misconfigured) or is down (between a crash and its restart)."""
    student = make_user()
    up, down = f"up-{secrets.token_hex(3)}", f"down-{secrets.token_hex(3)}"
    ports = {up: free_port(), down: free_port()}
    commands = {up: '["/usr/bin/sleep", "infinity"]', down: '["/bin/false"]'}
    hub = await start_hub(hub_config(extra_toml="".join(
        f'[services.{n}]\ncommand = {commands[n]}\nurl = "http://127.0.0.1:{ports[n]}"\n'
        for n in (up, down))))
    squatters = [subprocess.Popen(
        ["runuser", "-u", student.name, "--", sys.executable, "-m", "http.server",
         "--bind", "127.0.0.1", str(port)], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL) for port in ports.values()]
    try:
        async with Browser(hub) as anyone:
            for name, port in ports.items():
                await wait_for(lambda p=port: squatter_listens(p), timeout=30)
                async with anyone.request("GET", f"/services/{name}/",
                                          headers={"Authorization": "token secret"}) as r:
                    body = await r.text()
                assert r.status == 502, (name, body)
                assert "not available right now" in body and "Directory listing" not in body
    finally:
        for squatter in squatters:
            squatter.terminate()
            squatter.wait()


def squatter_listens(port: int) -> bool:
    return bool(listening_uids(Path("/proc/net/tcp").read_text(), port))
