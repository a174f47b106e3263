"""/user/<name>/...: check who may reach the server, then hand the request to the proxy.

The owner check runs on the normalised path, and the normalised path is what gets relayed,
so what was checked is what the server sees.
"""

import time
from urllib.parse import quote

from aiohttp import web

from appliance import access, origins, units
from appliance.errors import Forbidden, NotFound, ServerNotRunning
from appliance.identity import HUB_COOKIES, SERVER_SESSION_COOKIE, set_cookie
from appliance.proxy import close_all, normalise_user_path, relay
from appliance.userserver import Server


def setup(app: web.Application) -> None:
    """Route everything under /user/ to the proxy handler; close websockets on shutdown."""
    app["websockets"] = set()
    app.router.add_route("*", "/user/{tail:.*}", handle_user_request)
    app.router.add_get(origins.EXCHANGE_PATH, exchange_code)
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
    user_domain = request.app["config"].hub.user_domain
    if request.get("user_label") is not None:
        origins.check_user_host_path(request["user_label"], user)
    identity = await request.app["identities"].of_request(request)
    if identity is None:
        if is_api_request(request, path, user):
            raise Forbidden("no credentials for a user server",
                            user_message="Log in to the hub first.")
        if request.get("user_label") is not None:  # the hub logs in, or hands over a code
            raise web.HTTPFound(origins.hub_origin(request, user_domain) + request.raw_path)
        raise web.HTTPFound("/hub/login?next=" + quote(path))
    spawner = request.app["spawner"]
    server = server_for(spawner, user, path)
    # The server the path reaches is the one checked: a token for alice's default server
    # (access:servers!server=alice/) does not open her named ones.
    access.check_open(identity, user, request.app["config"].auth.admin_access,
                      server.name if server is not None else "")
    if user_domain and request.get("user_label") is None and identity.via == "cookie":
        return to_user_host(request, user_domain, identity.name, user, path)
    if server is None:
        if not identity.is_user(user):  # an admin asking after a user the hub never saw
            raise NotFound(f"no server for {user}", user_message="There is no such server.")
        server = spawner.get(user)
    if not server.ready:
        return not_running(request, server, path, user)
    server.last_activity = time.time()
    # A request in flight (a kernel starting, a download) is activity until it ends; an open
    # websocket is not (an idle browser tab holds one): its messages count, one by one.
    server.requests_in_flight += 1
    try:
        return await relay(request, server.upstream, path, hub_cookies=HUB_COOKIES,
                           websockets=request.app["websockets"], prefix=server.url,
                           touch=lambda: setattr(server, "last_activity", time.time()))
    finally:
        server.requests_in_flight -= 1
        server.last_activity = time.time()


def to_user_host(request: web.Request, user_domain: str, identity: str, user: str,
                 path: str) -> web.StreamResponse:
    """A browser on the hub's origin goes to the user's own host with a one-time code; a
    write or websocket there is refused (the hub's pages never send one)."""
    upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    if request.method not in ("GET", "HEAD") or upgrade:
        raise Forbidden(f"{request.method} to {path!r} on the hub's origin",
                        user_message="Servers are reached at their own address; open yours "
                                     "from the hub's home page.")
    query = request.raw_path.partition("?")[2]
    raise origins.redirect_to_user_host(request, user_domain, identity, user,
                                        path + (f"?{query}" if query else ""))


async def exchange_code(request: web.Request) -> web.Response:
    """GET /hub/user-login?code=…&next=… on a user's host: a session cookie for this host
    in exchange for the hub's one-time code, then on to the server."""
    label = request.get("user_label")
    if label is None:
        raise NotFound("code exchange on the hub's own host",
                       user_message="There is no such page.")
    handoff = request.app["handoffs"].redeem(request.query.get("code", ""))
    origins.check_user_host_path(label, handoff.user)
    prefix = units.base_url(handoff.user)
    target = request.query.get("next", "")
    if not target.startswith(prefix) or "\\" in target:
        target = prefix
    secret = await request.app["identities"].start_session(handoff.identity,
                                                          request["user_host"])
    response = web.HTTPFound(target)
    set_cookie(response, request, SERVER_SESSION_COOKIE, secret,
               max_age=request.app["config"].hub.session_max_age)
    raise response


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
