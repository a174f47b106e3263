"""/services/<name>/...: relay to a service's url (a loopback port or a UNIX socket).

As JupyterHub's proxy does, the hub asks for no login here: a service authenticates its users
itself (with the client's own token, passed through, or through the hub's OAuth), so the
relay keeps the client's Authorization and drops only the hub's own cookies.
"""

from aiohttp import web

from appliance.errors import NotFound
from appliance.identity import HUB_COOKIES
from appliance.proxy import normalise_service_path, relay
from appliance.serviceunits import prefix


def setup(app: web.Application) -> None:
    """Route everything under /services/ to the relay."""
    app.router.add_route("*", "/services/{tail:.*}", handle_service_request)


async def handle_service_request(request: web.Request) -> web.StreamResponse:
    """Relay to the service named in the path, with the path as it came (normalised): a
    service serves under its prefix, JUPYTERHUB_SERVICE_PREFIX."""
    name, path = normalise_service_path(request.raw_path.partition("?")[0])
    upstream = request.app["services"].upstream(name, request.app["config"].proxy)
    if upstream is None:
        raise NotFound(f"no web service {name!r}", user_message="There is no such service.")
    await request.app["services"].check_listener(name)
    return await relay(request, upstream, path, hub_cookies=HUB_COOKIES,
                       websockets=request.app["websockets"], prefix=prefix(name))
