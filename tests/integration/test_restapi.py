"""JupyterHub 5's REST API against a real hub, real PAM users and real servers (issue 9,
parts 1-3): each endpoint refuses a token without the scope JupyterHub requires for it (403,
JupyterHub's message) and serves one with it; the users list's filters and pages; users added
and removed; activity; groups from the API and mirrored unix groups; roles from the config."""

import pwd
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from appliance.api.base import PAGINATION_MEDIA_TYPE

from .browser import Browser
from .conftest import cli
from .test_hub import wait_for

pytestmark = [pytest.mark.systemd, pytest.mark.pam]

PAGES = {"Accept": PAGINATION_MEDIA_TYPE}
NOT_FOUND = "No access to resources or resources not found"


def refused(scopes: str) -> str:
    """JupyterHub's 403 message (scopes.needs_scope)."""
    return f"Action is not authorized with current scopes; requires any of [{scopes}]"


async def call(api: Browser, method: str, path: str, status: int, **kw):
    """One request; its JSON (or None), after checking the status."""
    async with api.request(method, path, **kw) as r:
        text = await r.text()
        assert r.status == status, f"{method} {path}: {r.status} {text}"
        return await r.json() if text else None


async def new_token(full: Browser, owner: str, *scopes: str) -> str:
    """A new token of owner's with only these scopes, asked for with owner's full token."""
    made = await call(full, "POST", f"/hub/api/users/{owner}/tokens", 201,
                      json={"scopes": list(scopes), "note": " ".join(scopes)})
    assert made["scopes"] == list(scopes)
    return made["token"]


async def scoped(hub, full: Browser, owner: str, *scopes: str) -> Browser:
    """A client holding a new token of owner's with only these scopes (close it)."""
    return Browser(hub, token=await new_token(full, owner, *scopes))


def now_iso(offset: float = 0) -> str:
    return datetime.fromtimestamp(time.time() + offset, tz=timezone.utc).isoformat()


async def test_every_endpoint_needs_its_scope(start_hub, hub_config, make_user, make_group):
    admins = make_group()
    teacher, alice, bob, carol = (make_user(groups=admins), make_user(), make_user(),
                                  make_user())
    cfg = hub_config(auth={"admin_group": admins})
    hub = await start_hub(cfg)
    t, a, b, c = teacher.name, alice.name, bob.name, carol.name
    group = "lab-" + alice.name
    steps = [  # (method, path, body, the scopes JupyterHub asks for, statuses with them)
        ("GET", "/hub/api/users", None, "list:users", 200),
        ("POST", f"/hub/api/users/{a}", {}, "admin:users", 201),
        ("POST", f"/hub/api/users/{c}", None, "admin:users", 201),
        ("GET", f"/hub/api/users/{a}", None, "read:users, read:users:name, read:servers, "
         "read:users:groups, read:users:activity, read:roles:users", 200),
        ("PATCH", f"/hub/api/users/{a}", {"admin": False}, "admin:users", 200),
        ("POST", f"/hub/api/users/{a}/activity", {"last_activity": now_iso()},
         "users:activity", 200),
        ("GET", f"/hub/api/users/{a}/tokens", None, "read:tokens", 200),
        ("DELETE", f"/hub/api/users/{c}", None, "delete:users", 204),
        ("GET", "/hub/api/groups", None, "list:groups", 200),
        ("POST", f"/hub/api/groups/{group}", {"users": [a]}, "admin:groups", 201),
        ("GET", f"/hub/api/groups/{group}", None,
         "read:groups, read:groups:name, read:roles:groups", 200),
        ("POST", f"/hub/api/groups/{group}/users", {"users": [t]}, "groups", 200),
        ("DELETE", f"/hub/api/groups/{group}/users", {"users": [t]}, "groups", 200),
        ("PUT", f"/hub/api/groups/{group}/properties", {"course": "101"}, "groups", 200),
        ("DELETE", f"/hub/api/groups/{group}", None, "delete:groups", 204),
        ("GET", "/hub/api/info", None, "read:hub", 200),
        ("GET", "/hub/api/stats", None, "read:hub", 200),
        ("GET", "/hub/api/usage", None, "read:metrics", 200),
        ("GET", "/hub/metrics", None, "read:metrics", 200),
        ("GET", "/hub/api/proxy", None, "proxy", 200),
        ("POST", "/hub/api/shutdown", None, "shutdown", 400),
        # A real server: ready (201) or still starting (202); stopped (204) or stopping.
        ("POST", f"/hub/api/users/{b}/server", None, "servers", (201, 202)),
        ("GET", f"/hub/api/users/{b}/server/progress", None, "read:servers", 200),
        ("POST", f"/hub/api/users/{b}/activity",  # what jupyterhub-singleuser reports
         {"servers": {"": {"last_activity": now_iso(30)}}}, "users:activity", 200),
        ("DELETE", f"/hub/api/users/{b}/server", None, "delete:servers", (202, 204)),
    ]
    async with Browser(hub, token=cli(cfg, "token", t)) as full:
        for method, path, body, needed, status in steps:
            first = needed.split(",")[0]
            other = "read:metrics" if first != "read:metrics" else "read:hub"
            kw = {"json": body} if body is not None else {}
            # Every token may read its owner's name (JupyterHub's identify scopes), so asking
            # after another user is JupyterHub's 404: it does not say whether they exist.
            hidden = (method, path) == ("GET", f"/hub/api/users/{a}")
            status_without = 404 if hidden else 403
            async with await scoped(hub, full, t, other) as without:
                answer = await call(without, method, path, status_without, **kw)
            assert answer == {"status": status_without, "message": NOT_FOUND if hidden
                              else refused(needed)}, (method, path)
            async with await scoped(hub, full, t, first) as with_it:
                async with with_it.request(method, path, **kw) as r:
                    expected = status if isinstance(status, tuple) else (status,)
                    assert r.status in expected, (method, path, await r.text())
        # Tokens: the tokens scope on the user, in JupyterHub's words.
        async with await scoped(hub, full, t, "read:tokens") as reader:
            answer = await call(reader, "POST", f"/hub/api/users/{t}/tokens", 403, json={})
        assert answer["message"] == f"User {t} not found or no permissions to generate tokens"
        async with await scoped(hub, full, t, "tokens") as writer:
            await call(writer, "POST", f"/hub/api/users/{t}/tokens", 201, json={})
        # bob's server reported activity (half a minute ahead), then stopped: listed only
        # with include_stopped_servers.
        spawner = hub.app["spawner"]
        await wait_for(lambda: spawner.get(b).state == "stopped")
        assert spawner.get(b).last_activity > time.time() + 20
        assert (await call(full, "GET", f"/hub/api/users/{b}", 200))["servers"] == {}
        model = await call(full, "GET", f"/hub/api/users/{b}?include_stopped_servers=1", 200)
        assert model["servers"][""]["stopped"] is True
    assert pwd.getpwnam(c), "DELETE /users/<name> removed the OS account"


