"""The REST API under /hub/api/, shaped like JupyterHub's so existing tools work; one module
per resource, as JupyterHub's apihandlers/ (users, servers, tokens), shared helpers in base.

Field names and status codes follow JupyterHub's REST API (docs: reference/rest-api).
"""

from aiohttp import web

from appliance import __version__
from appliance.api import hub, servers, tokens, users
from appliance.api.base import isoformat, require_access, require_identity
from appliance.api.servers import api_path, server_model, start_spawn
from appliance.api.users import user_model

__all__ = ["api_path", "isoformat", "require_access", "require_identity", "server_model",
           "setup", "start_spawn", "user_model"]

#: The JupyterHub REST API level we implement; clients compare against it.
JUPYTERHUB_API_VERSION = "4.0.0"


def setup(app: web.Application) -> None:
    """Register the API routes, resource by resource."""
    app.router.add_get("/hub/api", get_info)
    app.router.add_get("/hub/api/", get_info)
    users.setup(app)
    servers.setup(app)
    tokens.setup(app)
    hub.setup(app)


async def get_info(request: web.Request) -> web.Response:
    """GET /hub/api/: the version (no authentication, as JupyterHub)."""
    return web.json_response({"version": JUPYTERHUB_API_VERSION, "appliance": __version__})
