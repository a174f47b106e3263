"""The REST API under /hub/api/, shaped like JupyterHub 5's so existing tools work; one
module per resource, as JupyterHub's apihandlers/ (users, servers, tokens, groups, services,
hub, oauth), shared helpers in base. Every endpoint asks for the scope JupyterHub requires for it.

Field names and status codes follow JupyterHub's REST API (docs/source/_static/rest-api.yml).
"""

from aiohttp import web

from appliance.api import groups, hub, oauth, servers, services, tokens, users
from appliance.api.base import authorize, isoformat, require_identity
from appliance.api.hub import JUPYTERHUB_API_VERSION
from appliance.api.servers import api_path, server_model, start_spawn
from appliance.api.users import user_model

__all__ = ["JUPYTERHUB_API_VERSION", "api_path", "authorize", "isoformat", "require_identity",
           "server_model", "setup", "start_spawn", "user_model"]


def setup(app: web.Application) -> None:
    """Register the API routes, resource by resource."""
    users.setup(app)
    servers.setup(app)
    tokens.setup(app)
    groups.setup(app)
    services.setup(app)
    hub.setup(app)
    oauth.setup(app)
