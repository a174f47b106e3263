"""The users resource (JupyterHub's /user, /users, /users/<name> and /users/<name>/activity):
models shown as far as the caller's scopes reach, the list with its filters and pages, and
hub users added and removed.

A hub user is always an OS account that the login policy admits: adding one for any other
name is a 400 that says so, and removing one forgets it in the hub (sessions, tokens, servers
stopped), never on the machine. Whether a user is an admin is the configuration's to say
(auth.admin_users, auth.admin_group), so the API cannot change it.
"""

import asyncio
import time
from datetime import datetime, timezone

from aiohttp import web

from appliance import access, accountwatch
from appliance.api import services
from appliance.api.base import (
    authorize,
    authorize_listing,
    authorize_user,
    isoformat,
    json_object,
    paginated,
    pagination,
)
from appliance.api.servers import server_model
from appliance.errors import BadRequest, Exists, Forbidden, NotFound
from appliance.identity import Identity
from appliance.scopes import identify_scopes
from appliance.store import UserRecord
from appliance.userserver import Server, ServerState

#: Which fields of a user model each scope shows (JupyterHub's user_model access_map).
FIELDS_BY_SCOPE = {
    "read:users": {"kind", "name", "admin", "roles", "groups", "server", "pending", "created",
                   "last_activity", "user_info"},
    "read:users:name": {"kind", "name", "admin"},
    "read:users:groups": {"kind", "name", "groups"},
    "read:users:activity": {"kind", "name", "last_activity"},
    "read:servers": {"kind", "name", "servers"},
    "read:roles:users": {"kind", "name", "roles", "admin"},
    "admin:auth_state": {"kind", "name", "auth_state"},
}
#: What GET /users/<name> needs: any scope that shows something of a user.
READ_USER = tuple(FIELDS_BY_SCOPE)[:-1]
#: The keys a posted or patched user model may have (JupyterHub's _user_model_types).
MODEL_TYPES = {"name": str, "admin": bool, "groups": list, "roles": list, "auth_state": dict}
#: How far in the future a reported activity may be (JupyterHub: 59 minutes).
FUTURE_SLACK = 59 * 60


def setup(app: web.Application) -> None:
    """Register the user routes."""
    r = app.router
    r.add_get("/hub/api/user", get_self)
    r.add_get("/hub/api/users", get_users)
    r.add_post("/hub/api/users", post_users)
    r.add_get("/hub/api/users/{name}", get_user)
    r.add_post("/hub/api/users/{name}", post_user)
    r.add_patch("/hub/api/users/{name}", patch_user)
    r.add_delete("/hub/api/users/{name}", delete_user)
    r.add_post("/hub/api/users/{name}/activity", post_activity)


def user_model(record: UserRecord, servers: list[Server], sampler=None, *,
               groups: frozenset[str] = frozenset(), roles: list[str] = (),
               include_stopped: bool = False) -> dict:
    """JupyterHub's user model, every field; `servers` lists the active ones (and stopped
    ones when asked), as JupyterHub does (with the sampler: each with its live memory and
    CPU)."""
    default = next((s for s in servers if not s.name), None)
    shown = [s for s in servers if include_stopped or s.state != ServerState.STOPPED]
    return {
        "kind": "user", "name": record.name, "admin": record.admin, "roles": list(roles),
        "groups": sorted(groups),
        "server": default.url if default is not None and default.ready else None,
        "pending": default.pending if default is not None else None,
        "created": isoformat(record.created),
        "last_activity": isoformat(max(filter(None, [
            record.last_activity, *(s.last_activity for s in servers)]), default=None)),
        "servers": {s.name: server_model(s, sampler) for s in shown},
        "auth_state": None,
        # What the authenticator knows of the person beyond the name: nothing for PAM.
        "user_info": None,
    }


def visible(request: web.Request, identity: Identity, model: dict) -> dict:
    """The model as far as the caller's scopes show it (JupyterHub's _filter_model): each
    field one of its scopes covers for this user, and only the servers read:servers covers."""
    name, groups_of = model["name"], request.app["groups"].of_user
    keys = set()
    for scope, fields in FIELDS_BY_SCOPE.items():
        if access.allows(identity, scope, user=name, groups_of=groups_of):
            keys |= fields
    shown = {k: v for k, v in model.items() if k in keys}
    if shown and "servers" in model:
        servers = {n: without_state(s, identity, f"{name}/{n}", groups_of)
                   for n, s in model["servers"].items() if access.allows(
                       identity, "read:servers", server=f"{name}/{n}", groups_of=groups_of)}
        if "servers" in keys or servers:
            shown["servers"] = servers
    return shown


