"""Who is making a request: session cookies, API tokens and the CSRF check.

Lookups are cached briefly so relaying a request through the proxy costs no sqlite or NSS
round trip; a logout or a token's revocation drops its cache entry at once, a token is not
cached past its expiry, other changes apply within CACHE_SECONDS.
"""

import base64
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field

from aiohttp import web

from appliance import scopes
from appliance.auth import Authenticator
from appliance.errors import BadRequest, NotFound
from appliance.roles import Roles
from appliance.store import Store, TokenRecord, hash_secret

log = logging.getLogger(__name__)

SESSION_COOKIE = "appliance-session"
#: The CSRF token, for clients that read it from the jar (the pages carry it in their forms).
XSRF_COOKIE = "appliance-xsrf"
#: A browser that has not logged in yet: its CSRF token (the login form's) is bound to this.
VISITOR_COOKIE = "appliance-visitor"
#: The session on one user's own host (hub.user_domain): valid there only.
SERVER_SESSION_COOKIE = "appliance-server-session"
#: Under TLS every hub cookie has this prefix: the browser then takes it only Secure, for
#: Path=/ and without Domain, so no other port or subdomain can set or shadow it (RFC 6265bis
#: §4.1.3.2).
HOST_PREFIX = "__Host-"
_NAMES = (SESSION_COOKIE, XSRF_COOKIE, VISITOR_COOKIE, SERVER_SESSION_COOKIE)
#: Cookies that belong to the hub and are never relayed to (or settable by) user servers.
HUB_COOKIES = frozenset(_NAMES) | frozenset(HOST_PREFIX + name for name in _NAMES)
CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class Identity:
    """An authenticated request's user, and what this request may do."""

    name: str
    #: Whether the account is an administrator (has the admin role); what a request may do
    #: is its scopes', which a token can narrow.
    admin: bool
    via: str  # "cookie" or "token"
    #: The roles the user holds (their own and their groups').
    roles: tuple[str, ...] = ()
    #: The expanded scopes of this credential (JupyterHub's expanded_scopes).
    scopes: frozenset[str] = frozenset()
    #: The API token's id (JupyterHub's "a<N>"), None for a session.
    token_id: int | None = None
    #: "user", or "service" for a [services.*] token (JupyterHub's kind): then name is the
    #: service's, which may also be some user's name, so nothing takes it for a user.
    kind: str = "user"
    parsed: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "parsed", scopes.parse(self.scopes))

    def is_user(self, name: str) -> bool:
        """Whether this is the user name themselves (a service may bear a user's name)."""
        return self.kind == "user" and self.name == name


