"""Our REST API's JSON shapes held against a real JupyterHub's (issue 9).

A real JupyterHub 6 (PyPI: DummyAuthenticator, systemdspawner, jupyterhub-singleuser around
the container's Debian notebook server) and our hub (`notebook-appliance serve`) are given
the same state: the same three OS users (an admin, alice with a running server, bob whose
server was started and stopped), a token each for the admin and alice made by each hub's
own `token` command, a group holding alice, and an external service with the same token.
Each test then sends one request to both and compares the answers: status, media type, and
the JSON's keys and types, recursively (tests/shapes.py); values only where the shared state
or JupyterHub's documentation fixes them. A request our hub does not answer yet fails with
the list of differences.
"""

import asyncio
import json
import secrets
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.shapes import json_type, outline, shape_diffs, shape_of, value_diffs

from .real_jupyterhub import JupyterHub, OurHub, tools_missing

pytestmark = [pytest.mark.systemd, pytest.mark.pam]

PAGINATION = "application/jupyterhub-pagination+json"
#: The external service both hubs are configured with (a name and a token).
SERVICE = "shapes-ext"
READY_TIMEOUT = 120.0


@dataclass
class Reply:
    """One HTTP answer: status, media type, the body as text and as JSON (None: not JSON)."""

    status: int
    media_type: str
    text: str
    body: object = None
    is_json: bool = False


@dataclass
class Side:
    """One hub as the tests see it: where it is and the tokens made for it."""

    label: str
    base: str
    #: "admin" and "alice": tokens made by the hub's own `token` command.
    tokens: dict[str, str] = field(default_factory=dict)
    #: The answer to creating the group (in setup; the groups test judges it).
    group_created: Reply | None = None


@dataclass
class Pair:
    """The two hubs and the names of what both were given."""

    jupyterhub: Side
    ours: Side
    admin: str
    alice: str
    bob: str
    #: The unix group that makes `admin` an admin of ours.
    admins: str
    group: str
    version: str


async def fetch(side: Side, method: str, path: str, who: str | None = "admin",
                headers: dict | None = None, body: object = None) -> Reply:
    """One request to one hub, as `who` (a key of side.tokens; None: anonymous)."""
    headers = dict(headers or {})
    if who is not None:
        headers["Authorization"] = f"token {side.tokens[who]}"
    async with aiohttp.ClientSession() as http:
        async with http.request(method, side.base + path, headers=headers, json=body,
                                allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=60)) as r:
            text = await r.text()
            reply = Reply(r.status, r.content_type, text)
    try:
        reply.body, reply.is_json = json.loads(text), True
    except ValueError:
        pass
    return reply


async def both(pair: Pair, method: str, path: str, **kw) -> tuple[Reply, Reply]:
    """The same request to JupyterHub and to ours, at the same time."""
    return tuple(await asyncio.gather(fetch(pair.jupyterhub, method, path, **kw),
                                      fetch(pair.ours, method, path, **kw)))


def differences(theirs: Reply, ours: Reply, maps=()) -> list[str]:
    """Status, media type, then shape and fixed values, as lines."""
    diffs = []
    if theirs.status != ours.status:
        diffs.append(f"status   JupyterHub {theirs.status}, ours {ours.status}")
    if theirs.media_type != ours.media_type:
        diffs.append(f"media    JupyterHub {theirs.media_type}, ours {ours.media_type}")
    if not ours.is_json:
        diffs.append(f"body     ours is not JSON: {ours.text[:200]!r}")
        return diffs
    diffs += shape_diffs(shape_of(ours.body, maps), shape_of(theirs.body, maps))
    diffs += value_diffs(ours.body, theirs.body, maps)
    return diffs


def report(pair: Pair, what: str, theirs: Reply, ours: Reply, status: int,
           maps=()) -> list[str]:
    """The differences for one request, under a heading; [] when there are none. JupyterHub
    must answer `status` with JSON, or the harness itself is wrong (an AssertionError)."""
    assert theirs.status == status and theirs.is_json, \
        f"JupyterHub itself answered {what} with {theirs.status}: {theirs.text[:500]}"
    diffs = differences(theirs, ours, maps)
    if not diffs:
        return []
    lines = [f"{what}: our hub differs from JupyterHub {pair.version} ({len(diffs)}):",
             *(f"  {d}" for d in diffs)]
    if not ours.is_json or json_type(ours.body) != json_type(theirs.body):
        # Nothing to compare key by key: say all that JupyterHub's answer holds.
        lines += ["  JupyterHub's answer, for reference:",
                  *(f"    {line}" for line in outline(shape_of(theirs.body, maps)))]
    return lines


def fail_on(lines: list[str]) -> None:
    """Fail with the differences as they are, without pytest's rewrite of them."""
    if lines:
        pytest.fail("\n".join(lines), pytrace=False)


