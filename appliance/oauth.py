"""The hub as JupyterHub's OAuth provider: the registered clients and their authorization codes.

Every JupyterHub server and OAuth-enabled service is an OAuth client of the hub, as in
JupyterHub (jupyterhub/oauth/provider.py): a user's server is `jupyterhub-user-<name>` (a named
one `jupyterhub-user-<name>-<server>`) with the redirect URI `/user/<name>/[<server>/]
oauth_callback`, a service is `service-<name>` with `/services/<name>/oauth_callback`, and the
client's secret is its API token. The endpoints (api/oauth.py) run the authorization-code flow
(RFC 6749 §4.1, with PKCE, RFC 7636) on what is kept here.

To register a client (the spawner does for servers; the services code does for services;
JupyterHub's names are in hubenv.py):

    app["oauth_clients"].register_client(
        "service-whoami", api_token, "/services/whoami/oauth_callback", "Service whoami")

(keywords: service=<name> when the id is not `service-<name>`, no_confirm=True for
JupyterHub's oauth_no_confirm, allowed_scopes=[...] for its oauth_client_allowed_scopes), and
`unregister(client_id)` when it goes away. Users need access:services!service=<name> (a
[roles.*] table) to be let through, as in JupyterHub. Clients and codes live in memory: servers and
services register again whenever the hub starts (adoption, the configuration), and a code
lives five minutes, so a restart costs at most one login in flight. Secrets and codes are kept
hashed; codes are single-use.
"""

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from appliance import scopes
from appliance.errors import ApplianceError
from appliance.hubenv import server_access_scope, service_access_scope
from appliance.store import hash_secret

#: How long an authorization code may be exchanged (JupyterHub: 5 minutes).
CODE_SECONDS = 300.0
#: Codes waiting at most at once (a flood of authorizations cannot grow memory without end).
MAX_CODES = 10_000
#: Where the endpoints are (api/oauth.py), as in JupyterHub.
AUTHORIZE_PATH = "/hub/api/oauth2/authorize"
TOKEN_PATH = "/hub/api/oauth2/token"
#: JupyterHub's own client id: tokens the hub issued itself.
HUB_CLIENT = "jupyterhub"


class OAuthError(ApplianceError):
    """An OAuth error (RFC 6749 §4.1.2.1, §5.2): its code (`error`), a description and the
    status; the JSON answer carries both as RFC 6749 names them (app.error_response).

    redirect: whether the client may be told through its redirect URI (the client and its URI
    were verified); otherwise the user gets an error page from the hub.
    """

    def __init__(self, error: str, description: str, status: int = 400,
                 redirect: bool = False):
        super().__init__(f"OAuth {error}: {description}", user_message=description)
        self.error = error
        self.description = description
        self.status = status
        self.redirect = redirect


@dataclass(frozen=True)
class Client:
    """One registered OAuth client."""

    client_id: str
    secret_hash: str
    redirect_uri: str
    #: What the consent page and the token list call it ("Server at /user/alice/").
    description: str
    #: The scope a user needs to be let through (access:servers!server=... or
    #: access:services!service=...); every token it gets carries it.
    access_scope: str
    #: The user whose server this is (never asked to confirm), or None for a service.
    owner: str | None = None
    #: What tokens it gets may do beyond identifying their user (JupyterHub's
    #: oauth_client_allowed_scopes).
    allowed_scopes: frozenset[str] = frozenset()
    #: Skip the confirmation page (JupyterHub's Service.oauth_no_confirm).
    no_confirm: bool = False


@dataclass(frozen=True)
class Grant:
    """What an authorization code stands for, once redeemed."""

    client_id: str
    user: str
    scopes: frozenset[str]
    redirect_uri: str
    #: The hash of the hub session that authorized it ('' if none): logging out revokes the
    #: tokens issued for it, as JupyterHub does.
    session: str
    code_challenge: str = ""
    code_challenge_method: str = ""
    expires: float = 0.0


