"""The tokens resource: a user's API tokens, listed, issued, shown and revoked
(JupyterHub's /users/<name>/tokens[/<id>]); the secret is shown once, in the answer to
the POST, and only its hash is stored.

Reading needs read:tokens on the user, issuing and revoking tokens; issuing one for
someone else also needs access:servers on their server (an admin's comes with
auth.admin_access: the token would open it). A new token has the scopes asked for (by default
"inherit": everything its owner may do), each of which the owner must hold.
"""

import math
import re
import time

from aiohttp import web

from appliance import access, scopes
from appliance.api.base import authorize_user, isoformat, json_object, require_identity
from appliance.api.users import user_record
from appliance.errors import BadRequest, Forbidden, NotFound
from appliance.store import TokenRecord

#: The longest note a token may carry (characters); said in the error.
NOTE_MAX = 1000
#: The longest lifetime accepted (seconds): ten years; beyond it a date cannot be shown.
EXPIRES_IN_MAX = 10 * 365 * 86400
#: JupyterHub's API token ids are "a" and the database id.
_TOKEN_ID = re.compile(r"a([1-9][0-9]{0,17})")
_EXAMPLE = '{"note": "for my script", "expires_in": 86400}'


def setup(app: web.Application) -> None:
    """Register the token routes."""
    r = app.router
    r.add_get("/hub/api/users/{name}/tokens", list_tokens)
    r.add_post("/hub/api/users/{name}/tokens", create_token)
    r.add_get("/hub/api/users/{name}/tokens/{token_id}", get_token)
    r.add_delete("/hub/api/users/{name}/tokens/{token_id}", delete_token)


def token_model(token: TokenRecord, oauth_client: str = "JupyterHub") -> dict:
    """JupyterHub's token model (its apihandlers' token_model); oauth_client: what the
    client it was issued to is called (JupyterHub for the hub's own)."""
    return {
        "id": f"a{token.id}", "kind": "api_token", "user": token.user,
        "roles": [],  # JupyterHub keeps this deprecated field, always empty
        "scopes": list(token.scopes), "note": token.note,
        "created": isoformat(token.created), "last_activity": isoformat(token.last_used),
        "expires_at": isoformat(token.expires), "session_id": None,
        "oauth_client": oauth_client,
    }


def model(request: web.Request, token: TokenRecord) -> dict:
    """token_model with its OAuth client's description ("Server at /user/alice/")."""
    return token_model(token, request.app["oauth_clients"].description(token.client))


def check_note(note) -> str:
    """A token's note: text of at most NOTE_MAX characters ("" when absent)."""
    if note is None:
        return ""
    if not isinstance(note, str):
        raise BadRequest("note is not a string", user_message="The note must be text.")
    if len(note) > NOTE_MAX:
        raise BadRequest(f"note of {len(note)} characters", user_message=f"The note is "
                         f"{len(note)} characters long; at most {NOTE_MAX} are allowed.")
    return note


def check_expires_in(value) -> float | None:
    """A lifetime in seconds, or None for a token that never expires (null or 0, as
    JupyterHub takes them); anything but a positive number up to EXPIRES_IN_MAX is refused."""
    if value is None or (type(value) in (int, float) and value == 0):
        return None
    if (type(value) not in (int, float) or not math.isfinite(value) or value < 0
            or value > EXPIRES_IN_MAX):
        raise BadRequest(f"expires_in {value!r}", user_message="expires_in must be a "
                         f"positive number of seconds, at most {EXPIRES_IN_MAX} (ten years); "
                         "leave it out, or send null or 0, for a token that never expires.")
    return float(value)