async def test_users_list_pages_filters_and_sorting(start_hub, hub_config, make_user,
                                                   make_group):
    admins = make_group()
    teacher = make_user(groups=admins)
    students = sorted(make_user().name for _ in range(5))
    cfg = hub_config(auth={"admin_group": admins})
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", teacher.name)) as api:
        made = await call(api, "POST", "/hub/api/users", 201, json={"usernames": students})
        assert [u["name"] for u in made] == students
        await call(api, "POST", "/hub/api/users", 409, json={"usernames": students[:2]})
        everyone = [teacher.name, *students]  # ids in the order they came

        seen, url = [], "/hub/api/users?limit=2"
        while url:
            page = await call(api, "GET", url, 200, headers=PAGES)
            assert page["_pagination"]["total"] == 6 and page["_pagination"]["limit"] == 2
            seen += [u["name"] for u in page["items"]]
            following = page["_pagination"]["next"]
            url = following and following["url"].removeprefix(api.base.rstrip("/"))
        assert seen == everyone
        plain = await call(api, "GET", "/hub/api/users", 200)
        assert [u["name"] for u in plain] == everyone, "without the envelope: everyone"

        one = students[2]
        found = await call(api, "GET", f"/hub/api/users?name_filter={one[2:].upper()}", 200)
        assert [u["name"] for u in found] == [one]
        backwards = await call(api, "GET", "/hub/api/users?sort=-name", 200)
        assert [u["name"] for u in backwards] == sorted(everyone, reverse=True)
        assert len(await call(api, "GET", "/hub/api/users?state=inactive", 200)) == 6
        for state in ("active", "ready"):
            assert await call(api, "GET", f"/hub/api/users?state={state}", 200) == []
        for query, words in [("sort=colour", "sort must be 'id', 'name', or 'last_activity'"),
                             ("state=asleep", "Unrecognized state filter"),
                             ("limit=many", "offset and limit must be integers")]:
            answer = await call(api, "GET", f"/hub/api/users?{query}", 400)
            assert words in answer["message"]
        stopped = await call(api, "GET", f"/hub/api/users/{one}?include_stopped_servers=1",
                             200)
        assert stopped["servers"] == {}

        # A token that may list only a group's members lists only them, and reads no more
        # than names of them.
        lab = "lab-" + one
        await call(api, "POST", f"/hub/api/groups/{lab}", 201, json={"users": students[:2]})
        async with await scoped(hub, api, teacher.name, f"list:users!group={lab}") as some:
            listed = await call(some, "GET", "/hub/api/users", 200)
        assert [u["name"] for u in listed] == students[:2]
        assert set(listed[0]) == {"kind", "name", "admin"}