async def compare(pair: Pair, method: str, path: str, status: int = 200, maps=(),
                  **kw) -> list[str]:
    """The same request to both hubs; the report of their differences."""
    theirs, ours = await both(pair, method, path, **kw)
    return report(pair, f"{method} {path}", theirs, ours, status, maps)


# --- the shared state ----------------------------------------------------------------------


def os_user(name: str, groups: str = "") -> None:
    """A throwaway OS account (no password: neither hub logs anyone in here)."""
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash",
                    *(["--groups", groups] if groups else []), name],
                   check=True, capture_output=True)


def remove_os_user(name: str) -> None:
    """Its processes killed, the account and its home removed; never raises."""
    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
    subprocess.run(["userdel", "--remove", "--force", name], capture_output=True)


async def wait_server(side: Side, user: str, ready: bool) -> None:
    """Until the user's default server is ready (or, ready=False, neither ready nor pending)."""
    deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
    while True:
        reply = await fetch(side, "GET", f"/hub/api/users/{user}")
        server = (reply.body or {}).get("servers", {}).get("") if reply.is_json else None
        done = (server or {}).get("ready") if ready else not (server or {}).get("pending")
        if done:
            return
        assert asyncio.get_running_loop().time() < deadline, \
            f"{side.label}: {user}'s server not {'ready' if ready else 'stopped'}: {reply.text}"
        await asyncio.sleep(0.5)


async def start_then(side: Side, user: str, stop: bool) -> None:
    """Start a user's server through the API, wait until ready, and stop it if asked."""
    reply = await fetch(side, "POST", f"/hub/api/users/{user}/server")
    assert reply.status in (201, 202), f"{side.label}: start {user}: {reply.text}"
    await wait_server(side, user, ready=True)
    if stop:
        reply = await fetch(side, "DELETE", f"/hub/api/users/{user}/server")
        assert reply.status in (202, 204), f"{side.label}: stop {user}: {reply.text}"
        await wait_server(side, user, ready=False)


