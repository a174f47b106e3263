"""The aiohttp application: its parts on app[...], their start-up and clean-up, and routes.

No globals (aiohttp's "No Singletons Please"): everything a handler needs hangs off the app.
Errors become HTTP responses in one place, error_middleware.
"""

import asyncio
import logging
import os
import secrets
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from aiohttp import web

from appliance import (
    accountwatch,
    adminpages,
    api,
    cgroups,
    culler,
    firstlogin,
    metrics,
    oauth,
    origins,
    pages,
    periodic,
    profiles,
    rosterpages,
    serverpages,
    serviceproxy,
    tokenpages,
    usage,
    userproxy,
)
from appliance.auth import Authenticator
from appliance.clientaddr import is_loopback
from appliance.config import Config
from appliance.errors import ApplianceError, Forbidden, NotFound
from appliance.events import Event, Kind
from appliance.groups import Groups
from appliance.identity import Identities, same_origin
from appliance.roles import Roles
from appliance.services import Services
from appliance.spawner import Spawner
from appliance.store import Store
from appliance.systemd import Systemd

log = logging.getLogger(__name__)


def build_app(cfg: Config, middlewares: Sequence = ()) -> web.Application:
    """An application wired for cfg; parts start in cleanup contexts, in order.

    middlewares run outermost, before the hub's own (serve() passes its shutdown drain).
    """
    app = web.Application(
        middlewares=[*middlewares, metrics.timing_middleware, forwarded_proto_middleware,
                     error_middleware,
                     user_host_middleware, same_origin_middleware],
        client_max_size=1024**2)
    app["config"] = cfg
    app["handoffs"] = origins.Handoffs()
    app["first_logins"] = firstlogin.FirstLogins()
    #: The hub's OAuth clients (servers, services) and their codes: oauth.py says how to
    #: register one.
    app["oauth_clients"] = oauth.Clients()
    #: Where students reach the hub (net.py), filled in by serve() once it listens.
    app["urls"] = []
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_auth_ctx)
    app.cleanup_ctx.append(_spawner_ctx)
    app.cleanup_ctx.append(_services_ctx)
    app.cleanup_ctx.append(accountwatch.watch_ctx)
    app.cleanup_ctx.append(periodic.job("cgroup sampling", lambda app: cgroups.EVERY,
                                        cgroups.sample))
    app.cleanup_ctx.append(culler.culler_ctx)
    app.cleanup_ctx.append(usage.usage_ctx)
    app.cleanup_ctx.append(metrics.metrics_ctx)
    app.cleanup_ctx.append(_reconcile_ctx)
    metrics.setup(app)
    pages.setup(app)
    adminpages.setup(app)
    serverpages.setup(app)
    tokenpages.setup(app)
    rosterpages.setup(app)
    api.setup(app)
    userproxy.setup(app)
    serviceproxy.setup(app)
    return app


async def _store_ctx(app: web.Application):
    cfg = app["config"]
    store = Store(cfg.hub.state_dir / "appliance.sqlite")
    await store.open()
    app["store"] = store
    yield
    await store.close()


async def _auth_ctx(app: web.Application):
    cfg = app["config"]
    loop = asyncio.get_running_loop()
    app["secret"] = await loop.run_in_executor(None, load_secret, cfg.hub.state_dir / "hub-secret")
    app["auth"] = auth = Authenticator(cfg.auth)
    app["groups"] = groups = Groups(app["store"], cfg.auth.sync_groups)
    await groups.refresh()
    app["identities"] = Identities(app["store"], auth, cfg.hub.session_max_age, app["secret"],
                                   Roles(cfg, groups.of_user))
    yield
    auth.close()


async def _spawner_ctx(app: web.Application):
    cfg = app["config"]
    systemd = Systemd()
    await systemd.connect()
    loop = asyncio.get_running_loop()
    app["profiles"] = await loop.run_in_executor(None, profiles.load, cfg)
    app["spawner"] = spawner = Spawner(cfg, systemd, app["store"], app["secret"],
                                       app["profiles"], app["oauth_clients"])
    app["systemd"] = systemd
    spawner.subscribe(partial(_forget_stopped, app["identities"]))
    yield
    await spawner.close()
    await systemd.close()


def _forget_stopped(identities: Identities, event: Event) -> None:
    """A stopped server's token was deleted (spawner._revoke): its cached identity goes too,
    so it is refused from the next request on."""
    if event.kind == Kind.STOPPED:
        identities.forget_user(event.server.user)


async def _services_ctx(app: web.Application):
    """[services.*]: their tokens in the store now; their units once the hub listens
    (start_all, from server.serve: they are told the hub's address)."""
    app["services"] = services = Services(app["config"], app["systemd"], app["store"],
                                           app["oauth_clients"])
    await services.sync_tokens()
    yield
    await services.close()


async def _reconcile_ctx(app: web.Application):
    """Adopt the servers still running (after the listeners have subscribed, so a server
    that ended while the hub was down is recorded too), then watch them."""
    await app["spawner"].reconcile()
    app["spawner"].start_watching()
    yield


