"""Services: GET /services and /services/<name> (JupyterHub 5's service model and scopes),
and the service model GET /user answers to a service's own token."""

from aiohttp import web

from appliance import access, scopes, serviceunits
from appliance.api.base import authorize, require_identity
from appliance.identity import Identity

#: Which scope shows which keys of a service's model (JupyterHub's service_model access map).
ACCESS_MAP = {
    "read:services": {"kind", "name", "admin", "url", "prefix", "command", "pid", "info",
                      "display"},
    "read:services:name": {"kind", "name", "admin"},
    "read:roles:services": {"kind", "name", "roles", "admin"},
}


def setup(app: web.Application) -> None:
    """Register the service routes."""
    app.router.add_get("/hub/api/services", get_services)
    app.router.add_get("/hub/api/services/{name}", get_service)


async def full_model(request: web.Request, name: str) -> dict:
    """Everything JupyterHub's service model holds, for a configured service."""
    service = dict(request.app["config"].services)[name]
    roles = request.app["identities"].roles.of_service(name)
    return {
        "kind": "service", "name": name, "roles": roles, "admin": "admin" in roles,
        "url": service.url, "prefix": serviceunits.prefix(name) if service.url else "",
        "command": list(service.command),
        "pid": await request.app["services"].main_pid(name),
        "info": {}, "display": True,
    }


def visible(identity: Identity, name: str, model: dict) -> dict:
    """The keys of model identity's scopes show (JupyterHub's _filter_model)."""
    keys = set()
    for scope, shown in ACCESS_MAP.items():
        if access.allows(identity, scope, service=name):
            keys |= shown
    return {k: v for k, v in model.items() if k in keys}


async def get_services(request: web.Request) -> web.Response:
    """GET /hub/api/services: name -> model, for the services the caller may list."""
    identity = await require_identity(request)
    access.require_some(identity, "list:services")
    out = {}
    for name in dict(request.app["config"].services):
        if access.allows(identity, "list:services", service=name):
            out[name] = visible(identity, name, await full_model(request, name))
    return web.json_response(out)


async def get_service(request: web.Request) -> web.Response:
    """GET /hub/api/services/<name>."""
    name = request.match_info["name"]
    identity = await authorize(request, "read:services", "read:services:name",
                               "read:roles:services", service=name)
    if name not in dict(request.app["config"].services):
        raise web.HTTPNotFound(reason=f"No such service: {name}")
    return web.json_response(visible(identity, name, await full_model(request, name)))


async def self_model(request: web.Request, identity: Identity) -> dict:
    """GET /hub/api/user for a service's token: its model, as far as its scopes and reading
    its own name show it, with JupyterHub's token_id, session_id and scopes."""
    name = identity.name
    seen = Identity(name, identity.admin, identity.via, identity.roles,
                    identity.scopes | scopes.identify_service_scopes(name), identity.token_id,
                    kind="service")
    model = visible(seen, name, await full_model(request, name))
    model["token_id"] = f"a{identity.token_id}" if identity.token_id is not None else None
    model["session_id"] = None
    model["scopes"] = sorted(identity.scopes)
    return model
