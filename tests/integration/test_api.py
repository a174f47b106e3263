"""The hub's REST API, sessions and owner checks against a real hub, PAM and systemd."""

import subprocess
import sys

import pytest

from .browser import Browser
from .conftest import booted, cli

pytestmark = [pytest.mark.systemd, pytest.mark.pam]


async def test_version_needs_no_auth_and_user_needs_a_token(start_hub, hub_config, make_user):
    alice = make_user()
    cfg = hub_config()
    hub = await start_hub(cfg)
    async with Browser(hub) as anon:
        async with anon.request("GET", "/hub/api/") as r:
            assert r.status == 200 and "version" in await r.json()
        # JupyterHub's 403 (HubAuth reads it as "no user"; other endpoints say 401).
        async with anon.request("GET", "/hub/api/user") as r:
            assert r.status == 403
            assert await r.json() == {"status": 403,
                                      "message": "Missing or invalid credentials."}
    token = cli(cfg, "token", alice.name)
    for scheme in ("token", "bearer"):
        async with Browser(hub) as api:
            async with api.request("GET", "/hub/api/user",
                                   headers={"Authorization": f"{scheme} {token}"}) as r:
                assert r.status == 200
                model = await r.json()
        assert model["name"] == alice.name and model["kind"] == "user"
        assert model["server"] is None and model["pending"] is None


async def test_users_list_is_for_admins_only(start_hub, hub_config, make_user, make_group):
    admins = make_group()
    alice, root_like = make_user(), make_user(groups=admins)
    cfg = hub_config(auth={"admin_group": admins})
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", alice.name)) as api:
        async with api.request("GET", "/hub/api/users") as r:
            assert r.status == 403
    async with Browser(hub, token=cli(cfg, "token", root_like.name)) as api:
        async with api.request("GET", "/hub/api/users") as r:
            assert r.status == 200
            names = {u["name"] for u in await r.json()}
        assert {alice.name, root_like.name} <= names
        async with api.request("GET", f"/hub/api/users/{alice.name}") as r:
            assert r.status == 200 and (await r.json())["admin"] is False


async def test_cookie_writes_need_the_csrf_token(start_hub, make_user):
    alice = make_user()
    hub = await start_hub()
    async with Browser(hub) as a:
        await a.login(alice.name, alice.password)
        async with a.request("POST", f"/hub/api/users/{alice.name}/server") as r:
            assert r.status == 400
        async with a.request("POST", f"/hub/spawn/{alice.name}", data={"_xsrf": "forged"}) as r:
            assert r.status == 400
        assert hub.app["spawner"].get(alice.name).state == "stopped"


async def test_session_cookie_flags_logout_and_hashed_storage(start_hub, hub_config, make_user):
    alice = make_user()
    cfg = hub_config()
    hub = await start_hub(cfg)
    async with Browser(hub) as a:
        r = await a.login(alice.name, alice.password)
        set_cookie = [v for v in r.headers.getall("Set-Cookie") if "appliance-session" in v][0]
        assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
        secret = [c.value for c in a.session.cookie_jar if c.key == "appliance-session"][0]
        db = (cfg.hub.state_dir / "appliance.sqlite").read_bytes()
        assert secret.encode() not in db
        async with a.request("GET", "/hub/home") as r:
            assert r.status == 200
        async with a.request("GET", "/hub/logout") as r:  # a link cannot log anyone out
            assert r.status == 200 and "Log out" in await r.text()
        async with a.request("GET", "/hub/home") as r:
            assert r.status == 200
        async with a.request("POST", "/hub/logout", data={"_xsrf": a.xsrf}) as r:
            assert r.status == 302
    async with Browser(hub) as replay:
        replay.session.cookie_jar.update_cookies({"appliance-session": secret})
        async with replay.request("GET", "/hub/home") as r:
            assert r.status == 302 and r.headers["Location"].startswith("/hub/login")


async def test_login_refusal_keeps_the_form_and_next_is_local_only(start_hub, make_user):
    alice = make_user()
    hub = await start_hub()
    async with Browser(hub) as a:
        async with a.request("GET", "/hub/login") as r:
            assert r.status == 200
        async with a.request("POST", "/hub/login", data={
                "_xsrf": a.xsrf, "username": alice.name, "password": "wrong"}) as r:
            assert r.status == 403
            page = await r.text()
        assert "Invalid username or password." in page and alice.name in page
        async with a.request("POST", "/hub/login", data={
                "_xsrf": a.xsrf, "username": alice.name, "password": alice.password,
                "next": "//evil.example/"}) as r:
            assert r.headers["Location"] == "/hub/home"


