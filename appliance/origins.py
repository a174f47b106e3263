"""Per-user origins (JupyterHub's subdomain_host): with hub.user_domain set, the hub answers
at that name and each user's servers at <user>.<that name>, so a page in one user's server
runs in an origin of its own: it cannot read the hub's pages or API, and the hub's session
cookie (host-only) never goes there.

A browser moves from the hub to a user's host with a one-time code: the hub (where the
browser is logged in) mints it and redirects; the user's host trades it for a session cookie
of its own, valid only on that host. A user's host serves only that user's /user/<name>/…
paths and the code exchange; nothing of the hub.
"""

import base64
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from appliance.errors import BadRequest, NotFound

#: A user name that is already a DNS label (RFC 1123), and not one that looks like an
#: IDNA/encoded one ("--" at any place is kept for hashed labels below).
_PLAIN_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
#: How long a code is good for: one redirect's worth.
CODE_SECONDS = 30.0
#: Where a user's host trades a code for its session cookie.
EXCHANGE_PATH = "/hub/user-login"


def dns_label(name: str) -> str:
    """The host label of a user: the name itself when it is a plain DNS label; else a
    hash-based one ("x--…"), which no plain label can equal (plain ones have no "--")."""
    if _PLAIN_LABEL.fullmatch(name) and "--" not in name:
        return name
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode().lower()
    return "x--" + digest[:26]


def hostname(request: web.Request) -> str:
    """The request's host name, lower-cased, without its port."""
    host = (request.host or "").lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def user_label(request: web.Request, user_domain: str) -> str | None:
    """The user label when the request came to a user's host, else None (the hub's)."""
    if not user_domain:
        return None
    name = hostname(request)
    suffix = "." + user_domain
    if name.endswith(suffix) and "." not in name[:-len(suffix)]:
        return name[:-len(suffix)] or None
    return None


def origin_of(request: web.Request, host: str) -> str:
    """scheme://host[:port] with this request's scheme and port."""
    port = (request.host or "").rpartition(":")[2] if (request.host or "").count(":") == 1 \
        else ""
    return f"{request.scheme}://{host}" + (f":{port}" if port.isdigit() else "")


def user_origin(request: web.Request, user_domain: str, user: str) -> str:
    """The origin of a user's servers."""
    return origin_of(request, f"{dns_label(user)}.{user_domain}")


def hub_origin(request: web.Request, user_domain: str) -> str:
    """The hub's own origin, seen from any of its hosts."""
    return origin_of(request, user_domain)


@dataclass(frozen=True)
class Handoff:
    """What a code stands for: who is logged in, and whose host it opens."""

    identity: str
    user: str
    expires: float


class Handoffs:
    """One-time codes, in memory: a hub restart only costs a browser one more redirect."""

    def __init__(self) -> None:
        self._codes: dict[str, Handoff] = {}

    def mint(self, identity: str, user: str) -> str:
        """A new code for identity to open user's host."""
        now = time.monotonic()
        if len(self._codes) > 1000:
            self._codes = {c: h for c, h in self._codes.items() if h.expires > now}
        code = secrets.token_urlsafe(24)
        self._codes[code] = Handoff(identity, user, now + CODE_SECONDS)
        return code

    def redeem(self, code: str) -> Handoff:
        """The handoff a code stands for, once; BadRequest if unknown, used or expired."""
        handoff = self._codes.pop(code, None)
        if handoff is None or handoff.expires < time.monotonic():
            raise BadRequest("unknown, used or expired handoff code",
                             user_message="This link has expired. Open your server from "
                                          "the hub's home page again.")
        return handoff


def redirect_to_user_host(request: web.Request, user_domain: str, identity: str, user: str,
                          path: str) -> web.HTTPFound:
    """A redirect that carries a fresh code to user's host, landing on path there."""
    code = request.app["handoffs"].mint(identity, user)
    target = (f"{user_origin(request, user_domain, user)}{EXCHANGE_PATH}"
              f"?code={quote(code)}&next={quote(path)}")
    return web.HTTPFound(target)


def check_user_host_path(label: str, user: str) -> None:
    """NotFound unless user's servers live on the host with this label."""
    if dns_label(user) != label:
        raise NotFound(f"{user}'s servers are not on host label {label!r}",
                       user_message="There is no such server on this address.")