async def test_users_are_os_accounts_and_leave_the_hub_only(start_hub, hub_config, make_user,
                                                           make_group):
    admins = make_group()
    teacher, alice = make_user(groups=admins), make_user()
    cfg = hub_config(auth={"admin_group": admins})
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", teacher.name)) as api:
        answer = await call(api, "POST", "/hub/api/users/nosuchaccount", 400)
        assert "no account named 'nosuchaccount'" in answer["message"]
        assert "adduser nosuchaccount" in answer["message"]
        await call(api, "POST", f"/hub/api/users/{alice.name}", 400, json={"admin": True})
        model = await call(api, "POST", f"/hub/api/users/{alice.name}", 201)
        assert (model["name"], model["admin"], model["groups"]) == (alice.name, False, [])
        await call(api, "POST", f"/hub/api/users/{alice.name}", 409)
        answer = await call(api, "PATCH", f"/hub/api/users/{alice.name}", 400,
                            json={"admin": True})
        assert "configuration" in answer["message"] and admins in answer["message"]
        await call(api, "PATCH", f"/hub/api/users/{alice.name}", 400, json={"name": "x"})

        alices = cli(cfg, "token", alice.name)
        answer = await call(api, "POST", f"/hub/api/users/{alice.name}/activity", 400,
                            json={"last_activity": now_iso(2 * 3600)})
        assert "more than an hour in the future" in answer["message"]
        answer = await call(api, "POST", f"/hub/api/users/{alice.name}/activity", 400,
                            json={"servers": {"lab": {"last_activity": now_iso()}}})
        assert answer["message"] == f"No such server 'lab' for user {alice.name}"
        await call(api, "POST", f"/hub/api/users/{alice.name}/activity", 200,
                   json={"last_activity": now_iso(600)})  # a clock a little ahead: taken
        model = await call(api, "GET", f"/hub/api/users/{alice.name}", 200)
        last = datetime.fromisoformat(model["last_activity"].replace("Z", "+00:00"))
        assert last.timestamp() > time.time() + 500

        await call(api, "DELETE", f"/hub/api/users/{teacher.name}", 400)
        await call(api, "DELETE", f"/hub/api/users/{alice.name}", 204)
        await call(api, "GET", f"/hub/api/users/{alice.name}", 404)
        await call(api, "DELETE", f"/hub/api/users/{alice.name}", 404)
    assert pwd.getpwnam(alice.name).pw_name == alice.name
    async with Browser(hub, token=alices) as gone:
        await call(gone, "GET", "/hub/api/user", 403)


async def test_whoami_tokens_with_scopes_and_roles(start_hub, hub_config, make_user):
    alice, bob = make_user(), make_user()
    cfg = hub_config(**{"roles.readers": {"scopes": ["list:users", "read:users:activity"],
                                          "users": [bob.name]}})
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", alice.name)) as full:
        me = await call(full, "GET", "/hub/api/user", 200)
        assert me["roles"] == ["user"] and me["token_id"].startswith("a")
        assert me["session_id"] is None
        assert f"servers!user={alice.name}" in me["scopes"]
        assert "list:users" not in me["scopes"]
        answer = await call(full, "POST", f"/hub/api/users/{alice.name}/tokens", 400,
                            json={"scopes": ["list:users"]})
        assert answer["message"] == ("Not assigning requested scopes list:users,"
                                     f"read:users:name not held by User {alice.name}")
        answer = await call(full, "POST", f"/hub/api/users/{alice.name}/tokens", 400,
                            json={"scopes": ["read:userz"]})
        assert "Scope 'read:userz'" in answer["message"]
        async with await scoped(hub, full, alice.name, "read:servers!user") as narrow:
            me = await call(narrow, "GET", "/hub/api/user", 200)
            assert set(me) == {"kind", "name", "admin", "groups", "servers", "token_id",
                               "session_id", "scopes"}
            assert f"read:servers!user={alice.name}" in me["scopes"]
            await call(narrow, "GET", "/hub/api/users", 403)
            await call(narrow, "POST", f"/hub/api/users/{alice.name}/server", 403)
    async with Browser(hub) as browser:
        await browser.login(alice.name, alice.password)
        me = await call(browser, "GET", "/hub/api/user", 200)
        assert (me["token_id"], me["session_id"]) == (None, None)
    async with Browser(hub, token=cli(cfg, "token", bob.name)) as full:
        me = await call(full, "GET", "/hub/api/user", 200)
        assert me["roles"] == ["user", "readers"]
        async with await scoped(hub, full, bob.name, "list:users") as lister:
            names = {u["name"] for u in await call(lister, "GET", "/hub/api/users", 200)}
        assert {alice.name, bob.name} <= names
    # The command line makes such tokens too, by the same rule.
    async with Browser(hub, token=cli(cfg, "token", bob.name, "--scope", "list:users")) as cl:
        me = await call(cl, "GET", "/hub/api/user", 200)
        assert "list:users" in me["scopes"] and f"servers!user={bob.name}" not in me["scopes"]
        await call(cl, "GET", "/hub/api/users", 200)
    refused_cli = subprocess.run([sys.executable, "-m", "appliance", "--config", cfg.source,
                                  "token", alice.name, "--scope", "list:users"],
                                 capture_output=True, text=True)
    assert refused_cli.returncode == 2 and "not held by User" in refused_cli.stderr


