"""The hub's HTML pages: login, home, spawn, spawn-pending, logout (Jinja2, autoescaped).

The only module that imports jinja2. Forms carry the CSRF token; state changes are POSTs.
"""

import logging
from pathlib import Path
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web

from appliance.api import owner_of
from appliance.config import format_size
from appliance.errors import AuthError, Forbidden
from appliance.identity import (
    SESSION_COOKIE,
    XSRF_COOKIE,
    check_xsrf,
    set_cookie,
    xsrf_token,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).parent


def setup(app: web.Application) -> None:
    """Load the templates and register the page routes."""
    # auto_reload=False and every template compiled now: rendering never touches the disk
    # from the event loop.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             auto_reload=False)
    for name in env.list_templates(extensions=["html"]):
        env.get_template(name)
    app["jinja"] = env
    r = app.router
    r.add_get("/", to_hub_root)
    r.add_get("/hub", to_hub_root)
    r.add_get("/hub/", hub_root)
    r.add_get("/hub/login", login_form)
    r.add_post("/hub/login", login_submit)
    r.add_get("/hub/logout", logout)
    r.add_get("/hub/home", home)
    r.add_get("/hub/spawn", spawn_self)
    r.add_get("/hub/spawn/{name}", spawn_form)
    r.add_post("/hub/spawn/{name}", spawn_submit)
    r.add_post("/hub/stop/{name}", stop_submit)
    r.add_get("/hub/spawn-pending/{name}", spawn_pending)
    r.add_static("/hub/static/", HERE / "static")


def redirect(location: str) -> web.Response:
    """A 302 to a local path."""
    raise web.HTTPFound(location)


def render(request: web.Request, template: str, status: int = 200, **context) -> web.Response:
    """Render a template with the CSRF token and the current user in the context."""
    xsrf = xsrf_token(request)
    context.setdefault("user", request.get("identity"))
    html = request.app["jinja"].get_template(template).render(xsrf=xsrf, **context)
    response = web.Response(text=html, status=status, content_type="text/html")
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.cookies.get(XSRF_COOKIE) != xsrf:
        set_cookie(response, request, XSRF_COOKIE, xsrf)
    return response


def safe_next(target: str | None, default: str = "/hub/home") -> str:
    """Only local absolute paths are followed after login (no //host, no scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    return default if parts.scheme or parts.netloc else target


async def current(request: web.Request, *, required: bool = True):
    """The logged-in identity; redirects to the login page when required and absent."""
    identity = await request.app["identities"].of_request(request)
    request["identity"] = identity
    if identity is None and required:
        raise web.HTTPFound("/hub/login?next=" + quote(request.path_qs))
    return identity


async def to_hub_root(request: web.Request) -> web.Response:
    """/ and /hub: to /hub/."""
    return redirect("/hub/")


async def hub_root(request: web.Request) -> web.Response:
    """/hub/: home when logged in, else the login form."""
    identity = await current(request, required=False)
    return redirect("/hub/home" if identity else "/hub/login")


async def login_form(request: web.Request) -> web.Response:
    """GET /hub/login."""
    await current(request, required=False)
    return render(request, "login.html", next=safe_next(request.query.get("next")),
                  username="", error="")


async def login_submit(request: web.Request) -> web.Response:
    """POST /hub/login: PAM, then a session cookie and a redirect to a local `next`."""
    form = await request.post()
    check_xsrf(request, form.get("_xsrf"))
    username = str(form.get("username", "")).strip()
    target = safe_next(str(form.get("next", "")))
    try:
        account = await request.app["auth"].login(username, str(form.get("password", "")))
    except AuthError as e:
        return render(request, "login.html", status=403, next=target, username=username,
                      error=e.user_message)
    await request.app["store"].ensure_user(account.name, account.admin)
    secret = await request.app["identities"].start_session(account.name)
    log.info("user=%s logged in", account.name)
    response = web.HTTPFound(target)
    set_cookie(response, request, SESSION_COOKIE, secret,
               max_age=request.app["config"].hub.session_max_age)
    raise response


async def logout(request: web.Request) -> web.Response:
    """GET /hub/logout: end the session; the server keeps running."""
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        await request.app["identities"].end_session(secret)
    response = web.HTTPFound("/hub/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def home(request: web.Request) -> web.Response:
    """GET /hub/home: the user's server, its state and limits, start/stop."""
    identity = await current(request)
    server = request.app["spawner"].get(identity.name)
    limits = request.app["config"].limits
    return render(request, "home.html", server=server, memory=format_size(limits.memory),
                  cpu=limits.cpu)


async def server_in_url(request: web.Request):
    """The server named in the URL; only its owner or an admin may start, stop or watch it."""
    identity = await current(request)
    name = request.match_info["name"]
    if identity.name != name and not identity.admin:
        raise Forbidden(f"{identity.name} may not act on {name}",
                        user_message="This is not your server.")
    return request.app["spawner"].get(name)


async def checked_form(request: web.Request):
    """The POSTed form, after the CSRF check."""
    form = await request.post()
    check_xsrf(request, form.get("_xsrf"))
    return form


async def spawn_self(request: web.Request) -> web.Response:
    """GET /hub/spawn: the caller's own spawn page."""
    identity = await current(request)
    raise web.HTTPFound(f"/hub/spawn/{quote(identity.name)}")


async def spawn_form(request: web.Request) -> web.Response:
    """GET /hub/spawn/{name}: running servers are opened, stopped ones offer a button."""
    server = await server_in_url(request)
    name = server.user
    target = safe_next(request.query.get("next"), server.url)
    if server.ready:
        return redirect(target)
    if server.pending == "spawn":
        return redirect(f"/hub/spawn-pending/{quote(name)}?next={quote(target)}")
    return render(request, "spawn.html", name=name, server=server, next=target,
                  memory=format_size(request.app["config"].limits.memory))


async def spawn_submit(request: web.Request) -> web.Response:
    """POST /hub/spawn/{name}: start the server, then watch it on the pending page."""
    server = await server_in_url(request)
    form = await checked_form(request)
    if server.state == "stopped":
        await request.app["spawner"].start(await owner_of(request, server.user))
    target = safe_next(str(form.get("next", "")), server.url)
    return redirect(f"/hub/spawn-pending/{quote(server.user)}?next={quote(target)}")


async def stop_submit(request: web.Request) -> web.Response:
    """POST /hub/stop/{name}: stop the server and go home."""
    server = await server_in_url(request)
    await checked_form(request)
    await request.app["spawner"].stop(server.user)
    return redirect("/hub/home")


async def spawn_pending(request: web.Request) -> web.Response:
    """GET /hub/spawn-pending/{name}: a progress bar fed by the progress event stream."""
    server = await server_in_url(request)
    target = safe_next(request.query.get("next"), server.url)
    if server.ready:
        return redirect(target)
    return render(request, "spawn_pending.html", name=server.user, server=server, next=target)
