"""The token API (/hub/api/users/<name>/tokens, JupyterHub's shape) and the token page's
forms, against a real hub with real PAM users; tokens made here are used for real."""

import asyncio
import re
import time
from datetime import datetime

import pytest

from appliance.store import hash_secret

from .browser import Browser
from .conftest import cli

pytestmark = [pytest.mark.systemd, pytest.mark.pam]

#: JupyterHub's token model (its rest-api.yml Token, and token_model's "kind").
TOKEN_FIELDS = {"id", "kind", "user", "roles", "scopes", "note", "created", "last_activity",
                "expires_at", "session_id", "oauth_client"}


def when(iso: str) -> float:
    """An API timestamp (ISO 8601, UTC, with a Z) as seconds since the epoch."""
    assert iso.endswith("Z"), iso
    return datetime.fromisoformat(iso[:-1] + "+00:00").timestamp()


async def create(api: Browser, user: str, status: int = 201, **body) -> dict:
    """POST a new token for user; the answer's JSON, after checking its status."""
    async with api.request("POST", f"/hub/api/users/{user}/tokens", json=body) as r:
        assert r.status == status, await r.text()
        return await r.json()


async def whoami(hub, token: str) -> int:
    """The status of GET /hub/api/user with this token."""
    async with Browser(hub, token=token) as b:
        async with b.request("GET", "/hub/api/user") as r:
            return r.status


async def test_create_list_get_delete_in_jupyterhubs_shape(start_hub, hub_config, make_user):
    alice = make_user()
    cfg = hub_config()
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", alice.name)) as api:
        before = time.time()
        new = await create(api, alice.name, note="for my script", expires_in=3600)
        assert set(new) == TOKEN_FIELDS | {"token"}
        assert re.fullmatch(r"a[1-9][0-9]*", new["id"]), new["id"]
        assert (new["kind"], new["user"], new["note"]) == ("api_token", alice.name,
                                                          "for my script")
        assert new["scopes"] == ["inherit"] and new["roles"] == []
        assert new["last_activity"] is None and new["session_id"] is None
        assert before - 1 <= when(new["created"]) <= time.time() + 1
        assert when(new["expires_at"]) - when(new["created"]) == pytest.approx(3600, abs=1)

        assert await whoami(hub, new["token"]) == 200  # it works, as alice
        async with api.request("GET", f"/hub/api/users/{alice.name}/tokens") as r:
            assert r.status == 200
            listed = await r.json()
        assert set(listed) == {"api_tokens"}  # JupyterHub 5: oauth_tokens is gone
        [entry] = [t for t in listed["api_tokens"] if t["id"] == new["id"]]
        assert set(entry) == TOKEN_FIELDS, "the secret is shown only once"
        assert entry["last_activity"] is not None, "its use was not recorded"
        assert when(entry["last_activity"]) >= when(entry["created"])
        assert len(listed["api_tokens"]) == 2  # with the CLI's token

        path = f"/hub/api/users/{alice.name}/tokens/{new['id']}"
        async with api.request("GET", path) as r:
            assert r.status == 200 and await r.json() == entry
        async with api.request("DELETE", path) as r:
            assert r.status == 204
        assert await whoami(hub, new["token"]) == 403, "a revoked token still works"
        for method in ("GET", "DELETE"):
            async with api.request(method, path) as r:
                assert r.status == 404 and (await r.json())["status"] == 404