async def prepare(pair: Pair) -> None:
    """The same state on both: alice's token used once, alice running, bob started and
    stopped, the group made (its answer kept for the groups test, whatever it is)."""
    sides = (pair.jupyterhub, pair.ours)
    await asyncio.gather(*(fetch(s, "GET", "/hub/api/user", who="alice") for s in sides))
    await asyncio.gather(*(start_then(s, u, stop=u == pair.bob)
                           for s in sides for u in (pair.alice, pair.bob)))
    for side in sides:
        side.group_created = await fetch(side, "POST", f"/hub/api/groups/{pair.group}",
                                         body={"users": [pair.alice]})


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Both hubs with the same users, tokens, servers and group, for the whole module."""
    if why := tools_missing():
        pytest.skip(why)
    tag = secrets.token_hex(3)
    admin, alice, bob = (f"s{tag}{who}" for who in ("adm", "ali", "bob"))
    admins = f"s{tag}admins"
    with ExitStack() as cleanup:
        subprocess.run(["groupadd", admins], check=True, capture_output=True)
        cleanup.callback(subprocess.run, ["groupdel", admins], capture_output=True)
        for name in (admin, alice, bob):
            cleanup.callback(remove_os_user, name)
            os_user(name, admins if name == admin else "")
        service_token = secrets.token_hex(32)
        jh = JupyterHub(tmp_path_factory.mktemp("jupyterhub"), admin, {SERVICE: service_token})
        ours = OurHub(tmp_path_factory.mktemp("ours"), admins,
                      f'[services.{SERVICE}]\napi_token = "{service_token}"\n')
        theirs_side, ours_side = Side("JupyterHub", jh.base), Side("ours", ours.base)
        cleanup.callback(lambda: jh.stop(theirs_side.tokens.get("admin", ""), [alice, bob]))
        cleanup.callback(lambda: ours.stop(ours_side.tokens.get("admin", ""), [alice, bob]))
        jh.start()
        ours.start()
        theirs_side.tokens["service"] = ours_side.tokens["service"] = service_token
        theirs_side.tokens["admin"] = jh.token(admin)
        ours_side.tokens["admin"] = ours.token(admin)
        # JupyterHub knows only its admin_users until users are added; ours knows every
        # account the login policy admits (its token command and a start add the record).
        created = asyncio.run(fetch(theirs_side, "POST", "/hub/api/users",
                                    body={"usernames": [alice, bob]}))
        assert created.status == 201, f"JupyterHub: POST /users: {created.text}"
        theirs_side.tokens["alice"] = jh.token(alice)
        ours_side.tokens["alice"] = ours.token(alice)
        result = Pair(theirs_side, ours_side, admin, alice, bob, admins, f"s{tag}course",
                      jh.version)
        asyncio.run(prepare(result))
        yield result


# --- one test per resource -----------------------------------------------------------------


async def test_api_root(pair):
    fail_on(await compare(pair, "GET", "/hub/api/", who=None))


async def test_info(pair):
    fail_on(await compare(pair, "GET", "/hub/api/info"))


async def test_user_self_with_a_users_token(pair):
    theirs, ours = await both(pair, "GET", "/hub/api/user", who="alice")
    lines = report(pair, "GET /hub/api/user", theirs, ours, 200)
    for side, reply in ((pair.jupyterhub, theirs), (pair.ours, ours)):
        tokens = await fetch(side, "GET", f"/hub/api/users/{pair.alice}/tokens")
        ids = [t["id"] for t in tokens.body["api_tokens"]] if tokens.status == 200 else []
        token_id = reply.body.get("token_id") if isinstance(reply.body, dict) else None
        if token_id not in ids:
            lines.append(f"{side.label}: token_id {token_id!r} is not one of alice's tokens "
                         f"{ids}")
    fail_on(lines)


async def test_users_list(pair):
    fail_on(await compare(pair, "GET", "/hub/api/users"))


async def test_users_filtered(pair):
    # What jupyterhub-idle-culler asks (state=ready), and the other documented filters: the
    # names each answer holds are compared too.
    fail_on(await compare(pair, "GET", "/hub/api/users?state=ready")
            + await compare(pair, "GET", "/hub/api/users?state=inactive")
            + await compare(pair, "GET", f"/hub/api/users?name_filter={pair.alice[:-1]}"))


async def test_user_with_a_running_server(pair):
    fail_on(await compare(pair, "GET", f"/hub/api/users/{pair.alice}"))


async def test_user_include_stopped_servers(pair):
    fail_on(await compare(pair, "GET", f"/hub/api/users/{pair.bob}?include_stopped_servers"))


async def test_users_paginated(pair):
    # limit=1 of three users: a `next` page object, not null.
    fail_on(await compare(pair, "GET", "/hub/api/users?limit=1",
                          headers={"Accept": PAGINATION}))


async def test_server_model(pair):
    # GET on a server's own resource: JupyterHub 6.0's addition.
    fail_on(await compare(pair, "GET", f"/hub/api/users/{pair.alice}/server"))


async def test_tokens_list(pair):
    fail_on(await compare(pair, "GET", f"/hub/api/users/{pair.alice}/tokens"))


async def test_token_by_id(pair):
    theirs, ours = await both(pair, "GET", f"/hub/api/users/{pair.alice}/tokens")
    assert ours.status == 200, f"ours: the token list answered {ours.status}: {ours.text}"
    their_id = theirs.body["api_tokens"][0]["id"]
    our_id = ours.body["api_tokens"][0]["id"]
    path = f"/hub/api/users/{pair.alice}/tokens/"
    theirs = await fetch(pair.jupyterhub, "GET", path + their_id)
    fail_on(report(pair, f"GET {path}<id>", theirs,
                   await fetch(pair.ours, "GET", path + our_id), 200))


async def test_token_created(pair):
    fail_on(await compare(pair, "POST", f"/hub/api/users/{pair.alice}/tokens", status=201,
                          who="alice", body={"note": "shapes test", "expires_in": 3600}))


async def test_groups(pair):
    path = f"/hub/api/groups/{pair.group}"
    fail_on(report(pair, f"POST {path} (in setup)", pair.jupyterhub.group_created,
                   pair.ours.group_created, 201)
            + await compare(pair, "GET", "/hub/api/groups")
            + await compare(pair, "GET", path))


async def test_services(pair):
    # The external service both were configured with (a name and a token): the list (a map
    # by name), one service, and what its own token is told by GET /user (kind "service").
    fail_on(await compare(pair, "GET", "/hub/api/services", maps={""})
            + await compare(pair, "GET", f"/hub/api/services/{SERVICE}")
            + await compare(pair, "GET", "/hub/api/user", who="service"))


async def test_proxy(pair):
    fail_on(await compare(pair, "GET", "/hub/api/proxy", maps={""}))


async def test_error_unknown_route(pair):
    fail_on(await compare(pair, "GET", "/hub/api/no-such-resource", status=404))


async def test_error_wrong_method(pair):
    fail_on(await compare(pair, "PUT", "/hub/api/users", status=405))


@pytest.mark.parametrize("path", [
    "/hub/api/user", "/hub/api/users", "/hub/api/users/{alice}?include_stopped_servers",
    "/hub/api/users/{alice}/tokens", "/hub/api/groups", "/hub/api/proxy",
    "/hub/api/services"])
async def test_the_comparison_passes_jupyterhub_against_itself(pair, path):
    """The control: two fetches from JupyterHub a moment apart (timestamps move, activity is
    recorded) compare equal, so what the tests above report is ours, not the harness's."""
    path = path.format(alice=pair.alice)
    maps = {""} if path in ("/hub/api/proxy", "/hub/api/services") else ()
    first = await fetch(pair.jupyterhub, "GET", path)
    await asyncio.sleep(1.1)  # a later second in every timestamp
    fail_on(report(pair, f"GET {path}", first, await fetch(pair.jupyterhub, "GET", path), 200,
                   maps))
