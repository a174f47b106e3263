"""/user/<name>/...: check who may reach the server, then hand the request to the proxy.

The owner check runs on the normalised path, and the normalised path is what gets relayed,
so what was checked is what the server sees.
"""

import time
from urllib.parse import quote

from aiohttp import web

from appliance import access
from appliance.errors import Forbidden, NotFound, ServerNotRunning
from appliance.identity import HUB_COOKIES
from appliance.proxy import close_all, normalise_user_path, relay
from appliance.userserver import Server


def setup(app: web.Application) -> None:
    """Route everything under /user/ to the proxy handler; close websockets on shutdown."""
    app["websockets"] = set()
    app.router.add_route("*", "/user/{tail:.*}", handle_user_request)
    app.on_shutdown.append(close_websockets)


async def close_websockets(app: web.Application) -> None:
    """Close every relayed websocket, so a hub restart does not wait on them."""
    await close_all(app["websockets"])


def is_api_request(request: web.Request, path: str, user: str) -> bool:
    """JupyterHub's rule: API paths, token-authenticated calls and non-HTML clients."""
    rest = path[len(f"/user/{user}/"):]
    return (rest.startswith("api/") or bool(request.headers.get("Authorization"))
            or "text/html" not in request.headers.get("Accept", "text/html"))


async def handle_user_request(request: web.Request) -> web.StreamResponse:
    """Relay to the owner's server, or explain why not."""
    user, path = normalise_user_path(request.raw_path.partition("?")[0])
    identity = await request.app["identities"].of_request(request)
    if identity is None:
        if is_api_request(request, path, user):
            raise Forbidden("no credentials for a user server",
                            user_message="Log in to the hub first.")
        raise web.HTTPFound("/hub/login?next=" + quote(path))
    access.check_open(identity, user, request.app["config"].auth.admin_access)
    spawner = request.app["spawner"]
    server = server_for(spawner, user, path)
    if server is None:
        if identity.name != user:  # an admin asking after a user the hub has never seen
            raise NotFound(f"no server for {user}", user_message="There is no such server.")
        server = spawner.get(user)
    if not server.ready:
        return not_running(request, server, path, user)
    server.last_activity = time.time()
    return await relay(request, server.upstream, path, hub_cookies=HUB_COOKIES,
                       websockets=request.app["websockets"], prefix=server.url)


def server_for(spawner, user: str, path: str) -> Server | None:
    """The server a /user/<user>/... path reaches: a named server when the next segment names
    one the user has (/user/alice/lab/...), else the default one; None when the hub has not
    seen the default one yet."""
    first = path[len(f"/user/{user}/"):].partition("/")[0]
    if first and (named := spawner.find(user, first)) is not None:
        return named
    return spawner.find(user)


def not_running(request: web.Request, server: Server, path: str,
                user: str) -> web.StreamResponse:
    """API clients get 424 as from JupyterHub; browsers go to the spawn page."""
    if is_api_request(request, path, user):
        raise ServerNotRunning(f"{server.label}'s server is not running",
                               user_message=f"{server.label}'s server is not running.")
    target = "spawn-pending" if server.pending == "spawn" else "spawn"
    raise web.HTTPFound(f"/hub/{target}/{server.route}?next={quote(path)}")