class Clients:
    """The registry of OAuth clients and their pending authorization codes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clients: dict[str, Client] = {}
        self._codes: dict[str, Grant] = {}
        self._clock = clock

    def register_client(self, client_id: str, secret: str, redirect_uri: str,
                        description: str, *, service: str | None = None,
                        server: tuple[str, str] | None = None,
                        allowed_scopes: Iterable[str] = (), no_confirm: bool = False) -> Client:
        """Add (or replace) a client. secret is its API token (only its hash is kept).

        A service's name is `service` or else what follows "service-" in client_id; a
        server's client gives server=(user, server name) instead.
        """
        if not secret:
            raise ValueError(f"OAuth client {client_id} needs a secret")
        check_redirect_uri(redirect_uri)
        if server is not None:
            access, owner = server_access_scope(*server), server[0]
        else:
            name = service or client_id.removeprefix("service-")
            access, owner = service_access_scope(name), None
        scopes.check_exist(allowed_scopes, f"OAuth client {client_id}")
        client = Client(client_id, hash_secret(secret), redirect_uri, description, access,
                        owner, frozenset(allowed_scopes), no_confirm)
        self._clients[client_id] = client
        return client

    def unregister(self, client_id: str) -> None:
        """Forget a client and its pending codes (a stopped server's, a removed service's)."""
        self._clients.pop(client_id, None)
        for key, grant in list(self._codes.items()):
            if grant.client_id == client_id:
                del self._codes[key]

    def get(self, client_id: str) -> Client | None:
        """A registered client, or None."""
        return self._clients.get(client_id)

    def description(self, client_id: str) -> str:
        """What a token's oauth_client is called: the client's description, JupyterHub for
        the hub's own tokens, the id for a client no longer registered."""
        if not client_id or client_id == HUB_CLIENT:
            return "JupyterHub"
        client = self._clients.get(client_id)
        return client.description if client else client_id

    def authenticate(self, client_id: str, secret: str) -> Client:
        """The client, if secret is its secret; OAuthError invalid_client (401) otherwise."""
        client = self._clients.get(client_id)
        if client is None or not secret or not hmac.compare_digest(
                client.secret_hash, hash_secret(secret)):
            raise OAuthError("invalid_client", "Client authentication failed.", 401)
        return client

    def issue_code(self, client: Client, user: str, granted: frozenset[str],
                   session: str = "", code_challenge: str = "",
                   code_challenge_method: str = "") -> str:
        """A new single-use code for user's authorization of client, valid CODE_SECONDS."""
        now = self._clock()
        if len(self._codes) >= MAX_CODES:
            self._purge(now)
        if len(self._codes) >= MAX_CODES:
            raise OAuthError("temporarily_unavailable", "Too many logins at once; try again.",
                             503)
        code = secrets.token_urlsafe(32)
        self._codes[hash_secret(code)] = Grant(
            client.client_id, user, granted, client.redirect_uri, session, code_challenge,
            code_challenge_method, now + CODE_SECONDS)
        return code

    def redeem(self, client: Client, code: str, redirect_uri: str,
               code_verifier: str = "") -> Grant:
        """The grant of a code presented by its (authenticated) client: used up at once,
        whatever follows; OAuthError invalid_grant if unknown, expired, another client's, or
        the redirect URI or PKCE verifier does not match."""
        grant = self._codes.pop(hash_secret(code), None) if code else None
        if grant is None or grant.expires <= self._clock():
            raise OAuthError("invalid_grant", "The authorization code is invalid or expired.")
        if grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "The authorization code was issued to another "
                                              "client.")
        if redirect_uri and redirect_uri != grant.redirect_uri:
            raise OAuthError("invalid_grant", "Mismatching redirect URI.")
        check_pkce(grant, code_verifier)
        return grant

    def _purge(self, now: float) -> None:
        for key, grant in list(self._codes.items()):
            if grant.expires <= now:
                del self._codes[key]


def check_redirect_uri(uri: str) -> None:
    """ValueError unless uri is a local path or an absolute http(s) URL without a fragment
    (RFC 6749 §3.1.2; JupyterHub allows relative ones for its own servers and services)."""
    parts = urlsplit(uri)
    local = uri.startswith("/") and not uri.startswith("//") and not parts.netloc
    remote = parts.scheme in ("http", "https") and bool(parts.netloc)
    if not (local or remote) or parts.fragment or "\\" in uri:
        raise ValueError(f"not a usable OAuth redirect URI: {uri!r}")


def redirect_target(client: Client, redirect_uri: str | None) -> str:
    """The redirect URI of an authorization request: the client's own, which a given one must
    equal exactly (JupyterHub's validate_redirect_uri); OAuthError (shown by the hub, never
    redirected) otherwise."""
    if redirect_uri and redirect_uri != client.redirect_uri:
        raise OAuthError("invalid_request", f"Mismatching redirect URI for {client.client_id}.")
    return client.redirect_uri


def with_query(uri: str, params: dict[str, str]) -> str:
    """uri with params added to its query (RFC 6749 §4.1.2: the code and state). A state
    byte that is not UTF-8 (aiohttp hands it over as a lone surrogate) goes back as it came."""
    parts = urlsplit(uri)
    query = "&".join(filter(None, [parts.query, urlencode(params, errors="surrogateescape")]))
    return urlunsplit(parts._replace(query=query))


