"""The hub's HTML pages: login, home, logout, and the helpers every page uses (Jinja2,
autoescaped); the pages that start and stop servers are in serverpages.py.

The only module that imports jinja2. Forms carry the CSRF token; state changes are POSTs.
"""

import logging
import math
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web

from appliance import accounthelper, culler, profiles
from appliance.clientaddr import client_address
from appliance.config import format_size
from appliance.errors import AuthError, Busy, PasswordExpired
from appliance.identity import (
    SESSION_COOKIE,
    VISITOR_COOKIE,
    XSRF_COOKIE,
    del_cookie,
    get_cookie,
    new_visitor_id,
    set_cookie,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
#: An expired password where the hub may not write /etc (the installed unit's sandbox).
CANNOT_CHANGE = ("Your password has expired, and this hub cannot change passwords. Please "
                 "ask your administrator to set a new one.")


def setup(app: web.Application) -> None:
    """Load the templates and register the page routes."""
    # auto_reload=False and every template compiled now: rendering never touches the disk
    # from the event loop.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             auto_reload=False)
    env.filters["size"] = format_size
    env.filters["cores"] = lambda n: f"{n:g} core" + ("" if n == 1 else "s")
    env.filters["ago"] = ago
    for name in env.list_templates(extensions=["html"]):
        env.get_template(name)
    app["jinja"] = env
    r = app.router
    r.add_get("/", to_hub_root)
    r.add_get("/hub", to_hub_root)
    r.add_get("/hub/", hub_root)
    r.add_get("/hub/login", login_form)
    r.add_post("/hub/login", login_submit)
    r.add_post("/hub/login/password", password_submit)
    r.add_get("/hub/logout", logout_form)
    r.add_post("/hub/logout", logout)
    r.add_get("/hub/home", home)
    r.add_get("/hub/spawn", spawn_self)
    r.add_static("/hub/static/", HERE / "static")


def redirect(location: str) -> web.Response:
    """A 302 to a local path."""
    raise web.HTTPFound(location)


def render(request: web.Request, template: str, status: int = 200, **context) -> web.Response:
    """Render a template with the CSRF token and the current user in the context."""
    identities = request.app["identities"]
    xsrf, visitor = identities.xsrf_token(request), None
    if not xsrf:  # a first visit: the login form's token is bound to a new visitor id
        visitor = new_visitor_id()
        xsrf = identities.bound_xsrf("visitor", visitor)
    context.setdefault("user", request.get("identity"))
    html = request.app["jinja"].get_template(template).render(xsrf=xsrf, **context)
    response = web.Response(text=html, status=status, content_type="text/html")
    # Cockpit's set for its own pages: never framed, never sniffed, never cached, no referrer.
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    if visitor:
        set_cookie(response, request, VISITOR_COOKIE, visitor)
    if get_cookie(request, XSRF_COOKIE) != xsrf:
        set_cookie(response, request, XSRF_COOKIE, xsrf)
    return response


def set_retry_after(response: web.StreamResponse, error: Exception) -> None:
    """Retry-After (RFC 9110 10.2.3, whole seconds) for an error that says when to retry."""
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        response.headers["Retry-After"] = str(math.ceil(retry_after))


def safe_next(target: str | None, default: str = "/hub/home") -> str:
    """Only local absolute paths are followed after login (no //host, no scheme, no control
    characters)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    # Browsers (WHATWG URL) and yarl drop tabs and newlines anywhere, so "/\t///evil.example"
    # passed the checks above and left as "Location: //evil.example" (found by
    # tests/unit/test_fuzz_proxy.py). A path we made never holds a control character.
    if any(ch < " " or ch == "\x7f" for ch in target):
        return default
    parts = urlsplit(target)
    return default if parts.scheme or parts.netloc else target


async def current(request: web.Request, *, required: bool = True):
    """The logged-in identity; redirects to the login page when required and absent."""
    identity = await request.app["identities"].of_request(request)
    if identity is not None and identity.kind != "user":
        identity = None  # a service's token opens no page of the hub's: pages are users'
    request["identity"] = identity
    if identity is None and required:
        # raw_path: the URL as sent (percent-encoded), so a non-ASCII name comes back intact;
        # a byte that is not UTF-8 (aiohttp's lone surrogate) goes back as the byte it was.
        raise web.HTTPFound("/hub/login?next=" + quote(request.raw_path,
                                                        errors="surrogateescape"))
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
    """POST /hub/login: PAM, then a new session (and CSRF token) and a redirect to a local
    `next`."""
    form = await checked_form(request)
    username = str(form.get("username", "")).strip()
    target = safe_next(str(form.get("next", "")))
    client = client_address(request, request.app["config"].hub.trusted_proxies)
    password = str(form.get("password", ""))
    try:
        account = await request.app["auth"].login(username, password, client)
    except PasswordExpired as e:
        if not accounthelper.can_change_passwords():
            return render(request, "login.html", status=403, next=target, username=username,
                          error=CANNOT_CHANGE)
        change_id = request.app["first_logins"].begin(e.name, password, client)
        return render(request, "password.html", next=target, username=e.name,
                      change=change_id, error=e.user_message)
    except (AuthError, Busy) as e:
        response = render(request, "login.html", status=e.status, next=target,
                          username=username, error=e.user_message)
        set_retry_after(response, e)
        return response
    return await logged_in(request, account, client, target)


async def logged_in(request: web.Request, account, client: str, target: str):
    """A new session (and CSRF token) for account and a redirect to target."""
    await request.app["store"].ensure_user(account.name, account.admin)
    identities = request.app["identities"]
    secret = await identities.start_session(account.name)
    log.info("login: client=%s user=%r logged in", client, account.name)
    response = web.HTTPFound(target)
    max_age = request.app["config"].hub.session_max_age
    set_cookie(response, request, SESSION_COOKIE, secret, max_age=max_age)
    set_cookie(response, request, XSRF_COOKIE, identities.xsrf_token(request, session=secret))
    raise response


async def password_submit(request: web.Request) -> web.Response:
    """POST /hub/login/password: the new password for an expired one, changed through PAM;
    then logged in, or the form again with PAM's reason in words."""
    form = await checked_form(request)
    target = safe_next(str(form.get("next", "")))
    client = client_address(request, request.app["config"].hub.trusted_proxies)
    changes = request.app["first_logins"]
    change_id = str(form.get("change", ""))
    pending = changes.take_turn(change_id, client)
    if pending is None:
        return render(request, "login.html", status=403, next=target, username="",
                      error="That form has expired; please log in again.")
    new, again = str(form.get("new_password", "")), str(form.get("new_password2", ""))
    error = new_password_problem(pending.current, new, again)
    if not error:
        try:
            account = await request.app["auth"].change_expired_password(
                pending.name, pending.current, new, client)
        except (AuthError, Busy) as e:
            error = e.user_message
        else:
            changes.finish(change_id)
            return await logged_in(request, account, client, target)
    return render(request, "password.html", status=400, next=target, username=pending.name,
                  change=change_id, error=error)


def new_password_problem(current: str, new: str, again: str) -> str:
    """What the hub can say about a new password before PAM sees it, or ''."""
    if not new:
        return "Please type a new password."
    if new != again:
        return "The two new passwords differ; please type the same one twice."
    if new == current:
        return "The new password must differ from the current one."
    if "\0" in new or len(new) > 512:
        return "That password cannot be used."
    return ""


async def logout_form(request: web.Request) -> web.Response:
    """GET /hub/logout: a page with the logout button (a link or image elsewhere cannot log
    anyone out); without a session, the login form."""
    if await current(request, required=False) is None:
        redirect("/hub/login")
    return render(request, "logout.html")


async def logout(request: web.Request) -> web.Response:
    """POST /hub/logout: end the session (its CSRF token with it); the server keeps running."""
    await checked_form(request)
    secret = get_cookie(request, SESSION_COOKIE)
    if secret:
        identity = await current(request, required=False)
        await request.app["identities"].end_session(
            secret, identity.name if identity else None)
    response = web.HTTPFound("/hub/login")
    del_cookie(response, request, SESSION_COOKIE)
    del_cookie(response, request, XSRF_COOKIE)
    set_cookie(response, request, VISITOR_COOKIE, new_visitor_id())  # a new login-form token
    raise response


async def home(request: web.Request) -> web.Response:
    """GET /hub/home: the user's server (state, profile, limits, start/stop) and their named
    servers with a form for a new one."""
    identity = await current(request)
    spawner = request.app["spawner"]
    server = spawner.get(identity.name)
    account = await request.app["auth"].account(identity.name)
    options = profiles.open_to(request.app["profiles"], account.groups)
    default = profiles.choose(request.app["profiles"], account.groups, None) if options else None
    cfg = request.app["config"]
    return render(request, "home.html", server=server, profile=server.profile or default,
                  profiles=options, named=spawner.named(identity.name),
                  named_limit=cfg.spawner.named_servers_limit,
                  idle_stop=in_words(culler.stops_at(cfg.culler, server)))


def ago(when: float | None, now: float) -> str:
    """ "12 min ago" for a moment past; "" for none."""
    if not when:
        return ""
    seconds = max(0.0, now - when)
    if seconds < 90:
        return "just now"
    if seconds < 5400:
        return f"{round(seconds / 60)} min ago"
    return f"{round(seconds / 3600)} h ago"


def in_words(when: float | None) -> str:
    """ "in about 52 minutes" for a moment ahead; "" for none."""
    if when is None:
        return ""
    minutes = max(1, round((when - time.time()) / 60))
    if minutes < 90:
        return f"in about {minutes} minute" + ("" if minutes == 1 else "s")
    return f"in about {round(minutes / 60)} hours"


async def checked_form(request: web.Request):
    """The POSTed form, after the CSRF check."""
    form = await request.post()
    request.app["identities"].check_xsrf(request, form.get("_xsrf"))
    return form


async def spawn_self(request: web.Request) -> web.Response:
    """GET /hub/spawn: the caller's own spawn page."""
    identity = await current(request)
    raise web.HTTPFound(f"/hub/spawn/{quote(identity.name)}")