async def test_only_the_owner_or_an_admin_and_another_users_id_is_not_found(
        start_hub, hub_config, make_user, make_group):
    admins = make_group()
    alice, bob, teacher = make_user(), make_user(), make_user(groups=admins)
    cfg = hub_config(auth={"admin_group": admins})
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", alice.name)) as a, \
            Browser(hub, token=cli(cfg, "token", bob.name)) as b, \
            Browser(hub, token=cli(cfg, "token", teacher.name)) as t:
        secret = (await create(a, alice.name, note="alice's"))["token"]
        alices = (await create(a, alice.name, note="another"))["id"]
        async with b.request("GET", f"/hub/api/users/{alice.name}/tokens") as r:
            # JupyterHub's answer to a scope held for others only: as if nothing were there
            assert r.status == 404
        await create(b, alice.name, status=403)
        for method in ("GET", "DELETE"):  # alice's id under bob's name: as if it did not exist
            async with b.request(method, f"/hub/api/users/{bob.name}/tokens/{alices}") as r:
                assert r.status == 404
        for bad in ("1", "a0", "a-1", "b1", "a1x", "a" + "9" * 25):
            async with b.request("GET", f"/hub/api/users/{bob.name}/tokens/{bad}") as r:
                assert r.status == 404, bad

        async with t.request("GET", f"/hub/api/users/{alice.name}/tokens") as r:
            assert r.status == 200
            notes = {x["note"] for x in (await r.json())["api_tokens"]}
        assert {"alice's", "another"} <= notes
        async with t.request("GET", "/hub/api/users/nobody-here/tokens") as r:
            assert r.status == 404
        # A token of alice's would open her server, which auth.admin_access (off) forbids.
        refused = await create(t, alice.name, status=403)
        assert "admin_access" in refused["message"]
        async with t.request("DELETE", f"/hub/api/users/{alice.name}/tokens/{alices}") as r:
            assert r.status == 204
    assert await whoami(hub, secret) == 200


@pytest.mark.parametrize("body, words", [
    ({"note": "x" * 1001}, "at most 1000"),
    ({"note": 7}, "must be text"),
    ({"expires_in": -60}, "positive number"),
    ({"expires_in": "1d"}, "positive number"),
    ({"expires_in": True}, "positive number"),
    ({"expires_in": 1e300}, "positive number"),
    ({"scopes": ["read:users"]}, "not held by User"),
    ({"scopes": "read:users"}, "must be null or a list of strings"),
    ({"roles": ["nosuchrole"]}, "Role nosuchrole does not exist"),
    ([], "JSON object"),
])
async def test_bad_input_is_a_400_that_says_why(start_hub, hub_config, make_user, body, words):
    alice = make_user()
    cfg = hub_config()
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", alice.name)) as api:
        async with api.request("POST", f"/hub/api/users/{alice.name}/tokens", json=body) as r:
            assert r.status == 400
            refused = await r.json()
        assert words in refused["message"], refused
        assert len(await hub.app["store"].list_tokens(alice.name)) == 1  # the CLI's only


async def test_longest_note_and_no_expiry_are_accepted(start_hub, hub_config, make_user):
    alice = make_user()
    cfg = hub_config()
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", alice.name)) as api:
        long = await create(api, alice.name, note="é" * 1000)
        assert long["note"] == "é" * 1000 and long["expires_at"] is None
        for never in (0, None):  # JupyterHub: "Omit, or specify null or 0 for no expiration"
            assert (await create(api, alice.name, expires_in=never))["expires_at"] is None


async def test_a_token_stops_working_when_it_expires(start_hub, hub_config, make_user):
    alice = make_user()
    cfg = hub_config()
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", alice.name)) as api:
        new = await create(api, alice.name, note="brief", expires_in=6)
        assert await whoami(hub, new["token"]) == 200  # and so in the hub's identity cache
        expires = when(new["expires_at"])
        while time.time() <= expires:
            await asyncio.sleep(0.5)
        assert await whoami(hub, new["token"]) == 403
        async with api.request("GET", f"/hub/api/users/{alice.name}/tokens/{new['id']}") as r:
            assert r.status == 200  # still listed, so its owner sees it ended
            assert when((await r.json())["expires_at"]) <= time.time()


async def test_a_cookie_post_needs_the_csrf_header(start_hub, make_user):
    alice = make_user()
    hub = await start_hub()
    async with Browser(hub) as a:
        await a.login(alice.name, alice.password)
        path = f"/hub/api/users/{alice.name}/tokens"
        async with a.request("POST", path, json={"note": "forged"}) as r:
            assert r.status == 400
        async with a.request("POST", path, json={"note": "forged"},
                             headers={"X-XSRFToken": "not-" + a.xsrf}) as r:
            assert r.status == 400
        assert await hub.app["store"].list_tokens(alice.name) == []
        async with a.request("POST", path, json={"note": "mine"},
                             headers={"X-XSRFToken": a.xsrf}) as r:
            assert r.status == 201
        async with a.request("POST", "/hub/token", data={
                "_xsrf": "forged", "note": "page", "expiry": "never"}) as r:
            assert r.status == 400
        assert [t.note for t in await hub.app["store"].list_tokens(alice.name)] == ["mine"]


