"""The aiohttp application: its parts on app[...], their start-up and clean-up, and routes.

No globals (aiohttp's "No Singletons Please"): everything a handler needs hangs off the app.
Errors become HTTP responses in one place, error_middleware.
"""

import asyncio
import ipaddress
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from appliance import api, pages, profiles, serverpages, userproxy
from appliance.auth import Authenticator
from appliance.config import Config
from appliance.errors import ApplianceError, Forbidden
from appliance.identity import Identities, same_origin
from appliance.spawner import Spawner
from appliance.store import Store
from appliance.systemd import Systemd

log = logging.getLogger(__name__)


def build_app(cfg: Config, middlewares: Sequence = ()) -> web.Application:
    """An application wired for cfg; parts start in cleanup contexts, in order.

    middlewares run outermost, before the hub's own (serve() passes its shutdown drain).
    """
    app = web.Application(
        middlewares=[*middlewares, forwarded_proto_middleware, error_middleware,
                     same_origin_middleware],
        client_max_size=1024**2)
    app["config"] = cfg
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_auth_ctx)
    app.cleanup_ctx.append(_spawner_ctx)
    pages.setup(app)
    serverpages.setup(app)
    api.setup(app)
    userproxy.setup(app)
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
    app["auth"] = auth = Authenticator(cfg.auth)
    app["identities"] = Identities(app["store"], auth, cfg.hub.session_max_age)
    yield
    auth.close()


async def _spawner_ctx(app: web.Application):
    cfg = app["config"]
    systemd = Systemd()
    await systemd.connect()
    loop = asyncio.get_running_loop()
    secret = await loop.run_in_executor(None, load_secret, cfg.hub.state_dir / "hub-secret")
    app["profiles"] = await loop.run_in_executor(None, profiles.load, cfg)
    app["spawner"] = spawner = Spawner(cfg, systemd, app["store"], secret, app["profiles"])
    await spawner.reconcile()
    spawner.start_watching()
    yield
    await spawner.close()
    await systemd.close()


def load_secret(path: Path) -> bytes:
    """The hub's own secret (server tokens derive from it), created 0600 on first start."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    return path.read_bytes()


def wants_json(request: web.Request) -> bool:
    """True for API clients: /hub/api/ paths, tokens, or no HTML in Accept."""
    if request.path.startswith("/hub/api"):
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


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and ::ffff:127.x; False for anything else or nothing."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


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
        log.warning("refused %s %s from origin %r (Sec-Fetch-Site %r), client %s",
                    request.method, request.path, request.headers.get("Origin"),
                    request.headers.get("Sec-Fetch-Site"), request.remote)
        raise Forbidden("cross-origin request refused",
                        user_message="This request came from another site and was refused.")
    return await handler(request)


@web.middleware
async def error_middleware(request: web.Request, handler):
    """Turn typed errors into JSON for API clients or a kind page for browsers."""
    try:
        return await handler(request)
    except ApplianceError as e:
        if e.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, e)
        response = error_response(request, e.status, e.user_message)
        pages.set_retry_after(response, e)
        return response
    except (web.HTTPException, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(request, 500, "Something went wrong in the hub. The "
                              "administrator can find details in journalctl -u "
                              "notebook-appliance.")


def error_response(request: web.Request, status: int, message: str) -> web.Response:
    """A JupyterHub-shaped JSON error, or the HTML error page."""
    if wants_json(request):
        return web.json_response({"status": status, "message": message}, status=status)
    return pages.render(request, "error.html", status=status, code=status, message=message)