def without_state(model: dict, identity: Identity, server: str, groups_of) -> dict:
    """A server model without `state` unless the caller holds admin:server_state on it."""
    if access.allows(identity, "admin:server_state", server=server, groups_of=groups_of):
        return model
    return {k: v for k, v in model.items() if k != "state"}


def servers_of(request: web.Request, name: str) -> list[Server]:
    """A user's default server (if the hub knows it) and named servers."""
    spawner = request.app["spawner"]
    default = spawner.find(name)
    return ([default] if default else []) + spawner.named(name)


async def user_record(request: web.Request, name: str) -> UserRecord:
    """The store's record of a user; NotFound when the hub has never seen them."""
    record = await request.app["store"].get_user(name)
    if record is None:
        raise NotFound(f"no user {name}", user_message=f"No such user: {name}")
    return record


def include_stopped(request: web.Request) -> bool:
    """?include_stopped_servers (JupyterHub: anything but 0 or false)."""
    value = request.query.get("include_stopped_servers")
    return value is not None and value.lower() not in ("0", "false")


def full_model(request: web.Request, record: UserRecord) -> dict:
    """Every field of record's model, with its groups, roles and servers."""
    app = request.app
    return user_model(record, servers_of(request, record.name), app["spawner"].sampler,
                      groups=app["groups"].of_user(record.name),
                      roles=app["identities"].roles.direct(record.name, record.admin),
                      include_stopped=include_stopped(request))


async def get_self(request: web.Request) -> web.Response:
    """GET /hub/api/user: the caller's own model, with the credential's scopes, token_id and
    session_id (JupyterHub's whoami); a service's token gets the service's model. Without valid
    credentials a 403, as JupyterHub answers: HubAuth takes that as "no user" and logs its
    browser in again, where any other status (an expired or revoked token's) would be an error
    page."""
    identity = await request.app["identities"].of_request(request)
    if identity is None:
        raise Forbidden("GET /hub/api/user without valid credentials",
                        user_message="Missing or invalid credentials.")
    if identity.kind == "service":  # JupyterHub answers a service's token with its model
        return web.json_response(await services.self_model(request, identity))
    record = await request.app["store"].get_user(identity.name)
    if record is None:  # logged in through a page that never wrote the row: write it now
        record = await request.app["store"].ensure_user(identity.name, identity.admin)
    # Every credential may identify its owner (JupyterHub adds its identify scopes here).
    seer = Identity(identity.name, identity.admin, identity.via, identity.roles,
                    identity.scopes | identify_scopes(identity.name), identity.token_id)
    model = visible(request, seer, full_model(request, record))
    model["token_id"] = f"a{identity.token_id}" if identity.token_id is not None else None
    model["session_id"] = None  # sessions of the hub's own pages are not tokens
    model["scopes"] = sorted(identity.scopes)
    return web.json_response(model)


#: ?sort= keys: the record's field, None sorted first going up (JupyterHub's order).
SORTS = {"id": lambda r: r.id, "name": lambda r: r.name,
         "last_activity": lambda r: r.last_activity}


def sorted_records(records: list[UserRecord], sort: str) -> list[UserRecord]:
    """records in ?sort= order: id, name or last_activity, "-" for descending; 400 else."""
    key = SORTS.get(sort.removeprefix("-"))
    if key is None:
        raise BadRequest(f"bad sort {sort!r}", user_message="sort must be 'id', 'name', or "
                         f"'last_activity', not '{sort}'")
    known = sorted((r for r in records if key(r) is not None), key=key,
                   reverse=sort.startswith("-"))
    unknown = [r for r in records if key(r) is None]
    return unknown + known if not sort.startswith("-") else known + unknown


