"""The hub as JupyterHub's OAuth provider (apihandlers/auth.py): the authorization endpoint,
which a browser opens, and the token endpoint, which a server or service calls with a code.

The authorization-code flow of RFC 6749 §4.1 with PKCE (RFC 7636), with JupyterHub's rules:
the client and its redirect URI must be registered (oauth.py); the user must be allowed to
open the server or service (access:servers, access:services); the token gets the scopes asked
for as far as the client may have them and the user holds them, always with the user's
identity and access to the client; no confirmation page for the user's own server, a client
configured without one, or scopes the user granted the client before. Tokens are API tokens
in the store (hashed), valid as long as a hub session, revoked at logout of the session they
were issued in.
"""

import base64
import binascii
import logging
from urllib.parse import unquote_plus

from aiohttp import web

from appliance import oauth, scopes
from appliance.errors import BadRequest, Forbidden, NotFound
from appliance.identity import SESSION_COOKIE, Identity, get_cookie
from appliance.oauth import Client, OAuthError
from appliance.pages import checked_form, current, render
from appliance.store import hash_secret

log = logging.getLogger(__name__)


def setup(app: web.Application) -> None:
    """Register the OAuth routes."""
    r = app.router
    r.add_get(oauth.AUTHORIZE_PATH, authorize_page)
    r.add_post(oauth.AUTHORIZE_PATH, authorize_submit)
    r.add_post(oauth.TOKEN_PATH, token)


async def authorize_page(request: web.Request) -> web.StreamResponse:
    """GET /hub/api/oauth2/authorize: log in first; then the code at once, or the
    confirmation page."""
    identity = await current(request)
    client, granted = await _checked(request, identity)
    before = await request.app["store"].client_scopes(identity.name, client.client_id)
    if not oauth.needs_confirmation(client, identity.name, granted, before):
        return _issue(request, identity, client, granted)
    log.info("user=%r asked to authorize %s for %s", identity.name, client.client_id,
             " ".join(sorted(granted)))
    return render(request, "oauth.html", client=client.description,
                  descriptions=oauth.describe(granted, client, identity.name),
                  action=request.raw_path)


async def authorize_submit(request: web.Request) -> web.StreamResponse:
    """POST /hub/api/oauth2/authorize: the user pressed Authorize; every check again."""
    identity = await current(request)
    await checked_form(request)
    client, granted = await _checked(request, identity)
    log.info("user=%r authorized %s", identity.name, client.client_id)
    return _issue(request, identity, client, granted)


async def _checked(request: web.Request, identity: Identity) -> tuple[Client, frozenset[str]]:
    """The client of a valid authorization request that identity may use, and the scopes its
    token would get; an error page, or an error sent to the client, otherwise."""
    query = request.query
    client = request.app["oauth_clients"].get(query.get("client_id", ""))
    if client is None:
        raise BadRequest(f"unknown OAuth client {query.get('client_id', '')!r}",
                         user_message="This login link names an application the hub does "
                                      "not know (it may have stopped). Go back and try again.")
    redirect_uri = oauth.redirect_target(client, query.get("redirect_uri"))
    try:
        _check_response_type(query.get("response_type", ""))
        oauth.check_pkce_request(query.get("code_challenge", ""),
                                 query.get("code_challenge_method", ""))
        _check_access(request, identity, client)
        identities = request.app["identities"]
        requested = oauth.requested_scopes(query.get("scope", ""),
                                           dict(identities.roles.definitions))
        granted = oauth.resolve_scopes(requested, client, identity.name, identity.scopes,
                                       request.app["groups"].of_user)
    except OAuthError as e:
        if not e.redirect:
            raise
        log.warning("user=%r OAuth request of %s refused: %s", identity.name,
                    client.client_id, e)
        params = {"error": e.error, "error_description": e.description}
        if "state" in query:
            params["state"] = query["state"]
        raise web.HTTPFound(oauth.with_query(redirect_uri, params)) from None
    return client, granted