class Identities:
    """Resolves requests to identities, with a short-lived cache."""

    def __init__(self, store: Store, auth: Authenticator, session_max_age: float,
                 secret: bytes, roles: Roles):
        self.store = store
        self.auth = auth
        self.roles = roles
        self.session_max_age = session_max_age
        self._xsrf_key = hmac.new(secret, b"xsrf", hashlib.sha256).digest()
        self._cache: dict[str, tuple[float, Identity | None]] = {}

    async def of_request(self, request: web.Request) -> Identity | None:
        """The identity behind a request's token or session cookie, or None (anonymous). On a
        user's own host (request["user_host"], set by the app) only that host's session
        counts: the hub's cookie never comes there, and its session would not do."""
        token = bearer_token(request)
        if token:
            return await self._cached("token", token)
        host = request.get("user_host", "")
        cookie = get_cookie(request, SERVER_SESSION_COOKIE if host else SESSION_COOKIE)
        return await self._cached("cookie", cookie, host) if cookie else None

    async def _cached(self, via: str, secret: str, host: str = "") -> Identity | None:
        key = hash_secret(f"{host}\0{secret}" if host else secret)
        hit = self._cache.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        identity, valid_for = await self._lookup(via, secret, host)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + min(CACHE_SECONDS, valid_for), identity)
        return identity

    async def _lookup(self, via: str, secret: str,
                      host: str = "") -> tuple[Identity | None, float]:
        """Ask the store who owns the secret, then re-check the account policy; with how
        long the answer may be cached (a token's answer not past its expiry)."""
        valid_for = CACHE_SECONDS
        token = None
        if via == "token":
            token = await self.store.use_token(secret)
            if token is not None and token.service is not None:
                return self._service_identity(token), valid_for
            name = token.user if token else None
            if token and token.expires is not None:
                valid_for = max(0.0, token.expires - time.time())
        else:
            name = await self.store.session_user(secret, host)
        return await self._account_identity(name, via, token), valid_for

    async def _account_identity(self, name: str | None, via: str,
                                token: TokenRecord | None = None) -> Identity | None:
        """The identity of name if the account policy still allows them, else None; with
        the scopes of their roles, narrowed to the token's."""
        if name is None:
            return None
        try:
            account = await self.auth.account(name)
        except NotFound as e:
            log.info("user=%r credentials refused: %s", name, e)
            return None
        # The user models' admin follows the configuration and the admin group as they are
        # now (the account was just looked up), not as they were at the last login.
        await self.store.sync_admin(account.name, account.admin)
        roles = self.roles.of_user(account.name, account.admin)
        held = self.roles.scopes_of(account.name, roles)
        if token is not None:
            held = self.roles.token_scopes(account.name, held, token.scopes)
        return Identity(account.name, account.admin, via, tuple(roles), held,
                        token.id if token is not None else None)

    def _service_identity(self, token: TokenRecord) -> Identity | None:
        """The identity of a service's token, while the service is in the config."""
        if token.service not in dict(self.roles.cfg.services):
            log.info("service=%r token refused: no such service in the config", token.service)
            return None
        roles = self.roles.of_service(token.service)
        return Identity(token.service, "admin" in roles, "token", tuple(roles),
                        self.roles.service_scopes(token.service, roles), token.id,
                        kind="service")

    async def owner_scopes(self, name: str) -> frozenset[str]:
        """Everything name holds now (a new token's scopes must be among them); NotFound
        when the account policy refuses them."""
        account = await self.auth.account(name)
        return self.roles.scopes_of(account.name, self.roles.of_user(account.name,
                                                                      account.admin))

    def forget_user(self, name: str, kind: str = "user") -> None:
        """Drop a user's (or service's) cached identities: their next request is looked up
        afresh."""
        for key, (_, identity) in list(self._cache.items()):
            if identity is not None and identity.name == name and identity.kind == kind:
                self._cache.pop(key, None)

    async def revoke_token(self, user: str, token_id: int) -> bool:
        """Delete one of user's API tokens and forget it in the cache, so it is refused from
        the next request on; False when user has no such token."""
        digest = await self.store.revoke_token(user, token_id)
        if digest is None:
            return False
        self._cache.pop(digest, None)  # the cache's key of a token is the store's hash
        return True

    async def start_session(self, name: str, host: str = "") -> str:
        """Create a session (on the hub, or on a user's host); returns the cookie value."""
        return await self.store.create_session(name, self.session_max_age, host)

    async def end_session(self, secret: str, name: str | None = None) -> None:
        """Logout: delete the session (and the OAuth tokens issued in it), and name's
        sessions on users' hosts, and forget them in the cache."""
        self._cache.pop(hash_secret(secret), None)
        for digest in await self.store.delete_session(secret):
            self._cache.pop(digest, None)  # the cache's key of a token is the store's hash
        if name is not None:
            await self.store.end_host_sessions_of(name)
            self.forget_user(name)

    def xsrf_token(self, request: web.Request, session: str | None = None) -> str:
        """The CSRF token of this browser: bound to its session (or, before login, its
        visitor id), as JupyterHub 4.1 binds it. A cookie planted from another port cannot
        forge it, and it changes at login and logout. '' when the browser has neither."""
        session = session or get_cookie(request, SESSION_COOKIE)
        if session:
            return self.bound_xsrf("session", session)
        visitor = get_cookie(request, VISITOR_COOKIE)
        return self.bound_xsrf("visitor", visitor) if visitor else ""

    def bound_xsrf(self, kind: str, value: str) -> str:
        """An HMAC of the hub secret and a session or visitor id."""
        mac = hmac.new(self._xsrf_key, f"{kind}:{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:24]).decode()

    def check_xsrf(self, request: web.Request, submitted: str | None) -> None:
        """The form field or X-XSRFToken header must be this browser's CSRF token."""
        expected = self.xsrf_token(request)
        if not expected or not submitted or not hmac.compare_digest(expected, submitted):
            raise BadRequest("CSRF check failed", user_message="This form has expired. "
                             "Please go back and try again.")


def bearer_token(request: web.Request) -> str:
    """The token of `Authorization: token X` or `bearer X`, or ''."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return ours(value.strip()) if scheme.lower() in ("token", "bearer") else ""


def ours(secret: str) -> str:
    """secret if it could be one the hub made (they are all ASCII), else ''.

    aiohttp decodes header bytes that are not UTF-8 as lone surrogates, which no hash or HMAC
    can encode: `Authorization: token \xff` or such a cookie was a 500 on every page (found
    by tests/integration/test_fuzz_hub.py). Such a value is no credential: the request is
    anonymous.
    """
    return secret if secret.isascii() else ""


def same_origin(request: web.Request) -> bool:
    """Whether a browser says the request comes from the hub's own origin.

    Every port of a host is the same *site* to a browser, so a page a student serves on
    box:9000 can make a logged-in teacher's browser send cookie-carrying POSTs and websocket
    upgrades to box:8000 (SameSite=Lax allows it). Origin (RFC 6454; sent on every POST and
    upgrade, "null" under Referrer-Policy: no-referrer) or else Sec-Fetch-Site (Fetch
    Metadata) tell where it came from. A client that sends neither is not a browser, and so
    cannot be made to forge anything.
    """
    origin = request.headers.get("Origin")
    site = request.headers.get("Sec-Fetch-Site")
    if origin is not None and origin != "null":
        return origin == f"{request.scheme}://{request.host}"
    if site is not None:
        return site == "same-origin"
    # "Origin: null" without Fetch Metadata: a browser that will not say (our pages send
    # Referrer-Policy: no-referrer, which makes a form POST's Origin "null"): refuse.
    return origin is None


def cookie_name(request: web.Request, name: str) -> str:
    """A hub cookie's name on this request: __Host-prefixed under TLS."""
    return HOST_PREFIX + name if request.secure else name


def get_cookie(request: web.Request, name: str) -> str | None:
    """A hub cookie's value, under its name for this request's scheme."""
    return ours(request.cookies.get(cookie_name(request, name)) or "") or None


def set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str,
               *, max_age: float | None = None) -> None:
    """Set a hub cookie: HttpOnly, SameSite=Lax, Path=/, and Secure with __Host- under TLS."""
    response.set_cookie(cookie_name(request, name), value, path="/", httponly=True,
                        samesite="Lax", secure=request.secure,
                        max_age=int(max_age) if max_age else None)


def del_cookie(response: web.StreamResponse, request: web.Request, name: str) -> None:
    """Remove a hub cookie (with the attributes a __Host- cookie must carry)."""
    set_cookie(response, request, name, "", max_age=None)
    response.cookies[cookie_name(request, name)]["max-age"] = "0"
    response.cookies[cookie_name(request, name)]["expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"


def new_visitor_id() -> str:
    """A random id for a browser that has not logged in."""
    return secrets.token_urlsafe(24)