def in_state(request: web.Request, record: UserRecord, state: str | None) -> bool:
    """JupyterHub's ?state=: active (a server started or starting), ready (one answering),
    inactive (none active)."""
    if state is None:
        return True
    servers = servers_of(request, record.name)
    if state == "ready":
        return any(s.ready for s in servers)
    active = any(s.state != ServerState.STOPPED for s in servers)
    if state == "active":
        return active
    if state == "inactive":
        return not active
    raise BadRequest(f"bad state {state!r}", user_message=f"Unrecognized state filter: "
                     f"{state!r}")


async def get_users(request: web.Request) -> web.Response:
    """GET /hub/api/users: the users the caller may list (list:users), filtered, sorted and a
    page at a time (JupyterHub's query arguments and envelope)."""
    identity = await authorize_listing(request, "list:users")
    offset, limit = pagination(request)
    state, name_filter = request.query.get("state"), request.query.get("name_filter", "")
    records = sorted_records(await request.app["store"].list_users(),
                             request.query.get("sort", "id"))
    groups_of = request.app["groups"].of_user
    chosen = [r for r in records
              if access.allows(identity, "list:users", user=r.name, groups_of=groups_of)
              and name_filter.lower() in r.name.lower() and in_state(request, r, state)]
    page = [visible(request, identity, full_model(request, r))
            for r in chosen[offset:offset + limit]]
    return web.json_response(paginated(request, page, offset, limit, len(chosen)))


def check_model(body: dict) -> dict:
    """A posted user model: known keys of the right types (JupyterHub's _check_user_model)."""
    for key, value in body.items():
        if key not in MODEL_TYPES:
            raise BadRequest(f"user model key {key!r}", user_message=f"Invalid JSON keys: "
                             f"{body!r}")
        if not isinstance(value, MODEL_TYPES[key]):
            raise BadRequest(f"user.{key} {value!r}", user_message=f"user.{key} must be "
                             f"{MODEL_TYPES[key].__name__}, not: {type(value).__name__}")
    return body


async def os_account(request: web.Request, name: str):
    """The OS account a new hub user must be; a 400 saying why a name cannot be one."""
    try:
        return await request.app["auth"].account(name)
    except NotFound as e:
        raise BadRequest(f"no hub user for {name!r}: {e}", user_message=(
            f"{name} cannot be a user of this hub: {e}. A hub user is an account on the "
            f"hub's machine that may log in: make one with 'adduser {name}' (and check "
            "auth.min_uid and auth.allowed_groups).")) from None


def check_admin_flag(body: dict, name: str, admin: bool, cfg) -> None:
    """A model's admin must be what the configuration says: it alone decides."""
    if "admin" in body and body["admin"] != admin:
        where = f"the unix group {cfg.admin_group!r}" if cfg.admin_group else "no group"
        raise BadRequest(f"admin={body['admin']} for {name}", user_message=(
            f"{name} {'is' if admin else 'is not'} an administrator by this hub's "
            f"configuration (auth.admin_users, and members of {where}), which the API does "
            f"not change: {'remove' if admin else 'add'} them there instead "
            f"('{'deluser' if admin else 'adduser'} {name} {cfg.admin_group}')."))


async def post_user(request: web.Request) -> web.Response:
    """POST /hub/api/users/{name}: add an OS account to the hub; 201 with its model."""
    identity, name = await authorize_user(request, "admin:users")
    body = check_model(await json_object(request, "the user model", '{"admin": false}'))
    account = await os_account(request, name)
    check_admin_flag(body, name, account.admin, request.app["config"].auth)
    record = await request.app["store"].add_user(account.name, account.admin)
    if record is None:
        raise Exists(f"{name} exists", user_message=f"User {name} already exists")
    return web.json_response(visible(request, identity, full_model(request, record)),
                             status=201)


async def post_users(request: web.Request) -> web.Response:
    """POST /hub/api/users {"usernames": [...], "admin": false}: add several; 201 with the
    models of those that were new, 409 when all existed."""
    identity = await authorize(request, "admin:users")
    body = await json_object(request, "the body", '{"usernames": ["alice", "bob"]}')
    names = body.pop("usernames", None)
    if not names or not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest("no usernames", user_message="Must specify at least one user to "
                         "create")
    check_model(body)
    accounts = await asyncio.gather(*(os_account(request, n) for n in names))
    for account in accounts:
        check_admin_flag(body, account.name, account.admin, request.app["config"].auth)
    store = request.app["store"]
    made = [r for r in [await store.add_user(a.name, a.admin) for a in accounts] if r]
    if not made:
        raise Exists("all exist", user_message=f"All {len(names)} users already exist")
    return web.json_response([visible(request, identity, full_model(request, r))
                              for r in made], status=201)