async def test_the_page_shows_a_token_once_and_revokes_only_ones_own(start_hub, make_user):
    alice, bob = make_user(), make_user()
    hub = await start_hub()
    async with Browser(hub) as a, Browser(hub) as b:
        await a.login(alice.name, alice.password)
        await b.login(bob.name, bob.password)
        async with a.request("POST", "/hub/token", data={
                "_xsrf": a.xsrf, "note": "page <b>", "expiry": "1w"}) as r:
            assert r.status == 200
            page = await r.text()
        [secret] = re.findall(r'<code id="token-secret">([^<]+)</code>', page)
        assert "it will not be shown again" in page and "page &lt;b&gt;" in page
        assert await whoami(hub, secret) == 200
        [token] = await hub.app["store"].list_tokens(alice.name)
        assert token.expires - token.created == 7 * 86400
        async with a.request("GET", "/hub/token") as r:
            assert secret not in await r.text()
        for other in (f"a{token.id}", "a" + "9" * 25, ""):
            async with b.request("POST", "/hub/token/revoke", data={
                    "_xsrf": b.xsrf, "id": other}) as r:
                assert r.status == 404 and "no such token" in await r.text()
        assert await whoami(hub, secret) == 200
        async with a.request("POST", "/hub/token", data={
                "_xsrf": a.xsrf, "note": "x", "expiry": "forever"}) as r:
            assert r.status == 400 and "Choose when the token expires" in await r.text()
        async with a.request("POST", "/hub/token/revoke", data={
                "_xsrf": a.xsrf, "id": f"a{token.id}"}) as r:
            assert r.status == 200
            assert "Revoked the token “page &lt;b&gt;”: it no longer works." in await r.text()
        assert await whoami(hub, secret) == 403


async def test_the_page_says_expired_in_words(start_hub, make_user):
    alice = make_user()
    hub = await start_hub()
    async with Browser(hub) as a:
        await a.login(alice.name, alice.password)
        async with a.request("POST", f"/hub/api/users/{alice.name}/tokens",
                             json={"note": "brief", "expires_in": 1},
                             headers={"X-XSRFToken": a.xsrf}) as r:
            assert r.status == 201
            expires = when((await r.json())["expires_at"])
        while time.time() <= expires:
            await asyncio.sleep(0.2)
        async with a.request("GET", "/hub/token") as r:
            page = await r.text()
        assert '<td class="expires">expired</td>' in page and 'class="token expired"' in page
        # The API leaves it out, as JupyterHub does.
        async with a.request("GET", f"/hub/api/users/{alice.name}/tokens") as r:
            assert [t["note"] for t in (await r.json())["api_tokens"]] == []


async def test_the_secret_never_reaches_the_database_files(start_hub, hub_config, make_user):
    alice = make_user()
    cfg = hub_config()
    hub = await start_hub(cfg)
    async with Browser(hub, token=cli(cfg, "token", alice.name)) as api:
        secrets_ = [(await create(api, alice.name, note=f"n{i}"))["token"] for i in range(3)]
        for secret in secrets_:
            assert await whoami(hub, secret) == 200
    # The database, its write-ahead log and shared memory: wherever sqlite put the rows.
    files = sorted(cfg.hub.state_dir.glob("appliance.sqlite*"))
    stored = b"".join(path.read_bytes() for path in files)
    for secret in secrets_:
        assert hash_secret(secret).encode() in stored, f"the rows are not in {files}"
        assert secret.encode() not in stored


async def test_an_admin_issues_a_token_for_another_user_only_with_admin_access(
        start_hub, hub_config, make_user, make_group):
    admins = make_group()
    alice, teacher = make_user(), make_user(groups=admins)
    cfg = hub_config(auth={"admin_group": admins, "admin_access": True})
    hub = await start_hub(cfg)
    cli(cfg, "token", alice.name)  # alice is known to the hub
    async with Browser(hub, token=cli(cfg, "token", teacher.name)) as t:
        new = await create(t, alice.name, note="for alice")
    assert new["user"] == alice.name
    async with Browser(hub, token=new["token"]) as b:
        async with b.request("GET", "/hub/api/user") as r:
            assert (await r.json())["name"] == alice.name