def asked_scopes(body: dict, definitions: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The raw scopes a new token asks for: its scopes and its roles' (JupyterHub still
    takes roles), "inherit" when it names neither; 400 in JupyterHub's words otherwise."""
    for key in ("roles", "scopes"):
        value = body.get(key)
        if value is not None and (not isinstance(value, list)
                                  or not all(isinstance(item, str) for item in value)):
            raise BadRequest(f"token {key} {value!r}", user_message=f"token {key} must be null "
                             f"or a list of strings, not {value!r}")
    wanted = list(body.get("scopes") or [])
    for role in body.get("roles") or []:
        if role not in definitions:
            raise BadRequest(f"no role {role!r}", user_message=f"Role {role} does not exist")
        wanted += definitions[role]
    try:
        scopes.check_exist(wanted)
    except scopes.ScopeNotFound as e:
        raise BadRequest(str(e), user_message=" ".join(str(e).split())) from None
    return tuple(dict.fromkeys(wanted)) or ("inherit",)


async def list_tokens(request: web.Request) -> web.Response:
    """GET /hub/api/users/{name}/tokens: the user's tokens, JupyterHub's shape."""
    _, name = await authorize_user(request, "read:tokens")
    await user_record(request, name)
    tokens = await request.app["store"].list_tokens(name)
    now = time.time()
    # JupyterHub 5 lists every token under api_tokens (its oauth_tokens list is gone), and
    # leaves expired ones out (the token page still shows them ending, in words).
    return web.json_response({"api_tokens": [model(request, t) for t in tokens
                                             if t.expires is None or t.expires > now]})


async def create_token(request: web.Request) -> web.Response:
    """POST /hub/api/users/{name}/tokens: 201 with the token model and, this once, the
    token itself."""
    identity = await require_identity(request)
    name = request.match_info["name"]
    if not access.allows(identity, "tokens", user=name,
                         groups_of=request.app["groups"].of_user):
        raise Forbidden(f"{identity.name} lacks tokens on {name}", user_message=f"User {name} "
                        "not found or no permissions to generate tokens")
    if not identity.is_user(name):
        access.check_open(identity, name, request.app["config"].auth.admin_access)
    await user_record(request, name)
    body = await json_object(request, "the body", _EXAMPLE)
    identities = request.app["identities"]
    wanted = asked_scopes(body, identities.roles.definitions)
    note, expires_in = check_note(body.get("note")), check_expires_in(body.get("expires_in"))
    excess = identities.roles.excess(name, await identities.owner_scopes(name), wanted)
    if excess:  # JupyterHub's words (scopes._check_token_scopes), and its 400
        raise BadRequest(f"token scopes beyond {name}'s", user_message="Not assigning "
                         f"requested scopes {','.join(sorted(excess))} not held by User {name}")
    secret, token = await request.app["store"].issue_token(name, note, expires_in, wanted)
    return web.json_response({**model(request, token), "token": secret}, status=201)


def parse_token_id(text: str) -> int | None:
    """The store's id in a JupyterHub token id ("a12" -> 12), or None for anything else."""
    match = _TOKEN_ID.fullmatch(text)
    return int(match[1]) if match else None


async def token_in_url(request: web.Request) -> tuple[str, int]:
    """The user and the token id in the URL; a token that is not theirs is NotFound, as
    one that does not exist (its existence is not revealed)."""
    _, name = await authorize_user(request,
                                   "read:tokens" if request.method == "GET" else "tokens")
    token_id = parse_token_id(request.match_info["token_id"])
    if token_id is None:
        raise _no_token(name, request.match_info["token_id"])
    return name, token_id


def _no_token(name: str, token_id) -> NotFound:
    return NotFound(f"{name} has no token {token_id!r}",
                    user_message=f"{name} has no token {token_id}.")


async def get_token(request: web.Request) -> web.Response:
    """GET /hub/api/users/{name}/tokens/{token_id}: one token's model."""
    name, token_id = await token_in_url(request)
    token = await request.app["store"].get_token(name, token_id)
    if token is None:
        raise _no_token(name, f"a{token_id}")
    return web.json_response(model(request, token))


async def delete_token(request: web.Request) -> web.Response:
    """DELETE /hub/api/users/{name}/tokens/{token_id}: 204; refused from the next request
    on."""
    name, token_id = await token_in_url(request)
    if not await request.app["identities"].revoke_token(name, token_id):
        raise _no_token(name, f"a{token_id}")
    return web.Response(status=204)
