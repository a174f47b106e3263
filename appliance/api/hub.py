"""The hub as a whole: its version and details (/hub/api/, /hub/api/info), its health
(/hub/health), its routes (/hub/api/proxy, read-only: the hub is its own proxy), shutdown
(refused: systemd owns the hub's life), and two endpoints of ours beside JupyterHub's: the
machine's figures (/hub/api/stats) and who used what (/hub/api/usage)."""

import sys
import time
from datetime import datetime

from aiohttp import web

from appliance import __version__, capacity
from appliance.api.base import authorize, isoformat, paginated, pagination
from appliance.errors import BadRequest

#: The JupyterHub REST API level we implement (clients compare against it: the idle culler
#: filters users by state from 1.3 on).
JUPYTERHUB_API_VERSION = "5.3.0"


def setup(app: web.Application) -> None:
    """Register the routes."""
    r = app.router
    r.add_get("/hub/api", get_version)
    r.add_get("/hub/api/", get_version)
    r.add_get("/hub/api/info", get_info)
    r.add_get("/hub/health", get_health)
    r.add_get("/hub/api/proxy", get_proxy)
    r.add_post("/hub/api/shutdown", post_shutdown)
    r.add_get("/hub/api/stats", get_stats)
    r.add_get("/hub/api/usage", get_usage)


async def get_version(request: web.Request) -> web.Response:
    """GET /hub/api/: the version (no authentication, as JupyterHub)."""
    return web.json_response({"version": JUPYTERHUB_API_VERSION, "appliance": __version__})


async def get_info(request: web.Request) -> web.Response:
    """GET /hub/api/info (read:hub): versions, Python, the spawner and authenticator."""
    await authorize(request, "read:hub")
    return web.json_response({
        "version": JUPYTERHUB_API_VERSION, "appliance": __version__, "python": sys.version,
        "sys_executable": sys.executable,
        "spawner": {"class": "appliance.spawner.Spawner", "version": __version__},
        "authenticator": {"class": "appliance.auth.Authenticator", "version": __version__},
    })


async def get_health(request: web.Request) -> web.Response:
    """GET /hub/health: 200 while the hub answers (JupyterHub's probe; no authentication)."""
    return web.Response(status=200)


def routes(request: web.Request) -> dict:
    """The routes the hub serves, in JupyterHub's proxy shape: the hub at /, each service
    with a url at its prefix (data: its name), each running server at its prefix, over its
    socket."""
    found = {"/": {"routespec": "/", "target": f"http://{request.host}", "data": {"hub": True}}}
    for name, service in request.app["config"].services:
        if service.url:
            found[f"/services/{name}/"] = {"routespec": f"/services/{name}/",
                                           "target": service.url, "data": {"service": name}}
    for server in request.app["spawner"].servers.values():
        if server.state == "stopped":
            continue
        found[server.url] = {"routespec": server.url, "target": f"unix:{server.paths.socket}",
                             "data": {"user": server.user, "server_name": server.name,
                                      "last_activity": isoformat(server.last_activity)}}
    return found


async def get_proxy(request: web.Request) -> web.Response:
    """GET /hub/api/proxy (proxy): the routing table, a page at a time. Only reading: the
    hub relays itself, so there is no proxy to sync or replace."""
    await authorize(request, "proxy")
    offset, limit = pagination(request)
    table = routes(request)
    page = {key: table[key] for key in sorted(table)[offset:offset + limit]}
    return web.json_response(paginated(request, page, offset, limit, len(table)))


async def post_shutdown(request: web.Request) -> web.Response:
    """POST /hub/api/shutdown (shutdown): refused, in words; systemd runs the hub."""
    await authorize(request, "shutdown")
    raise BadRequest("shutdown asked through the API", user_message=(
        "This hub is a systemd service and does not stop itself: run 'systemctl stop "
        "notebook-appliance' (or restart) on its machine. Users' servers are their own units "
        "and keep running across a restart."))


async def get_stats(request: web.Request) -> web.Response:
    """GET /hub/api/stats (read:hub): the servers' memory, its cap, the RAM, load, running,
    pending."""
    await authorize(request, "read:hub")
    return web.json_response(await capacity.host_figures(request.app["spawner"]))


def since_of(request: web.Request) -> float:
    """?since= as ISO 8601 or seconds since the epoch; the last 30 days by default."""
    text = request.query.get("since")
    if not text:
        return time.time() - 30 * 86400
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise BadRequest(f"bad since {text!r}", user_message="since must be an ISO 8601 time "
                         'like "2026-12-01T00:00:00Z" or seconds since 1970.') from None


async def get_usage(request: web.Request) -> web.Response:
    """GET /hub/api/usage?since=… (read:metrics, as /hub/metrics): every server session that
    ended since then."""
    await authorize(request, "read:metrics")
    rows = await request.app["store"].usage(since_of(request))
    return web.json_response([{
        "user": r.user, "server": r.server, "profile": r.profile,
        "started": isoformat(r.started), "stopped": isoformat(r.stopped), "cause": r.cause,
        "cpu_seconds": r.cpu_seconds, "peak_memory": r.peak_memory} for r in rows])