def _check_response_type(response_type: str) -> None:
    """Only the authorization-code flow (RFC 6749 §4.1.1)."""
    if not response_type:
        raise OAuthError("invalid_request", "Missing response_type parameter.", redirect=True)
    if response_type != "code":
        raise OAuthError("unsupported_response_type", f"Unsupported response_type "
                         f"{response_type!r}.", redirect=True)


def _check_access(request: web.Request, identity: Identity, client: Client) -> None:
    """Forbidden unless identity may open the server or service behind client (JupyterHub:
    "You do not have permission to access ...")."""
    base, _, filter_ = client.access_scope.partition("!")
    kind, _, value = filter_.partition("=")
    if not scopes.allows(identity.parsed, base, kind, value, request.app["groups"].of_user):
        raise Forbidden(f"{identity.name} may not open {client.client_id} ({base} on "
                        f"{kind}={value})", user_message="You do not have permission to "
                                                         f"access {client.description}.")


def _issue(request: web.Request, identity: Identity, client: Client,
           granted: frozenset[str]) -> web.StreamResponse:
    """Redirect the browser to the client with a new code (and its state, RFC 6749 §4.1.2)."""
    query = request.query
    session = get_cookie(request, SESSION_COOKIE) if identity.via == "cookie" else None
    challenge, method = oauth.check_pkce_request(query.get("code_challenge", ""),
                                                 query.get("code_challenge_method", ""))
    code = request.app["oauth_clients"].issue_code(
        client, identity.name, granted, hash_secret(session) if session else "", challenge,
        method)
    params = {"code": code}
    if "state" in query:
        params["state"] = query["state"]
    raise web.HTTPFound(oauth.with_query(client.redirect_uri, params))


async def token(request: web.Request) -> web.Response:
    """POST /hub/api/oauth2/token: an authenticated client's code for an API token
    (RFC 6749 §4.1.3-4.1.4)."""
    form = await request.post()
    client_id, secret = _client_credentials(request, form)
    clients = request.app["oauth_clients"]
    client = clients.authenticate(client_id, secret)
    if form.get("grant_type") != "authorization_code":
        raise OAuthError("unsupported_grant_type", "Only grant_type=authorization_code is "
                                                   "supported.")
    grant = clients.redeem(client, str(form.get("code", "")),
                           str(form.get("redirect_uri", "")),
                           str(form.get("code_verifier", "")))
    try:  # the user may have been locked or removed since they authorized
        await request.app["identities"].owner_scopes(grant.user)
    except NotFound:
        raise OAuthError("invalid_grant", "The user may no longer log in.") from None
    if grant.session and not await request.app["store"].session_live(grant.session):
        # Logged out meanwhile: a token bound to that session would outlive the logout.
        raise OAuthError("invalid_grant", "The login that authorized this has ended.")
    lifetime = request.app["config"].hub.session_max_age
    secret, record = await request.app["store"].issue_token(
        grant.user, "", lifetime, tuple(sorted(grant.scopes)), client=client.client_id,
        session=grant.session)
    log.info("user=%r OAuth token a%d issued to %s", grant.user, record.id, client.client_id)
    response = web.json_response({"access_token": secret, "token_type": "Bearer",
                                  "expires_in": int(lifetime),
                                  "scope": " ".join(sorted(grant.scopes))})
    # RFC 6749 §5.1: a response with a token is never cached.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _client_credentials(request: web.Request, form) -> tuple[str, str]:
    """client_id and client_secret from the form or HTTP Basic (RFC 6749 §2.3.1, where both
    are form-encoded first)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthError("invalid_client", "Malformed HTTP Basic credentials.",
                             401) from None
        client_id, _, secret = decoded.partition(":")
        return unquote_plus(client_id), unquote_plus(secret)
    return str(form.get("client_id", "")), str(form.get("client_secret", ""))