async def get_user(request: web.Request) -> web.Response:
    """GET /hub/api/users/{name}: the model, as far as the caller's scopes show it."""
    identity, name = await authorize_user(request, *READ_USER)
    record = await user_record(request, name)
    return web.json_response(visible(request, identity, full_model(request, record)))


async def patch_user(request: web.Request) -> web.Response:
    """PATCH /hub/api/users/{name}: nothing a hub user has is the API's to change (the name
    is the account's, admin the configuration's, groups the groups API's): the same values
    are accepted, others are a 400 that says where they are changed."""
    identity, name = await authorize_user(request, "admin:users")
    record = await user_record(request, name)
    body = check_model(await json_object(request, "the user model", '{"admin": false}'))
    if body.get("name", name) != name:
        raise BadRequest(f"rename {name}", user_message=f"A hub user's name is its account's: "
                         f"rename the account on the machine (usermod -l NEW {name}); the hub "
                         "follows at the next login.")
    check_admin_flag(body, name, record.admin, request.app["config"].auth)
    for key in ("groups", "roles", "auth_state"):
        if key in body:
            raise BadRequest(f"PATCH {key}", user_message=f"{key} is not changed here: "
                             "groups through /hub/api/groups/<group>/users, roles in the "
                             "configuration ([roles.*]); there is no auth_state.")
    return web.json_response(visible(request, identity, full_model(request, record)))


async def delete_user(request: web.Request) -> web.Response:
    """DELETE /hub/api/users/{name}: forget the user in the hub (servers stopped, sessions
    and tokens ended); the OS account and its home stay. 204."""
    identity, name = await authorize_user(request, "delete:users")
    await user_record(request, name)
    if identity.is_user(name):
        raise BadRequest(f"{name} deleting themselves", user_message="Cannot delete yourself!")
    await accountwatch.remove_from_hub(request.app, name, identity.name)
    return web.Response(status=204)


def activity_time(text, now: float) -> float:
    """A reported activity time (ISO 8601) as seconds; 400 for nonsense or the future."""
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise BadRequest(f"bad timestamp {text!r}", user_message=f"Not a valid timestamp: "
                         f"{text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    seconds = when.timestamp()
    if seconds - now > FUTURE_SLACK:
        raise BadRequest("activity in the future", user_message="Rejecting activity from more "
                         f"than an hour in the future: {isoformat(seconds)}")
    return seconds


async def post_activity(request: web.Request) -> web.Response:
    """POST /hub/api/users/{name}/activity (what jupyterhub-singleuser sends):
    {"last_activity": ..., "servers": {"<server>": {"last_activity": ...}}}; a time never
    moves back."""
    _, name = await authorize_user(request, "users:activity")
    await user_record(request, name)
    body = await json_object(request, "the activity", '{"last_activity": "2026-12-03T10:00Z"}')
    now, servers = time.time(), body.get("servers")
    if not body.get("last_activity") and not servers:
        raise BadRequest("no activity", user_message="body must contain at least one of "
                         "`last_activity` or `servers`")
    shape = ("servers must be a dict of the form {server_name: {last_activity: timestamp}}")
    updates = []
    if servers:
        if not isinstance(servers, dict):
            raise BadRequest("bad servers", user_message=shape)
        spawner = request.app["spawner"]
        for server_name, info in servers.items():
            server = spawner.find(name, server_name)
            if server is None:
                raise BadRequest(f"no server {server_name!r}", user_message=f"No such server "
                                 f"'{server_name}' for user {name}")
            if not isinstance(info, dict) or "last_activity" not in info:
                raise BadRequest("bad servers", user_message=shape)
            updates.append((server, activity_time(info["last_activity"], now)))
    if body.get("last_activity"):
        await request.app["store"].touch_user(name, activity_time(body["last_activity"], now))
    for server, when in updates:
        server.last_activity = max(server.last_activity or 0, when)
    return web.Response(status=200)