async def test_groups_from_the_api_and_mirrored_unix_groups(start_hub, hub_config, make_user,
                                                           make_group):
    admins, course = make_group(), make_group()
    teacher, alice, bob = make_user(groups=admins), make_user(groups=course), make_user()
    cfg = hub_config(auth={"admin_group": admins, "sync_groups": [course]},
                     **{"roles.course-staff": {"scopes": [f"read:users!group={course}"],
                                               "groups": [course]}})
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", teacher.name)) as api:
        for user in (alice, bob):
            await call(api, "POST", f"/hub/api/users/{user.name}", 201)
        mirrored = await call(api, "GET", f"/hub/api/groups/{course}", 200)
        assert mirrored == {"kind": "group", "name": course, "roles": ["course-staff"],
                            "users": [alice.name], "properties": {}}
        for method, path, body in [("POST", f"/groups/{course}/users", {"users": [bob.name]}),
                                   ("DELETE", f"/groups/{course}", None),
                                   ("PUT", f"/groups/{course}/properties", {"a": 1})]:
            answer = await call(api, method, "/hub/api" + path, 400,
                                **({"json": body} if body else {}))
            assert "mirrors the unix group" in answer["message"]
        await call(api, "POST", f"/hub/api/groups/{course}", 409)

        lab = "lab-" + bob.name
        made = await call(api, "POST", f"/hub/api/groups/{lab}", 201, json={"users": [bob.name]})
        assert made["users"] == [bob.name] and made["properties"] == {}
        answer = await call(api, "POST", f"/hub/api/groups/{lab}/users", 400,
                            json={"users": ["nosuchuser"]})
        assert answer["message"] == "No such user: nosuchuser"
        await call(api, "POST", f"/hub/api/groups/{lab}/users", 200, json={"users": [alice.name]})
        props = await call(api, "PUT", f"/hub/api/groups/{lab}/properties", 200,
                           json={"course": "101"})
        assert props["properties"] == {"course": "101"}
        model = await call(api, "GET", f"/hub/api/users/{alice.name}", 200)
        assert model["groups"] == sorted([course, lab])
        listed = {g["name"] for g in await call(api, "GET", "/hub/api/groups", 200)}
        assert {course, lab} <= listed

        # A group filter: the course role reads the course's members only.
        async with Browser(hub, token=cli(cfg, "token", alice.name)) as member:
            await call(member, "GET", f"/hub/api/users/{alice.name}", 200)
            answer = await call(member, "GET", f"/hub/api/users/{bob.name}", 404)
            assert answer["message"] == NOT_FOUND
        await call(api, "DELETE", f"/hub/api/groups/{lab}/users", 200, json={"users": [bob.name]})
        await call(api, "DELETE", f"/hub/api/groups/{lab}", 204)
        answer = await call(api, "GET", f"/hub/api/groups/{lab}", 404)
        assert answer["message"] == f"No such group: {lab}"


async def test_hub_endpoints_and_json_errors(start_hub, hub_config, make_user, make_group):
    admins = make_group()
    teacher = make_user(groups=admins)
    cfg = hub_config(auth={"admin_group": admins})
    hub = await start_hub(cfg)
    async with Browser(hub) as anon:
        version = (await call(anon, "GET", "/hub/api/", 200))["version"]
        assert tuple(map(int, version.split("."))) >= (5, 0, 0)
        await call(anon, "GET", "/hub/health", 200)
        assert await call(anon, "GET", "/hub/api/nosuchthing", 404) == {
            "status": 404, "message": "Not Found"}
        async with anon.request("PUT", "/hub/api/users") as r:
            assert r.status == 405 and "GET" in r.headers["Allow"]
            assert await r.json() == {"status": 405, "message": "Method Not Allowed"}
    async with Browser(hub, token=cli(cfg, "token", teacher.name)) as api:
        info = await call(api, "GET", "/hub/api/info", 200)
        assert {"version", "python", "sys_executable", "spawner", "authenticator"} <= set(info)
        routes = await call(api, "GET", "/hub/api/proxy", 200)
        assert routes["/"]["data"] == {"hub": True}
        answer = await call(api, "POST", "/hub/api/shutdown", 400)
        assert "systemctl stop notebook-appliance" in answer["message"]
