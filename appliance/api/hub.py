"""The hub as a whole, for administrators: the machine's figures (/hub/api/stats) and who
used what (/hub/api/usage). Extra endpoints of ours, beside JupyterHub's."""

import time
from datetime import datetime

from aiohttp import web

from appliance import capacity
from appliance.api.base import isoformat, require_identity
from appliance.errors import BadRequest, Forbidden


def setup(app: web.Application) -> None:
    """Register the routes."""
    app.router.add_get("/hub/api/stats", get_stats)
    app.router.add_get("/hub/api/usage", get_usage)


async def require_admin(request: web.Request):
    """The calling admin; Forbidden for others."""
    identity = await require_identity(request)
    if not identity.admin:
        raise Forbidden(f"{identity.name} is not an admin", user_message="Admins only.")
    return identity


async def get_stats(request: web.Request) -> web.Response:
    """GET /hub/api/stats: the servers' memory, its cap, the RAM, load, running, pending."""
    await require_admin(request)
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
    """GET /hub/api/usage?since=…: every server session that ended since then."""
    await require_admin(request)
    rows = await request.app["store"].usage(since_of(request))
    return web.json_response([{
        "user": r.user, "server": r.server, "profile": r.profile,
        "started": isoformat(r.started), "stopped": isoformat(r.stopped), "cause": r.cause,
        "cpu_seconds": r.cpu_seconds, "peak_memory": r.peak_memory} for r in rows])