def load_secret(path: Path) -> bytes:
    """The hub's own secret (server and CSRF tokens derive from it), 0600, made on first start."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    return path.read_bytes()


def wants_json(request: web.Request) -> bool:
    """True for API clients: /hub/api/ paths (but OAuth's authorization page, which
    browsers open), tokens, or no HTML in Accept."""
    if request.path.startswith("/hub/api") and request.path != oauth.AUTHORIZE_PATH:
        return True
    if request.headers.get("Authorization"):
        return True
    return "text/html" not in request.headers.get("Accept", "text/html")


@web.middleware
async def forwarded_proto_middleware(request: web.Request, handler):
    """Behind TLS-terminating nginx on this machine (examples/nginx.conf), act as HTTPS.

    Trusted only from a loopback peer, where only the local proxy should be: cookies are then
    marked Secure and users' servers are told https. A remote client's header changes nothing.
    """
    if (request.headers.get("X-Forwarded-Proto") == "https" and not request.secure
            and is_loopback(request.remote)):
        request = request.clone(scheme="https")
    return await handler(request)


@web.middleware
async def user_host_middleware(request: web.Request, handler):
    """With per-user origins, a request to a user's host may reach only /user/… (checked
    further in userproxy) and the code exchange: nothing of the hub's own."""
    label = origins.user_label(request, request.app["config"].hub.user_domain)
    if label is None:
        return await handler(request)
    if request.path != origins.EXCHANGE_PATH and not request.path.startswith("/user/"):
        raise NotFound(f"{request.path!r} on a user's host",
                       user_message="There is no such page on this address.")
    request["user_host"] = origins.hostname(request)
    request["user_label"] = label
    return await handler(request)


#: Methods that change nothing; everything else must come from the hub's own pages.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@web.middleware
async def same_origin_middleware(request: web.Request, handler):
    """Refuse a browser's write or websocket upgrade that another origin made it send
    (identity.same_origin), before anything reaches the hub's handlers or a user's server.
    A request with its own Authorization header carries no ambient credential: unaffected."""
    upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    if ((request.method not in SAFE_METHODS or upgrade)
            and not request.headers.get("Authorization") and not same_origin(request)):
        log.warning("refused %s %r from origin %r (Sec-Fetch-Site %r), client %s",
                    request.method, request.path, request.headers.get("Origin"),
                    request.headers.get("Sec-Fetch-Site"), request.remote)
        raise Forbidden("cross-origin request refused",
                        user_message="This request came from another site and was refused.")
    return await handler(request)


#: What a 5xx page says when the error carries no sentence written for people.
HUB_FAULT = "Something went wrong in the hub."


@web.middleware
async def error_middleware(request: web.Request, handler):
    """Turn typed errors into JSON for API clients or a kind page for browsers."""
    try:
        return await handler(request)
    except ApplianceError as e:
        if e.status < 500:
            response = error_response(request, e.status, e.user_message,
                                      extra=oauth_fields(e))
        else:
            response = incident(request, e.status, e, e.user_message if e.written_for_people
                                else HUB_FAULT)
        pages.set_retry_after(response, e)
        return response
    except web.HTTPException as e:
        if e.status in (404, 405) and request.path.startswith("/hub/api"):
            # JupyterHub's API404 and JSON errors: an API client never gets an HTML page.
            response = error_response(request, e.status, e.reason)
            if "Allow" in e.headers:
                response.headers["Allow"] = e.headers["Allow"]
            return response
        raise
    except asyncio.CancelledError:
        raise
    except Exception as e:
        return incident(request, 500, e, HUB_FAULT)


def incident(request: web.Request, status: int, error: Exception,
             message: str) -> web.Response:
    """A 5xx: the error in the journal under a new incident id; the page shows a fixed
    message and that id, never the error's own text."""
    incident_id = secrets.token_hex(4)
    log.error("incident %s: %s %r: %s", incident_id, request.method, request.path, error,
              exc_info=not isinstance(error, ApplianceError))
    return error_response(request, status, f"{message} If it goes on, tell the administrator "
                          f"incident {incident_id} (journalctl -u notebook-appliance "
                          f"--grep {incident_id}).", incident=incident_id)


def oauth_fields(error: ApplianceError) -> dict:
    """An OAuth error's fields as RFC 6749 §5.2 names them (HubOAuth reads
    error_description), beside JupyterHub's status and message; none for other errors."""
    if isinstance(error, oauth.OAuthError):
        return {"error": error.error, "error_description": error.description}
    return {}


def error_response(request: web.Request, status: int, message: str,
                   incident: str = "", extra: dict | None = None) -> web.Response:
    """A JupyterHub-shaped JSON error (with the incident id of a 5xx), or the HTML page."""
    if wants_json(request):
        body = {"status": status, "message": message, **(extra or {})}
        if incident:
            body["incident"] = incident
        return web.json_response(body, status=status)
    return pages.render(request, "error.html", status=status, code=status, message=message)