@pytest.mark.parametrize("path", [
    "/user/{bob}/../{alice}/api/status",
    "/user/{bob}/%2E%2E/{alice}/api/status",
    "/user/{bob}/..%2F{alice}/api/status",
    "/user/{bob}%2F..%2F{alice}/api/status",
    "//user//{alice}//api/status",
    "/user/{alice_upper}/api/status",
    "/user/{alice}./api/status",
    "/user/./{alice}/api/status",
])
async def test_path_tricks_never_reach_another_users_server(start_hub, make_user, path):
    alice, bob = make_user(), make_user()
    hub = await start_hub()
    async with Browser(hub) as a, Browser(hub) as b:
        await a.login(alice.name, alice.password)
        await b.login(bob.name, bob.password)
        async with a.request("POST", f"/hub/spawn/{alice.name}", data={"_xsrf": a.xsrf}):
            pass
        assert (await a.progress(alice.name))[-1]["ready"]
        target = path.format(alice=alice.name, bob=bob.name, alice_upper=alice.name.upper())
        async with b.request("GET", target) as r:
            body = await r.read()
            assert r.status in (400, 403, 404, 424), (target, r.status)
            assert b"started" not in body and b"kernels" not in body
        async with a.request("GET", f"/user/{alice.name}/api/status") as r:
            assert r.status == 200 and b"started" in await r.read()


def test_check_config_names_file_and_key(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text('[limits]\nmemory = "lots"\n')
    out = subprocess.run([sys.executable, "-m", "appliance", "check-config", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert f'{path}: limits.memory: expected a size like "2G", got "lots"' in out.stderr


def test_serve_refuses_a_bad_config_before_binding(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text("[hub]\nprot = 8000\n")
    out = subprocess.run([sys.executable, "-m", "appliance", "--config", str(path), "serve"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "hub.prot: unknown key" in out.stderr


def test_generate_config_round_trips(tmp_path):
    text = subprocess.run([sys.executable, "-m", "appliance", "generate-config"],
                          capture_output=True, text=True, check=True).stdout
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    subprocess.run([sys.executable, "-m", "appliance", "check-config", str(path)], check=True,
                   capture_output=True)


@pytest.mark.skipif(not booted(), reason="creates users; only in the throwaway container")
def test_token_cli_refuses_root_and_unknown_users(hub_config):
    cfg = hub_config()
    for name in ("root", "no-such-user-here"):
        out = subprocess.run([sys.executable, "-m", "appliance", "--config", cfg.source,
                              "token", name], capture_output=True, text=True)
        assert out.returncode != 0 and out.stdout == ""


async def test_server_start_stop_status_codes_follow_jupyterhub(start_hub, hub_config,
                                                                make_user):
    alice = make_user()
    cfg = hub_config()
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", alice.name)) as api:
        path = f"/hub/api/users/{alice.name}/server"
        async with api.request("POST", path) as r:
            assert r.status in (201, 202)
        await api.progress(alice.name)
        async with api.request("POST", path) as r:
            assert r.status == 400 and "already running" in (await r.json())["message"]
        async with api.request("DELETE", path) as r:
            assert r.status == 204
        async with api.request("DELETE", path) as r:
            assert r.status == 204
        async with api.request("GET", f"/hub/api/users/{alice.name}") as r:
            model = await r.json()
        assert model["server"] is None and model["servers"] == {}


@pytest.mark.parametrize("admin_access", [False, True])
async def test_admins_start_and_stop_anyone_but_open_only_with_admin_access(
        start_hub, hub_config, make_user, admin_access):
    teacher, student = make_user(), make_user()
    cfg = hub_config(auth={"admin_users": [teacher.name], "admin_access": admin_access})
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", teacher.name)) as t, Browser(hub) as s:
        await s.login(student.name, student.password)  # the hub knows the student
        async with t.request("POST", f"/hub/api/users/{student.name}/server") as r:
            assert r.status in (201, 202), await r.text()
        assert (await t.progress(student.name))[-1]["ready"]
        async with t.request("GET", f"/user/{student.name}/api/status") as r:
            body = await r.text()
            assert r.status == (200 if admin_access else 403), body
        if not admin_access:
            assert "auth.admin_access is off" in body
        async with t.request("GET", f"/user/{student.name}/tree",
                             headers={"Accept": "text/html"}) as r:
            assert r.status == (200 if admin_access else 403)
        async with t.request("DELETE", f"/hub/api/users/{student.name}/server") as r:
            assert r.status in (202, 204), await r.text()
        assert hub.app["spawner"].get(student.name).state == "stopped"
