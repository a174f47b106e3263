"""The groups resource (JupyterHub's /groups, /groups/<g>, /groups/<g>/users and
/groups/<g>/properties): hub groups made here, and the unix groups of auth.sync_groups,
which are shown but not changed here (groups.py).
"""

from aiohttp import web

from appliance import access
from appliance.api.base import authorize, authorize_listing, json_object, paginated, pagination
from appliance.errors import BadRequest, Exists
from appliance.groups import Group
from appliance.identity import Identity

#: Which fields of a group model each scope shows (JupyterHub's group_model access_map).
FIELDS_BY_SCOPE = {
    "read:groups": {"kind", "name", "properties", "users"},
    "read:groups:name": {"kind", "name"},
    "read:roles:groups": {"kind", "name", "roles"},
}
_USERS_EXAMPLE = '{"users": ["alice", "bob"]}'


def setup(app: web.Application) -> None:
    """Register the group routes."""
    r = app.router
    r.add_get("/hub/api/groups", list_groups)
    r.add_post("/hub/api/groups", post_groups)
    r.add_get("/hub/api/groups/{group}", get_group)
    r.add_post("/hub/api/groups/{group}", post_group)
    r.add_delete("/hub/api/groups/{group}", delete_group)
    r.add_post("/hub/api/groups/{group}/users", add_users)
    r.add_delete("/hub/api/groups/{group}/users", remove_users)
    r.add_put("/hub/api/groups/{group}/properties", put_properties)


def group_model(request: web.Request, identity: Identity, group: Group) -> dict:
    """JupyterHub's group model, as far as the caller's scopes show it."""
    roles = [name for name, role in request.app["config"].roles if group.name in role.groups]
    model = {"kind": "group", "name": group.name, "roles": roles, "users": list(group.users),
             "properties": group.properties}
    keys = set()
    for scope, fields in FIELDS_BY_SCOPE.items():
        if access.allows(identity, scope, group=group.name):
            keys |= fields
    return {k: v for k, v in model.items() if k in keys}


def check_name(name: str) -> str:
    """A group name usable in URLs and in scope filters (!group=<name>)."""
    if not name or len(name) > 255 or not name.isprintable() or "!" in name or "/" in name:
        raise BadRequest(f"bad group name {name!r}", user_message=f"Invalid group name: "
                         f"{name!r} (1-255 printable characters, no / or !)")
    return name


async def hub_users(request: web.Request, body: dict, verb: str) -> list[str]:
    """body["users"]: names of hub users (JupyterHub's _usernames_to_users), 400 else."""
    users = body.get("users")
    if users is None:
        raise BadRequest("no users", user_message=f"Must specify users to {verb}")
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        raise BadRequest("bad users", user_message=f"users must be a list of names, like "
                         f"{_USERS_EXAMPLE}")
    for name in users:
        if await request.app["store"].get_user(name) is None:
            raise BadRequest(f"no user {name!r}", user_message=f"No such user: {name}")
    return users


def changed(request: web.Request, users) -> None:
    """Members came or went: their roles by group may have changed, look them up again."""
    for name in users:
        request.app["identities"].forget_user(name)


async def list_groups(request: web.Request) -> web.Response:
    """GET /hub/api/groups: the groups the caller may list, a page at a time."""
    identity = await authorize_listing(request, "list:groups")
    groups = request.app["groups"]
    await groups.fresh()
    offset, limit = pagination(request)
    chosen = [g for g in groups.all() if access.allows(identity, "list:groups", group=g.name)]
    page = [group_model(request, identity, g) for g in chosen[offset:offset + limit]]
    return web.json_response(paginated(request, page, offset, limit, len(chosen)))


async def create(request: web.Request, name: str, users: list[str]) -> Group:
    """Make one hub group; 409 when it exists."""
    groups = request.app["groups"]
    await groups.fresh()
    if not await groups.create(check_name(name), users):
        raise Exists(f"group {name!r} exists", user_message=f"Group {name} already exists")
    changed(request, users)
    return groups.get(name)


async def post_groups(request: web.Request) -> web.Response:
    """POST /hub/api/groups {"groups": [...], "users": [...]}: 201 with the new groups."""
    identity = await authorize(request, "admin:groups")
    body = await json_object(request, "the body", '{"groups": ["course"], "users": []}')
    names = body.get("groups")
    if not names or not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest("no groups", user_message="Must specify at least one group to create")
    users = await hub_users(request, {"users": body.get("users", [])}, "add")
    made = [await create(request, name, users) for name in names]
    return web.json_response([group_model(request, identity, g) for g in made], status=201)


async def get_group(request: web.Request) -> web.Response:
    """GET /hub/api/groups/{group}."""
    name = request.match_info["group"]
    identity = await authorize(request, "read:groups", "read:groups:name", "read:roles:groups",
                               group=name)
    await request.app["groups"].fresh()
    return web.json_response(group_model(request, identity, request.app["groups"].get(name)))


async def post_group(request: web.Request) -> web.Response:
    """POST /hub/api/groups/{group} {"users": [...]}: 201 with the new group."""
    name = request.match_info["group"]
    identity = await authorize(request, "admin:groups", group=name)
    body = await json_object(request, "the group", _USERS_EXAMPLE)
    users = await hub_users(request, {"users": body.get("users", [])}, "add")
    group = await create(request, name, users)
    return web.json_response(group_model(request, identity, group), status=201)


async def delete_group(request: web.Request) -> web.Response:
    """DELETE /hub/api/groups/{group}: 204."""
    name = request.match_info["group"]
    await authorize(request, "delete:groups", group=name)
    groups = request.app["groups"]
    members = groups.writable(name).users
    await groups.delete(name)
    changed(request, members)
    return web.Response(status=204)


async def _members(request: web.Request, member: bool) -> web.Response:
    name = request.match_info["group"]
    identity = await authorize(request, "groups", group=name)
    groups = request.app["groups"]
    groups.writable(name)
    body = await json_object(request, "the users", _USERS_EXAMPLE)
    users = await hub_users(request, body, "add" if member else "delete")
    await groups.set_members(name, users, member)
    changed(request, users)
    return web.json_response(group_model(request, identity, groups.get(name)))


async def add_users(request: web.Request) -> web.Response:
    """POST /hub/api/groups/{group}/users {"users": [...]}: the group afterwards."""
    return await _members(request, True)


async def remove_users(request: web.Request) -> web.Response:
    """DELETE /hub/api/groups/{group}/users {"users": [...]}: the group afterwards."""
    return await _members(request, False)


async def put_properties(request: web.Request) -> web.Response:
    """PUT /hub/api/groups/{group}/properties {...}: replaces them; the group afterwards."""
    name = request.match_info["group"]
    identity = await authorize(request, "groups", group=name)
    groups = request.app["groups"]
    groups.writable(name)
    if not request.can_read_body:
        raise BadRequest("no properties", user_message="Must specify properties")
    properties = await json_object(request, "the properties", '{"course": "101"}')
    await groups.set_properties(name, properties)
    return web.json_response(group_model(request, identity, groups.get(name)))
