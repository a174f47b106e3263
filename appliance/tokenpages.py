"""The token page (/hub/token, as in JupyterHub's control panel): a logged-in user requests
an API token with a note and an expiry, sees it once, lists their tokens and revokes any.

Server-side forms only; every POST carries the CSRF token. The API's rules apply
(api/tokens.py: the note's limit, hashed storage, revocation that takes effect at once).
"""

import time

from aiohttp import web

from appliance.api.tokens import check_note, parse_token_id, token_model
from appliance.errors import BadRequest
from appliance.pages import checked_form, current, render
from appliance.store import TokenRecord

#: The expiry choices the form offers, in order: value, label, lifetime in seconds.
EXPIRY_CHOICES = (("never", "Never", None), ("1h", "1 hour", 3600), ("1d", "1 day", 86400),
                  ("1w", "1 week", 7 * 86400), ("30d", "30 days", 30 * 86400))


def setup(app: web.Application) -> None:
    """Register the token page's routes."""
    r = app.router
    r.add_get("/hub/token", token_page)
    r.add_post("/hub/token", token_submit)
    r.add_post("/hub/token/revoke", revoke_submit)


def when(ts: float | None, never: str) -> str:
    """A time as the page shows it (UTC, which the page says, to the minute), or the word
    for none."""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) if ts else never


def row(token: TokenRecord, now: float, client: str = "") -> dict:
    """What the list shows of one token (one issued to an OAuth client without a note: for
    whom, as client describes it); an expired one says so in words."""
    expired = token.expires is not None and token.expires <= now
    note = token.note or (f"OAuth login to {client}" if token.client else "")
    return {"id": token_model(token)["id"], "note": note,
            "created": when(token.created, "-"), "last_used": when(token.last_used, "never"),
            "expires": "expired" if expired else when(token.expires, "never"),
            "expired": expired}


def lifetime(choice: str) -> float | None:
    """The seconds an expiry choice stands for (None: never); BadRequest for another value."""
    for value, _, seconds in EXPIRY_CHOICES:
        if value == choice:
            return seconds
    raise BadRequest(f"expiry choice {choice!r}", user_message="Choose when the token "
                     "expires from the list.")


async def show(request: web.Request, status: int = 200, **context) -> web.Response:
    """The page for the logged-in user, with their tokens and whatever context says."""
    identity = request["identity"]
    tokens = await request.app["store"].list_tokens(identity.name)
    clients, now = request.app["oauth_clients"], time.time()
    context = {"new_token": None, "new_note": "", "message": "", "error": "", "note": "",
               "expiry": "never", **context}
    return render(request, "token.html", status=status, choices=EXPIRY_CHOICES,
                  tokens=[row(t, now, clients.description(t.client)) for t in tokens],
                  **context)


async def token_page(request: web.Request) -> web.Response:
    """GET /hub/token: the form and the user's tokens."""
    await current(request)
    return await show(request)


async def token_submit(request: web.Request) -> web.Response:
    """POST /hub/token: issue a token and show it, this once; a bad note or expiry shows
    the form again with the reason."""
    identity = await current(request)
    form = await checked_form(request)
    note, expiry = str(form.get("note", "")), str(form.get("expiry", ""))
    try:
        token = await request.app["store"].issue_token(
            identity.name, check_note(note.strip()), lifetime(expiry))
    except BadRequest as e:
        return await show(request, status=400, error=e.user_message, note=note, expiry=expiry)
    secret, record = token
    return await show(request, new_token=secret, new_note=record.note)


async def revoke_submit(request: web.Request) -> web.Response:
    """POST /hub/token/revoke: revoke one of the user's tokens and say so."""
    identity = await current(request)
    form = await checked_form(request)
    token = await own_token(request, identity.name, str(form.get("id", "")))
    if token is None or not await request.app["identities"].revoke_token(identity.name,
                                                                           token.id):
        return await show(request, status=404, message="There is no such token; it may "
                          "have been revoked already.")
    label = f"“{token.note}”" if token.note else token_model(token)["id"]
    return await show(request, message=f"Revoked the token {label}: it no longer works.")


async def own_token(request: web.Request, user: str, token_id: str) -> TokenRecord | None:
    """user's token with this (JupyterHub-style) id, or None."""
    number = parse_token_id(token_id)
    return None if number is None else await request.app["store"].get_token(user, number)
