"""The users resource: the caller's own model and the users list and models
(JupyterHub's /user, /users and /users/<name>)."""

from aiohttp import web

from appliance.api.base import isoformat, require_access, require_identity
from appliance.api.servers import server_model
from appliance.errors import Forbidden, NotFound
from appliance.userserver import Server, ServerState


def setup(app: web.Application) -> None:
    """Register the user routes."""
    r = app.router
    r.add_get("/hub/api/user", get_self)
    r.add_get("/hub/api/users", get_users)
    r.add_get("/hub/api/users/{name}", get_user)


def user_model(record, servers: list[Server], sampler=None) -> dict:
    """JupyterHub's user model; `servers` lists the active ones, as JupyterHub does (with
    the sampler: each with its live memory and CPU)."""
    default = next((s for s in servers if not s.name), None)
    active = [s for s in servers if s.state != ServerState.STOPPED]
    return {
        "kind": "user", "name": record.name, "admin": record.admin, "groups": [],
        "server": default.url if default is not None and default.ready else None,
        "pending": default.pending if default is not None else None,
        "created": isoformat(record.created),
        "last_activity": isoformat(max(filter(None, [
            record.last_activity, *(s.last_activity for s in servers)]), default=None)),
        "servers": {s.name: server_model(s, sampler) for s in active},
    }


def servers_of(request: web.Request, name: str) -> list[Server]:
    """A user's default server (if the hub knows it) and named servers."""
    spawner = request.app["spawner"]
    default = spawner.find(name)
    return ([default] if default else []) + spawner.named(name)


async def user_record(request: web.Request, name: str):
    """The store's record of a user; NotFound when the hub has never seen them."""
    record = await request.app["store"].get_user(name)
    if record is None:
        raise NotFound(f"no user {name}", user_message=f"No user named {name}.")
    return record


async def get_self(request: web.Request) -> web.Response:
    """GET /hub/api/user: the caller's own model."""
    identity = await require_identity(request)
    return web.json_response(await _model_of(request, identity.name))


async def get_users(request: web.Request) -> web.Response:
    """GET /hub/api/users: every user (admins only)."""
    identity = await require_identity(request)
    if not identity.admin:
        raise Forbidden(f"{identity.name} is not an admin", user_message="Admins only.")
    records = await request.app["store"].list_users()
    sampler = request.app["spawner"].sampler
    return web.json_response([user_model(r, servers_of(request, r.name), sampler)
                              for r in records])


async def get_user(request: web.Request) -> web.Response:
    """GET /hub/api/users/{name}."""
    _, name = await require_access(request)
    return web.json_response(await _model_of(request, name))


async def _model_of(request: web.Request, name: str) -> dict:
    return user_model(await user_record(request, name), servers_of(request, name),
                      request.app["spawner"].sampler)