def pkce_challenge(verifier: str, method: str) -> str:
    """The code challenge of a verifier (RFC 7636 §4.2)."""
    if method == "plain":
        return verifier
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def check_pkce_request(challenge: str, method: str) -> tuple[str, str]:
    """The (challenge, method) of an authorization request: S256 or plain, plain by default
    (RFC 7636 §4.3); OAuthError invalid_request for another method."""
    if not challenge:
        return "", ""
    method = method or "plain"
    if method not in ("S256", "plain"):
        raise OAuthError("invalid_request", "Transform algorithm not supported.",
                         redirect=True)
    return challenge, method


def check_pkce(grant: Grant, verifier: str) -> None:
    """A code issued with a challenge needs the verifier that matches it (RFC 7636 §4.6)."""
    if not grant.code_challenge:
        return
    if not verifier:
        raise OAuthError("invalid_request", "Code verifier required.")
    expected = pkce_challenge(verifier, grant.code_challenge_method)
    if not hmac.compare_digest(expected, grant.code_challenge):
        raise OAuthError("invalid_grant", "Code verifier is invalid.")


def requested_scopes(scope_param: str, roles: dict[str, tuple[str, ...]]) -> set[str]:
    """The raw scopes of a `scope` parameter (space-separated, RFC 6749 §3.3): JupyterHub's
    deprecated `identify` dropped, role names (JupyterHub 2's form) turned into their scopes;
    OAuthError invalid_scope for a name that is neither."""
    wanted = set(scope_param.split()) - {"identify"}
    try:
        scopes.check_exist(wanted)
        return wanted
    except scopes.ScopeNotFound:
        if not wanted <= roles.keys():
            raise OAuthError("invalid_scope", f"No such scopes: {' '.join(sorted(wanted))}",
                             redirect=True) from None
    return {s for role in wanted for s in roles[role]}


def resolve_scopes(requested: set[str], client: Client, user: str, held: frozenset[str],
                   groups_of: scopes.GroupsOf) -> frozenset[str]:
    """The scopes a token for user from client gets (JupyterHub's validate_scopes and
    _resolve_requested_scopes): always user's identity and access to the client; what was
    asked must be within what the client may have (else OAuthError invalid_scope); of that,
    what user holds (held: their expanded scopes). Filters come out resolved for user and the
    client's server. "inherit" stays as it is (the token then does what its user does)."""
    server = client.access_scope.partition("!server=")[2] or None
    required = scopes.identify_scopes(user) | {client.access_scope}
    allowed = scopes.expand(set(client.allowed_scopes) - {"inherit"}, owner=user,
                            server=server) | required
    inherit = "inherit" in requested
    if inherit and "inherit" not in client.allowed_scopes:
        raise OAuthError("invalid_scope", f"Scope 'inherit' is not allowed for "
                                          f"{client.client_id}.", redirect=True)
    wanted = scopes.expand(requested - {"inherit"}, owner=user, server=server)
    if wanted - scopes.intersect(wanted, allowed, groups_of):
        excess = wanted - scopes.intersect(wanted, allowed, groups_of)
        raise OAuthError("invalid_scope", f"Scope(s) not allowed for {client.client_id}: "
                                          f"{', '.join(sorted(excess))}", redirect=True)
    granted = scopes.intersect(wanted | required, held | required, groups_of)
    return granted | ({"inherit"} if inherit else frozenset())


def needs_confirmation(client: Client, user: str, granted: frozenset[str],
                       authorized_before: Iterable[frozenset[str]]) -> bool:
    """JupyterHub's needs_oauth_confirm: no page for the user's own server, for a client
    configured without it, or when a token user holds from this client already covers what
    is asked; a page otherwise."""
    if client.owner == user or client.no_confirm:
        return False
    before: set[str] = set()
    for held in authorized_before:
        before |= held
    return not (before and granted <= before)


def describe(granted: frozenset[str], client: Client, user: str) -> list[dict[str, str]]:
    """What the confirmation page lists (JupyterHub's describe_raw_scopes): each scope beyond
    identifying the user and opening the client itself, its filter in words; or, when that is
    all, JupyterHub's sentence for it."""
    required = scopes.identify_scopes(user) | {client.access_scope}
    out = []
    for scope in sorted(granted - required):
        name, _, filter_ = scope.partition("!")
        kind, _, value = filter_.partition("=")
        words = "" if not filter_ else "only you" if (kind, value) == ("user", user) \
            else f"{kind}: {value}"
        out.append({"scope": scope, "description": scopes.SCOPES[name][0], "filter": words})
    return out or [{"scope": "", "description": scopes.SCOPES["(no_scope)"][0], "filter": ""}]
